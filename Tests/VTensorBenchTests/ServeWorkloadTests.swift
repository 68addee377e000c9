import Foundation
import Testing
@testable import VTensorBench

/// `bench serve`'s workloads, arrival times, figures and chart, without a server.
@Suite struct ServeWorkloadTests {
    @Test func arrivalsFollowTheRateAndBurstiness() {
        #expect(Arrivals.times(count: 5, rate: .infinity, burstiness: 1, seed: 0) == [0, 0, 0, 0, 0])
        let rate = 10.0, count = 4000
        for burstiness in [0.25, 1, 4] {
            let times = Arrivals.times(count: count, rate: rate, burstiness: burstiness, seed: 3)
            #expect(times == Arrivals.times(count: count, rate: rate, burstiness: burstiness, seed: 3), "the seed repeats the times")
            #expect(zip(times, times.dropFirst()).allSatisfy { $0 <= $1 })
            // Scaled, as vLLM does, so that the last arrival is at count / rate.
            #expect(abs(times.last! - Double(count) / rate) < 1e-9)
            // Gamma gaps of shape k have a coefficient of variation of 1 / sqrt(k).
            let gaps = zip([0] + times, times).map { $1 - $0 }
            let mean = gaps.reduce(0, +) / Double(count)
            let std = (gaps.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(count)).squareRoot()
            let cv = std / mean, expected = 1 / burstiness.squareRoot()
            #expect(abs(cv - expected) < 0.1 * expected, "burstiness \(burstiness): coefficient of variation \(cv), expected \(expected)")
        }
    }

    @Test func randomLengthsUseVLLMsRangeRatio() {
        // vLLM: [floor(L(1-r)), ceil(L(1+r))], outputs at least 1.
        #expect(Workload.randomRange(1024, ratio: 0.5, atLeast: 1) == 512...1536)
        #expect(Workload.randomRange(100, ratio: 0, atLeast: 1) == 100...100)
        #expect(Workload.randomRange(3, ratio: 0.9, atLeast: 1) == 1...6)
        var maker = PromptMaker(tokenizer: nil, form: .text, seed: 1)
        let workload = Workload.random(count: 300, inputLength: 40, outputLength: 20, rangeRatio: 0.5, maker: &maker, seed: 2)
        let requests = workload.units.compactMap { unit -> BenchRequest? in if case .single(let r) = unit { r } else { nil } }
        #expect(requests.count == 300)
        #expect(requests.allSatisfy { (20...60).contains($0.promptTokens) && (10...30).contains($0.maxTokens) })
        #expect(Set(requests.map(\.promptTokens)).count > 20 && Set(requests.map(\.maxTokens)).count > 10, "lengths spread over the ranges")
        // Without a tokenizer a prompt is that many words.
        for request in requests.prefix(20) {
            guard case .text(let text) = request.prompt else { Issue.record("a text prompt expected"); continue }
            #expect(text.split(separator: " ").count == request.promptTokens)
        }
        // The outputs' own ratio: issue 14's 128-1024 in, 128-512 out.
        let mixed = Workload.random(count: 400, inputLength: 576, outputLength: 320, rangeRatio: 0.7777, outputRangeRatio: 0.6,
                                    maker: &maker, seed: 3)
        let mixedRequests = mixed.units.compactMap { unit -> BenchRequest? in if case .single(let r) = unit { r } else { nil } }
        #expect(mixedRequests.allSatisfy { (128...1024).contains($0.promptTokens) && (128...512).contains($0.maxTokens) })
        #expect(mixedRequests.contains { $0.promptTokens > 900 } && mixedRequests.contains { $0.maxTokens < 160 })
        #expect(mixed.summary.contains("input 128-1024, output 128-512"), "\(mixed.summary)")
    }

    @Test func sharedPrefixGroupsShareTheirSystemPrompt() {
        var maker = PromptMaker(tokenizer: nil, form: .chat, seed: 1)
        let shape = SharedPrefixWorkload(groups: 3, perGroup: 4, systemLength: 30, questionLength: 5, outputLength: 9)
        let units = Workload.sharedPrefix(shape, maker: &maker, seed: 0).units
        let systems = units.compactMap { unit -> String? in
            guard case .single(let r) = unit, case .messages(let m) = r.prompt, m.count == 2, m[0].role == "system" else { return nil }
            #expect(r.maxTokens == 9 && r.promptTokens == 35)
            return m[0].content
        }
        #expect(systems.count == 12)
        #expect(Dictionary(grouping: systems, by: { $0 }).values.map(\.count).sorted() == [4, 4, 4])
    }

    @Test func multiTurnRoundsCarryTheAnswersBefore() {
        var maker = PromptMaker(tokenizer: nil, form: .chat, seed: 1)
        guard case .conversation(let c) = Workload.multiTurn(conversations: 1, rounds: 3, userLength: 6, answerLength: 4, maker: &maker).units[0] else {
            Issue.record("a conversation expected")
            return
        }
        let answers = [Conversation.Answer(text: " first answer", tokens: 2), Conversation.Answer(text: " second", tokens: 1)]
        let round3 = c.request(after: answers, form: .chat, tokenizer: nil)
        guard case .messages(let m) = round3.prompt else { Issue.record("messages expected"); return }
        #expect(m.map(\.role) == ["user", "assistant", "user", "assistant", "user"])
        #expect(m.map(\.content) == [c.turns[0].text, " first answer", c.turns[1].text, " second", c.turns[2].text])
        #expect(round3.promptTokens == 18 + 3 && round3.maxTokens == 4)
        let text = c.request(after: Array(answers.prefix(1)), form: .text, tokenizer: nil)
        #expect(text.prompt == .text(c.turns[0].text + " first answer" + c.turns[1].text))
    }

    /// A ShareGPT-shaped array cut off in its last record, with braces and escaped quotes inside strings.
    static let truncatedShareGPT = """
        [
          {"id": "a", "conversations": [{"from": "human", "value": "What does {\\"x\\": [1]} mean in JSON, exactly?"},
                                        {"from": "gpt", "value": "It is an object whose member x is a list holding one."}]},
          {"id": "b", "conversations": [{"from": "human", "value": "only one turn here, so it is skipped"}]},
          {"id": "c", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "too short a prompt to keep"}]},
          {"id": "d", "conversations": [{"from": "human", "value": "Write a haiku about brackets ] and braces }."},
                                        {"from": "gpt", "value": "Square walls and curly, nested homes for every key."}]},
          {"id": "e", "conversations": [{"from": "human", "value": "this record is cut of
        """

    @Test func shareGPTIsReadUpToTheLastCompleteRecord() throws {
        let (records, cutOff) = try ShareGPTDataset.records(Data(Self.truncatedShareGPT.utf8))
        #expect(cutOff)
        #expect(records.count == 4)
        #expect(records[0].conversations?[0].value == "What does {\"x\": [1]} mean in JSON, exactly?")
        let complete = try ShareGPTDataset.records(Data((Self.truncatedShareGPT.components(separatedBy: ",\n  {\"id\": \"e\"")[0] + "\n]\n").utf8))
        #expect(!complete.cutOff && complete.records.count == 4)
        #expect(throws: (any Error).self) { try ShareGPTDataset.records(Data("{\"not\": \"an array\"}".utf8)) }

        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-sharegpt-\(UUID().uuidString).json").path
        try Self.truncatedShareGPT.write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let workload = try ShareGPTDataset.workload(path: path, count: 5, form: .chat, tokenizer: nil, seed: 0)
        #expect(workload.summary.contains("read 4 complete records (the file is cut off after them)"), "\(workload.summary)")
        // "a" and "d" pass the filters; "c"'s prompt is under 4 tokens; "b" has one turn. Five requests repeat the two.
        let prompts = workload.units.compactMap { unit -> String? in
            guard case .single(let r) = unit, case .messages(let m) = r.prompt else { return nil }
            return m[0].content
        }
        #expect(prompts.count == 5 && Set(prompts).count == 2)
        #expect(Set(prompts).allSatisfy { $0.hasPrefix("What does") || $0.hasPrefix("Write a haiku") })
    }

    @Test func customLinesAndTheirErrors() throws {
        let directory = FileManager.default.temporaryDirectory
        let path = directory.appendingPathComponent("vtensor-custom-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try "# comment\n{\"prompt\": \"tell me a story\", \"output_tokens\": 12}\n\n{\"prompt\": [1, 2, 3]}\n".write(toFile: path, atomically: true, encoding: .utf8)
        let workload = try CustomDataset.workload(path: path, count: 3, outputLength: 50, endpoint: .completions, tokenizer: nil)
        let requests = workload.units.compactMap { unit -> BenchRequest? in if case .single(let r) = unit { r } else { nil } }
        #expect(requests.map(\.maxTokens) == [12, 50, 12])
        #expect(requests[1].prompt == .tokens([1, 2, 3]))

        try "{\"prompt\": \"ok\"}\n{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try CustomDataset.workload(path: path, count: 2, outputLength: 5, endpoint: .completions, tokenizer: nil) }
        do {
            _ = try CustomDataset.workload(path: path, count: 2, outputLength: 5, endpoint: .completions, tokenizer: nil)
        } catch {
            #expect("\(error)".contains("line 2") && "\(error)".contains("chat"), "\(error)")
        }
        try "{\"prompt\": \"ok\"}\n{\"prompt\": 5}\n".write(toFile: path, atomically: true, encoding: .utf8)
        do {
            _ = try CustomDataset.workload(path: path, count: 2, outputLength: 5, endpoint: .completions, tokenizer: nil)
            Issue.record("a line without a usable prompt was accepted")
        } catch {
            #expect("\(error)".contains("line 2"), "\(error)")
        }
    }

    func record(ttft: Double, gaps: [Double], tokens: Int, start: UInt64 = 0, failure: RequestFailure? = nil) -> RequestRecord {
        RequestRecord(start: start, ttft: failure == nil ? ttft : nil, itls: gaps, latency: ttft + gaps.reduce(0, +), promptTokens: 10,
                      outputTokens: tokens, outputSource: .usage, failure: failure, text: "")
    }

    @Test func metricsFollowVLLMsDefinitions() throws {
        // Ten completed requests with TTFT 0.1 ... 1.0 s; numpy's percentile interpolates
        // linearly between ranks: p50 of ten values is the mean of the 5th and 6th, p90 sits
        // at rank 8.1.
        let records = (1...10).map { record(ttft: Double($0) / 10, gaps: [0.02, 0.04], tokens: 3) }
            + [record(ttft: 0, gaps: [], tokens: 0, failure: RequestFailure(reason: "HTTP 500", detail: "boom"))]
        let goodput = try GoodputTargets(["ttft:500", "tpot:40"])
        let m = ServeMetrics(records: records, duration: 2, percentiles: [50, 90], goodput: goodput)
        #expect(m.completed == 10 && m.failed == 1)
        #expect(m.failures.count == 1 && m.failures[0].reason == "HTTP 500" && m.failures[0].count == 1)
        #expect(abs(m.ttft.median - 550) < 1e-9 && abs(m.ttft.percentiles[1].value - 910) < 1e-9)
        #expect(abs(m.ttft.mean - 550) < 1e-9)
        // TPOT = (e2e - ttft) / (tokens - 1) = 0.06 / 2 = 30 ms for every request.
        #expect(abs(m.tpot.mean - 30) < 1e-9 && m.tpot.std < 1e-9)
        #expect(abs(m.itl.mean - 30) < 1e-9 && abs(m.itl.median - 30) < 1e-9)
        #expect(m.totalOutput == 30 && m.totalInput == 100)
        #expect(m.requestThroughput == 5 && m.outputThroughput == 15 && m.totalTokenThroughput == 65)
        // TTFT <= 500 ms: five requests; TPOT 30 <= 40 for all.
        #expect(m.requestGoodput == 2.5)
        #expect(throws: RequestFailure.self) { try GoodputTargets(["ttft=200"]) }
        #expect(throws: RequestFailure.self) { try GoodputTargets(["latency:200"]) }
    }

    @Test func peakConcurrencyCountsOverlaps() {
        let second: UInt64 = 1_000_000_000
        // [0, 1], [0.5, 1.5], [1, 2]: at 1 s one ends as another starts (the end counts first): two at most.
        var records = [record(ttft: 1, gaps: [], tokens: 1, start: 0), record(ttft: 1, gaps: [], tokens: 1, start: second / 2),
                       record(ttft: 1, gaps: [], tokens: 1, start: second)]
        #expect(ServeMetrics.peaks(records).concurrent == 2)
        // [0.6, 0.8] overlaps the first two.
        records.append(record(ttft: 0.2, gaps: [], tokens: 1, start: second * 6 / 10))
        #expect(ServeMetrics.peaks(records).concurrent == 3)
    }

    @Test func theChartHasALinePerLabelInEachPanel() {
        #expect(SweepChart.ticks(upTo: 7) == [0, 2, 4, 6, 8])
        #expect(SweepChart.ticks(upTo: 1234) == [0, 500, 1000, 1500])
        #expect(SweepChart.ticks(upTo: 0.3).count == 4 && SweepChart.ticks(upTo: 0.3).last! >= 0.3)
        let a = SweepSeries(label: "vtensor <vt>", points: [.init(rate: 1, outputThroughput: 100, ttftMs: 20, tpotMs: 5),
                                                           .init(rate: .infinity, outputThroughput: 900, ttftMs: 400, tpotMs: 30)])
        let b = SweepSeries(label: "peer", points: [.init(rate: 1, outputThroughput: 90, ttftMs: 30, tpotMs: 8)])
        let svg = SweepChart.svg(title: "t", series: [a, b])
        #expect(svg.hasPrefix("<svg") && svg.hasSuffix("</svg>\n"))
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4)
        #expect(svg.contains("vtensor &lt;vt&gt;") && svg.contains(">peer<") && svg.contains(">inf<"))
        #expect(svg.contains("median TTFT (ms)") && svg.contains("median TPOT (ms)") && svg.contains("output throughput (tokens/s)"))
    }
}
