#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A token id with its log probability.
public struct TokenLogprob: Sendable, Equatable, CustomStringConvertible {
    public var id: Int
    public var logprob: Float

    public init(id: Int, logprob: Float) {
        self.id = id
        self.logprob = logprob
    }

    public var description: String { "\(id):\(logprob)" }
}

/// An amount added to one id's logit before sampling (``SamplingParameters/logitBias``, or
/// minus infinity for a stop id held back by ``SamplingParameters/minTokens``).
public struct LogitBias: Sendable, Equatable {
    public var id: Int
    public var value: Float

    public init(id: Int, value: Float) {
        self.id = id
        self.value = value
    }
}

/// What ``Sampler/sample(logits:vocabularyLimit:)`` picked.
///
/// Log probabilities come from the log-softmax of the model's logits *after* the logit bias and
/// the repetition, presence and frequency penalties and *before* temperature, top-k, top-p and
/// min-p. That is the distribution the model (as steered by bias and penalties) assigns, independent of how the
/// draw was shaped, so a token outside the truncated set still has a finite logprob and
/// greedy and sampled requests report comparable numbers. (vLLM reports the raw logits'
/// logprobs by default; OpenAI does not document its choice.) They cost a pass of `exp` over
/// the vocabulary, so they are computed only when ``SamplingParameters/logprobs`` is set.
public struct SampledToken: Sendable, Equatable {
    public var id: Int
    /// The log probability of `id`; nil unless `parameters.logprobs` is set (0 or more).
    public var logprob: Float?
    /// The `parameters.logprobs` most likely ids, most likely first (ties: lower id first),
    /// whether or not they include `id`. Empty when `parameters.logprobs` is nil or 0.
    public var alternatives: [TokenLogprob]

    public init(id: Int, logprob: Float? = nil, alternatives: [TokenLogprob] = []) {
        self.id = id
        self.logprob = logprob
        self.alternatives = alternatives
    }
}

/// Picks each next token of one sequence from the model's logits.
///
/// The steps, in order: logit bias (and, below `minTokens`, the stop ids banned) -> penalties
/// (repetition over prompt and generated ids, then presence and frequency over generated ids)
/// -> temperature -> top-k -> top-p -> min-p -> draw. With a
/// seed, the draws come from ``Xoshiro256StarStar`` and the same logits give the same tokens
/// on every run.
///
/// Nothing sorts the whole vocabulary. Per call at 128k-152k ids: a copy and a maximum; a pass
/// of `exp` for logprobs (only when asked) and one for the sampling weights (shared at
/// temperature 1, skipped when greedy or when top-k leaves few ids); for top-k a threshold
/// scan with quickselect; for top-p the 64 most likely ids first, and when they hold less than
/// p of the mass, one pass that files every id into 1/16-nat buckets so only the bucket where
/// the mass reaches p is sorted. `scripts/bench-sampler.sh` times it (about 35-60 us greedy,
/// 80-130 us for top-k with top-p, 0.2-0.6 ms for top-p alone on one x86-64 core).
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var random: Xoshiro256StarStar
    /// Every id seen in the prompt or generated, for the repetition penalty (kept only with one:
    /// hashing a long prompt's ids costs the engine thread tens of microseconds a request).
    private var seen: Set<Int> = []
    /// How often each id was generated, for the presence and frequency penalties (kept only
    /// with a penalty).
    private var generatedCounts: [Int: Int] = [:]
    private let tracksSeen: Bool
    private let tracksCounts: Bool
    /// Tokens generated so far (for `minTokens`).
    public private(set) var generated = 0
    /// The ids `minTokens` keeps from being drawn early (the sequence's stop ids).
    private let minTokenStops: [Int]
    /// `parameters.logitBias`, in id order.
    private let bias: [LogitBias]
    private var scratch = Scratch()

    /// Buffers kept between calls so sampling does not allocate.
    struct Scratch {
        var logits: [Float] = []
        var weights: [Float] = []
        var selection: [Int32] = []
        var boundary: [Int32] = []
        var buckets: [Double] = []
        var blockSums: [Double] = []
        var bucketOfCandidate: [UInt16] = []
    }

    /// - Parameters:
    ///   - eosTokenIds: the model's end-of-sequence ids: with `stopTokenIds` (and unless
    ///     `ignoreEOS`), the ids that cannot be drawn before `minTokens` tokens are generated.
    /// - Throws: ``SamplingParameterError`` when the parameters are out of range.
    public init(parameters: SamplingParameters, eosTokenIds: [Int] = []) throws {
        try parameters.validate()
        self.parameters = parameters
        tracksSeen = parameters.repetitionPenalty != 1
        tracksCounts = parameters.hasPenalties
        minTokenStops = parameters.minTokens > 0 ? parameters.stopTokens(eosTokenIds: eosTokenIds).sorted() : []
        bias = parameters.logitBias.sorted { $0.key < $1.key }.map { LogitBias(id: $0.key, value: Float($0.value)) }
        if let seed = parameters.seed {
            random = Xoshiro256StarStar(seed: UInt64(bitPattern: Int64(seed)))
        } else {
            random = Xoshiro256StarStar()
        }
    }

    /// Records prompt ids: they count for the repetition penalty only.
    public mutating func acceptPrompt<S: Sequence>(_ tokens: S) where S.Element == Int {
        if tracksSeen { seen.formUnion(tokens) }
    }

    /// Records a generated id: it counts for every penalty from the next call to `sample` on.
    public mutating func accept(_ token: Int) {
        if tracksSeen { seen.insert(token) }
        if tracksCounts { generatedCounts[token, default: 0] += 1 }
        generated += 1
    }

    /// What this step adds to the logits before the penalties, one entry per id: the logit bias,
    /// and minus infinity for the stop ids while fewer than `minTokens` tokens are generated.
    public var biases: [LogitBias] {
        guard generated < parameters.minTokens, !minTokenStops.isEmpty else { return bias }
        var merged = Dictionary(uniqueKeysWithValues: bias.map { ($0.id, $0.value) })
        for id in minTokenStops { merged[id] = -.infinity }
        return merged.sorted { $0.key < $1.key }.map { LogitBias(id: $0.key, value: $0.value) }
    }

    /// How often `token` was generated so far (counted with a penalty only; 0 without one).
    public func generatedCount(of token: Int) -> Int { generatedCounts[token] ?? 0 }

    /// The ids a penalty applies to: with a repetition penalty every id seen in the prompt or
    /// generated so far, else (presence or frequency) every id generated; empty without penalties.
    public var penalizedIds: Set<Int> { tracksSeen ? seen : Set(generatedCounts.keys) }

    /// The next uniform of this sampler's generator (what a draw consumes).
    mutating func nextUnit() -> Double { random.nextUnit() }

    /// Picks the next id; ids at or above `vocabularyLimit` (embedding rows the tokenizer has no
    /// id for) are never picked nor reported. Does not record the pick: call ``accept(_:)``.
    ///
    /// NaN logits count as minus infinity, plus infinity as the largest float. If no id below
    /// the limit has a finite logit, returns id 0 (with logprob minus infinity when asked for).
    /// - Precondition: `vocabularyLimit > 0` and `logits` is not empty.
    public mutating func sample(logits: UnsafeBufferPointer<Float>, vocabularyLimit: Int) -> SampledToken {
        precondition(vocabularyLimit > 0, "vocabularyLimit must be positive")
        let count = min(logits.count, vocabularyLimit)
        precondition(count > 0, "sample needs at least one logit")
        precondition(count <= Int(Int32.max), "vocabulary too large")
        // Move the scratch buffers out of self so the loops below borrow plain locals.
        var scratch = self.scratch
        self.scratch = Scratch()
        defer { self.scratch = scratch }
        if scratch.logits.count != count {
            scratch.logits = [Float](repeating: 0, count: count)
            scratch.weights = [Float](repeating: 0, count: count)
        }
        var work = scratch.logits, weights = scratch.weights
        scratch.logits = []; scratch.weights = []
        defer { scratch.logits = work; scratch.weights = weights }

        return work.withUnsafeMutableBufferPointer { x in
            weights.withUnsafeMutableBufferPointer { w in
                VectorMath.sanitizedCopy(UnsafeBufferPointer(rebasing: logits[0..<count]), into: x)
                applyBiases(x)
                applyPenalties(x)
                let logits = UnsafeBufferPointer(x)
                let (top, maxLogit) = VectorMath.argmax(logits)
                let wantsLogprobs = parameters.logprobs != nil
                guard maxLogit > -.infinity else {
                    return SampledToken(id: 0, logprob: wantsLogprobs ? -.infinity : nil)
                }
                // At temperature 1 the log-softmax terms are the sampling weights: one pass for both.
                let shared = !parameters.isGreedy && parameters.temperature == 1
                var logNormalizer: Float?
                if wantsLogprobs || shared {
                    let sum = VectorMath.expSum(logits, shift: maxLogit, scale: 1, into: shared ? w : nil,
                                                blockSums: &scratch.blockSums)
                    if wantsLogprobs { logNormalizer = maxLogit + Float(log(sum)) }
                }
                var alternatives: [TokenLogprob] = []
                if let n = parameters.logprobs, n > 0, let logNormalizer {
                    Self.selectTop(Swift.min(n, count), of: logits, into: &scratch.selection)
                    Self.sortDescending(&scratch.selection, by: logits)
                    alternatives = scratch.selection.map {
                        TokenLogprob(id: Int($0), logprob: logits[Int($0)] - logNormalizer)
                    }
                }
                let id = parameters.isGreedy
                    ? top
                    : draw(logits, max: maxLogit, weights: w, weightsReady: shared, scratch: &scratch)
                return SampledToken(id: id, logprob: logNormalizer.map { logits[id] - $0 }, alternatives: alternatives)
            }
        }
    }

    /// `sample` over an array; `vocabularyLimit` defaults to the whole array.
    public mutating func sample(logits: [Float], vocabularyLimit: Int? = nil) -> SampledToken {
        logits.withUnsafeBufferPointer { sample(logits: $0, vocabularyLimit: vocabularyLimit ?? logits.count) }
    }

    /// The biased and penalized logits for `logits` (ids below `vocabularyLimit`), as `sample`
    /// sees them before temperature. For tests and debugging.
    public func penalized(_ logits: [Float], vocabularyLimit: Int? = nil) -> [Float] {
        var x = Array(logits.prefix(vocabularyLimit ?? logits.count))
        x.withUnsafeMutableBufferPointer { applyBiases($0); applyPenalties($0) }
        return x
    }

    // MARK: - Steps

    private func applyBiases(_ x: UnsafeMutableBufferPointer<Float>) {
        for entry in bias where entry.id < x.count { x[entry.id] += entry.value }
        if generated < parameters.minTokens {
            for id in minTokenStops where id >= 0 && id < x.count { x[id] = -.infinity }
        }
    }

    private func applyPenalties(_ x: UnsafeMutableBufferPointer<Float>) {
        let repetition = Float(parameters.repetitionPenalty)
        if repetition != 1 {
            for id in seen where id >= 0 && id < x.count {
                let v = x[id]
                x[id] = v < 0 ? v * repetition : v / repetition
            }
        }
        let presence = parameters.presencePenalty, frequency = parameters.frequencyPenalty
        if presence != 0 || frequency != 0 {
            for (id, n) in generatedCounts where id >= 0 && id < x.count && n > 0 {
                x[id] -= Float(presence + frequency * Double(n))
            }
        }
    }

    /// Temperature, top-k, top-p, min-p, then one draw. `w` is scratch of the logits' size, indexed
    /// by id, that receives the weights exp((x - max) / T) (the most likely id weighs exactly 1);
    /// `weightsReady` says it holds them for every id already.
    private mutating func draw(_ x: UnsafeBufferPointer<Float>, max maxLogit: Float,
                               weights w: UnsafeMutableBufferPointer<Float>, weightsReady: Bool,
                               scratch: inout Scratch) -> Int {
        let count = x.count
        let invT = Float(1 / parameters.temperature)
        var ready = weightsReady
        func ensureWeights() {
            if !ready {
                _ = VectorMath.expSum(x, shift: maxLogit, scale: invT, into: w, blockSums: &scratch.blockSums)
                ready = true
            }
        }

        // `restricted`: the candidates are the ids in `scratch.selection`, with their weights in
        // `w`; otherwise every id is a candidate.
        var restricted = false
        if parameters.topK > 0 && parameters.topK < count {
            Self.selectTop(parameters.topK, of: x, into: &scratch.selection)
            if !ready { for i in scratch.selection { w[Int(i)] = VectorMath.exp((x[Int(i)] - maxLogit) * invT) } }
            restricted = true
        }
        if parameters.topP < 1 {
            if restricted {
                var total = 0.0
                for i in scratch.selection { total += Double(w[Int(i)]) }
                Self.nucleus(allIds: false, topP: parameters.topP, total: total, logits: x, max: maxLogit,
                             invT: invT, weights: UnsafeBufferPointer(w), scratch: &scratch)
            } else {
                ensureWeights()
                let total = scratch.blockSums.reduce(0, +)
                // Usually a short head holds p of the mass: try the 64 most likely ids first.
                Self.selectTop(Swift.min(Self.nucleusHead, count), of: x, into: &scratch.selection)
                var head = 0.0
                for i in scratch.selection { head += Double(w[Int(i)]) }
                if head >= parameters.topP * total {
                    Self.nucleus(allIds: false, topP: parameters.topP, total: total, logits: x,
                                 max: maxLogit, invT: invT, weights: UnsafeBufferPointer(w), scratch: &scratch)
                } else {
                    Self.nucleus(allIds: true, topP: parameters.topP, total: total, logits: x, max: maxLogit,
                                 invT: invT, weights: UnsafeBufferPointer(w), scratch: &scratch)
                }
            }
            restricted = true
        }
        if parameters.minP > 0 {
            // p_i / p_max is the weight itself.
            let threshold = Float(parameters.minP)
            if restricted {
                scratch.selection.removeAll { w[Int($0)] < threshold }
            } else {
                ensureWeights()
                scratch.selection.removeAll(keepingCapacity: true)
                for i in 0..<count where w[i] >= threshold { scratch.selection.append(Int32(i)) }
                restricted = true
            }
        }

        let u = random.nextUnit()
        if restricted {
            var total = 0.0
            for i in scratch.selection { total += Double(w[Int(i)]) }
            let target = u * total
            var cumulative = 0.0
            for i in scratch.selection {
                cumulative += Double(w[Int(i)])
                if target < cumulative { return Int(i) }
            }
            // Rounding left the target at the very end: the last candidate with weight.
            return Int(scratch.selection.last { w[Int($0)] > 0 } ?? scratch.selection[0])
        }
        // Every id: find the block of the target through the block sums, then walk inside it.
        ensureWeights()
        let blocks = scratch.blockSums
        let target = u * blocks.reduce(0, +)
        var cumulative = 0.0
        var block = 0
        while block < blocks.count - 1 && cumulative + blocks[block] <= target {
            cumulative += blocks[block]
            block += 1
        }
        let start = block * VectorMath.blockSize, end = Swift.min(start + VectorMath.blockSize, count)
        var last = start
        for i in start..<end where w[i] > 0 {
            cumulative += Double(w[i])
            if target < cumulative { return i }
            last = i
        }
        return last
    }

    /// Candidate lists up to this size are sorted whole for top-p; longer ones go by buckets.
    static let sortLimit = 1024
    /// How many of the most likely ids top-p tries before it files the whole vocabulary into buckets.
    static let nucleusHead = 64

    /// Cuts the candidates to the nucleus and leaves it in `scratch.selection`: the shortest run
    /// of the most likely candidates whose weight reaches `topP * total` (ids are kept while the
    /// mass before them is below it). The candidates are every id when `allIds`, else the ids
    /// in `scratch.selection`.
    ///
    /// Short lists are sorted. Long ones are never sorted whole: one pass files each candidate
    /// into a bucket of 1/16 nat of distance from the most likely id, whole buckets are kept
    /// until the one where the mass reaches the target, and only that bucket is sorted.
    static func nucleus(allIds all: Bool, topP: Double, total: Double,
                        logits x: UnsafeBufferPointer<Float>, max maxLogit: Float, invT: Float,
                        weights w: UnsafeBufferPointer<Float>, scratch: inout Scratch) {
        let target = topP * total
        if !all && scratch.selection.count <= sortLimit {
            sortDescending(&scratch.selection, by: x)
            var cumulative = 0.0, kept = 0
            for i in scratch.selection {
                if kept > 0 && cumulative >= target { break }
                cumulative += Double(w[Int(i)])
                kept += 1
            }
            scratch.selection.removeLast(scratch.selection.count - kept)
            return
        }
        let bucketCount = 1024, perNat: Float = 16  // the last bucket takes everything past 64 nats
        let scale = invT * perNat, lastBucket = Float(bucketCount - 1)
        @inline(__always) func bucket(_ i: Int) -> Int {
            let d = (maxLogit - x[i]) * scale
            return d < lastBucket ? Int(d) : bucketCount - 1
        }
        scratch.buckets.removeAll(keepingCapacity: true)
        scratch.buckets.append(contentsOf: repeatElement(0, count: bucketCount))
        let listed = all ? 0 : scratch.selection.count
        // Pass 1: each candidate's bucket (kept for pass 2) and the mass of each bucket.
        let n = all ? x.count : listed
        if scratch.bucketOfCandidate.count < n { scratch.bucketOfCandidate = [UInt16](repeating: 0, count: n) }
        scratch.buckets.withUnsafeMutableBufferPointer { mass in
            scratch.bucketOfCandidate.withUnsafeMutableBufferPointer { of in
                if all {
                    for i in 0..<n {
                        let b = bucket(i)
                        of[i] = UInt16(truncatingIfNeeded: b)
                        mass[b] += Double(w[i])
                    }
                } else {
                    scratch.selection.withUnsafeBufferPointer { list in
                        for r in 0..<n {
                            let i = Int(list[r]), b = bucket(i)
                            of[r] = UInt16(truncatingIfNeeded: b)
                            mass[b] += Double(w[i])
                        }
                    }
                }
            }
        }
        var before = 0.0, edge = bucketCount - 1
        for b in 0..<bucketCount {
            if before + scratch.buckets[b] >= target {
                edge = b
                break
            }
            before += scratch.buckets[b]
        }
        // Pass 2: keep the buckets before the edge, set the edge bucket aside for sorting.
        scratch.boundary.removeAll(keepingCapacity: true)
        let edgeBucket = UInt16(edge)
        var kept = 0
        if all {
            scratch.selection.removeAll(keepingCapacity: true)
            for i in 0..<n {
                let b = scratch.bucketOfCandidate[i]
                if b < edgeBucket {
                    scratch.selection.append(Int32(i))
                } else if b == edgeBucket {
                    scratch.boundary.append(Int32(i))
                }
            }
            kept = scratch.selection.count
        } else {
            for r in 0..<n {
                let i = scratch.selection[r], b = scratch.bucketOfCandidate[r]
                if b < edgeBucket {
                    scratch.selection[kept] = i  // kept <= r: never overwrites an unread id
                    kept += 1
                } else if b == edgeBucket {
                    scratch.boundary.append(i)
                }
            }
            scratch.selection.removeLast(n - kept)
        }
        sortDescending(&scratch.boundary, by: x)
        var cumulative = before
        for i in scratch.boundary {
            if kept > 0 && cumulative >= target { break }
            scratch.selection.append(i)
            kept += 1
            cumulative += Double(w[Int(i)])
        }
    }

    // MARK: - Helpers

    /// The indices of the `k` largest values (ties: lower index), in no particular order.
    ///
    /// One pass keeps the ids that beat the current threshold in a buffer of about 4k; when it
    /// fills, a quickselect keeps the best k and raises the threshold to the k-th value. Most
    /// ids fail the threshold test, so the cost is close to one comparison per id.
    static func selectTop(_ k: Int, of x: UnsafeBufferPointer<Float>, into out: inout [Int32]) {
        let n = x.count
        precondition(k > 0 && k <= n)
        out.removeAll(keepingCapacity: true)
        if k == n {
            out.append(contentsOf: 0..<Int32(n))
            return
        }
        let capacity = Swift.max(4 * k, 64)
        out.reserveCapacity(capacity)
        // The first `capacity` ids enter unconditionally (so ids at -infinity can fill a short head).
        let first = Swift.min(capacity, n)
        out.append(contentsOf: 0..<Int32(first))
        var threshold = -Float.infinity
        func compact() {
            out.withUnsafeMutableBufferPointer { keepBest(k, of: $0, by: x) }
            out.removeLast(out.count - k)
            threshold = x[Int(out[k - 1])]
        }
        if first < n { compact() }
        var i = first
        while i < n {
            // A later id with a value equal to the threshold ranks below the kept k-th one.
            if x[i] > threshold {
                out.append(Int32(i))
                if out.count == capacity { compact() }
            }
            i += 1
        }
        if out.count > k {
            out.withUnsafeMutableBufferPointer { keepBest(k, of: $0, by: x) }
            out.removeLast(out.count - k)
        }
    }

    /// Quickselect: reorders `ids` so the best `k` (larger value, then lower id) come first,
    /// with the k-th best at position k - 1.
    static func keepBest(_ k: Int, of ids: UnsafeMutableBufferPointer<Int32>, by x: UnsafeBufferPointer<Float>) {
        @inline(__always) func better(_ a: Int32, _ b: Int32) -> Bool {
            let va = x[Int(a)], vb = x[Int(b)]
            return va > vb || (va == vb && a < b)
        }
        let nth = k - 1
        var low = 0, high = ids.count - 1
        while low < high {
            let mid = low + (high - low) / 2
            // Median of three as the pivot.
            if better(ids[mid], ids[low]) { ids.swapAt(mid, low) }
            if better(ids[high], ids[low]) { ids.swapAt(high, low) }
            if better(ids[high], ids[mid]) { ids.swapAt(high, mid) }
            let pivot = ids[mid]
            var i = low, j = high
            while i <= j {
                while better(ids[i], pivot) { i += 1 }
                while better(pivot, ids[j]) { j -= 1 }
                if i <= j {
                    ids.swapAt(i, j)
                    i += 1
                    j -= 1
                }
            }
            if nth <= j {
                high = j
            } else if nth >= i {
                low = i
            } else {
                return
            }
        }
    }

    /// Sorts indices by value, largest first, ties by lower index.
    static func sortDescending(_ indices: inout [Int32], by x: UnsafeBufferPointer<Float>) {
        indices.sort { a, b in
            let va = x[Int(a)], vb = x[Int(b)]
            return va > vb || (va == vb && a < b)
        }
    }
}
