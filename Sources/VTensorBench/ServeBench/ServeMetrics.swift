/// Mean, median, standard deviation and chosen percentiles of a latency, in milliseconds.
struct LatencySummary: Sendable, Equatable {
    var mean = 0.0, median = 0.0, std = 0.0
    var percentiles: [Percentile] = []

    struct Percentile: Sendable, Equatable {
        var p: Double
        var value: Double
    }

    /// From values in seconds. numpy's defaults: linear interpolation between ranks, the
    /// population standard deviation; all zeros when there are no values (as vLLM reports).
    init(seconds values: [Double], percentiles ps: [Double]) {
        guard !values.isEmpty else {
            percentiles = ps.map { Percentile(p: $0, value: 0) }
            return
        }
        let sorted = values.sorted()
        let n = Double(sorted.count)
        mean = sorted.reduce(0, +) / n * 1000
        std = (sorted.reduce(0) { $0 + ($1 * 1000 - mean) * ($1 * 1000 - mean) } / n).squareRoot()
        median = Self.percentile(sorted, 50) * 1000
        percentiles = ps.map { Percentile(p: $0, value: Self.percentile(sorted, $0) * 1000) }
    }

    init() {}

    static func percentile(_ sorted: [Double], _ p: Double) -> Double {
        let rank = p / 100 * Double(sorted.count - 1)
        let low = Int(rank.rounded(.down)), high = Int(rank.rounded(.up))
        return sorted[low] + (sorted[high] - sorted[low]) * (rank - Double(low))
    }
}

/// Service-level objectives for goodput, in milliseconds (`--goodput ttft:200 tpot:50`).
struct GoodputTargets: Sendable, Equatable {
    var ttft: Double?
    var tpot: Double?
    var e2el: Double?

    var isEmpty: Bool { ttft == nil && tpot == nil && e2el == nil }

    init() {}

    /// Parses "name:milliseconds" pairs (names ttft, tpot, e2el), as `vllm bench serve` does.
    init(_ pairs: [String]) throws(RequestFailure) {
        for pair in pairs {
            let parts = pair.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let value = Double(parts[1]), value >= 0, value.isFinite else {
                throw RequestFailure(reason: "--goodput", detail: "--goodput takes NAME:MILLISECONDS pairs (e.g. ttft:200 tpot:50), got \"\(pair)\"")
            }
            switch parts[0] {
            case "ttft": ttft = value
            case "tpot": tpot = value
            case "e2el": e2el = value
            default: throw RequestFailure(reason: "--goodput", detail: "--goodput: unknown metric \"\(parts[0])\" (ttft, tpot or e2el)")
            }
        }
    }

    /// Whether a completed request met every objective; a request of one token has TPOT 0.
    func met(ttft: Double, tpot: Double, e2el: Double) -> Bool {
        (self.ttft.map { ttft * 1000 <= $0 } ?? true) && (self.tpot.map { tpot * 1000 <= $0 } ?? true)
            && (self.e2el.map { e2el * 1000 <= $0 } ?? true)
    }

    var description: String {
        [ttft.map { "ttft <= \($0) ms" }, tpot.map { "tpot <= \($0) ms" }, e2el.map { "e2el <= \($0) ms" }].compactMap { $0 }.joined(separator: ", ")
    }
}

/// A run's figures, computed the way `vllm bench serve` computes them: throughput over the
/// run's duration from completed requests only; TPOT per request is (e2e - TTFT) /
/// (output tokens - 1) for requests of more than one token; ITL pools every gap.
struct ServeMetrics: Sendable {
    var completed = 0, failed = 0
    var totalInput = 0, totalOutput = 0
    var duration = 0.0
    var requestThroughput = 0.0, outputThroughput = 0.0, totalTokenThroughput = 0.0
    /// Completed requests a second that met the goodput objectives (nil without objectives).
    var requestGoodput: Double?
    var ttft = LatencySummary(), tpot = LatencySummary(), itl = LatencySummary(), e2el = LatencySummary()
    /// Failure reasons, most frequent first, each with its count and one message.
    var failures: [(reason: String, count: Int, example: String)] = []
    /// How many completed requests had their output tokens counted from each source.
    var outputSources: [OutputTokenSource: Int] = [:]
    /// The most output tokens in one wall-clock second, and the most requests under way at once.
    var maxOutputTokensPerSecond = 0.0
    var maxConcurrentRequests = 0
    /// Completed requests whose stream ended after its finish chunk without `[DONE]`.
    var endedWithoutDone = 0
    /// Completed requests whose generated ids came back (`return_token_ids`: multi-turn in token-id form).
    var withTokenIds = 0
    /// Multi-turn: time to first token of the conversations' first rounds and of the rounds after
    /// (which a prefix cache serves from the conversation so far); nil for other workloads.
    var ttftFirstRound: LatencySummary?, ttftLaterRounds: LatencySummary?

    init(records: [RequestRecord], duration: Double, percentiles: [Double], goodput: GoodputTargets) {
        self.duration = duration
        var ttfts: [Double] = [], tpots: [Double] = [], itls: [Double] = [], e2els: [Double] = []
        var firstRounds: [Double] = [], laterRounds: [Double] = []
        var good = 0
        var failureGroups: [String: (count: Int, example: String, first: Int)] = [:]
        for (index, record) in records.enumerated() {
            guard let ttft = record.ttft, record.failure == nil else {
                let failure = record.failure ?? RequestFailure(reason: "no token in the stream", detail: "")
                failureGroups[failure.reason, default: (0, failure.detail, index)].count += 1
                failed += 1
                continue
            }
            completed += 1
            if record.endedWithoutDone { endedWithoutDone += 1 }
            if record.tokenIds != nil { withTokenIds += 1 }
            totalInput += record.promptTokens
            totalOutput += record.outputTokens
            outputSources[record.outputSource, default: 0] += 1
            var tpot = 0.0
            if record.outputTokens > 1 {
                tpot = (record.latency - ttft) / Double(record.outputTokens - 1)
                tpots.append(tpot)
            }
            ttfts.append(ttft)
            if let round = record.round { if round == 0 { firstRounds.append(ttft) } else { laterRounds.append(ttft) } }
            itls += record.itls
            e2els.append(record.latency)
            if goodput.met(ttft: ttft, tpot: tpot, e2el: record.latency) { good += 1 }
        }
        failures = failureGroups.map { ($0.key, $0.value.count, $0.value.example) }.sorted { $0.count > $1.count || ($0.count == $1.count && $0.reason < $1.reason) }
        let seconds = max(duration, 1e-9)
        requestThroughput = Double(completed) / seconds
        outputThroughput = Double(totalOutput) / seconds
        totalTokenThroughput = Double(totalInput + totalOutput) / seconds
        requestGoodput = goodput.isEmpty ? nil : Double(good) / seconds
        ttft = LatencySummary(seconds: ttfts, percentiles: percentiles)
        tpot = LatencySummary(seconds: tpots, percentiles: percentiles)
        itl = LatencySummary(seconds: itls, percentiles: percentiles)
        e2el = LatencySummary(seconds: e2els, percentiles: percentiles)
        if records.contains(where: { $0.round != nil }) {
            ttftFirstRound = LatencySummary(seconds: firstRounds, percentiles: percentiles)
            ttftLaterRounds = LatencySummary(seconds: laterRounds, percentiles: percentiles)
        }
        (maxOutputTokensPerSecond, maxConcurrentRequests) = Self.peaks(records.filter(\.succeeded))
    }

    /// vLLM's peaks: output tokens bucketed by the wall-clock second they arrived in, and the
    /// most requests open at once (a sweep over start and end times; an end before a start
    /// at the same instant).
    static func peaks(_ records: [RequestRecord]) -> (tokensPerSecond: Double, concurrent: Int) {
        guard let origin = records.map(\.start).min() else { return (0, 0) }
        var buckets: [Int: Double] = [:]
        var events: [(time: UInt64, delta: Int)] = []
        for record in records {
            guard let ttft = record.ttft else { continue }
            var t = Double(record.start - origin) / 1e9 + ttft
            buckets[Int(t), default: 0] += 1
            for gap in record.itls {
                t += gap
                buckets[Int(t), default: 0] += 1
            }
            events.append((record.start, 1))
            events.append((record.start + UInt64(record.latency * 1e9), -1))
        }
        events.sort { $0.time < $1.time || ($0.time == $1.time && $0.delta < $1.delta) }
        var open = 0, peak = 0
        for event in events {
            open += event.delta
            peak = max(peak, open)
        }
        return (buckets.values.max() ?? 0, peak)
    }
}
