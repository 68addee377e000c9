import Foundation
import Testing
@testable import VTensorBench

/// `bench serve` against the in-process stub server: the figures it reports must match the
/// stub's schedule, every kind of broken response is counted with its reason while the run
/// goes on, and the client alone keeps up with a high request rate.
@Suite(.serialized) struct ServeStubTests {
    func words(_ count: Int, output: Int, form: PromptForm = .text) -> Workload {
        var maker = PromptMaker(tokenizer: nil, form: form, seed: 9)
        return Workload.random(count: count, inputLength: 16, outputLength: output, rangeRatio: 0, maker: &maker, seed: 9)
    }

    func run(_ workload: Workload, port: Int, endpoint: ServeEndpoint = .completions, form: PromptForm = .text,
             concurrency: Int?, rate: Double = .infinity) async -> ServeRun {
        let settings = ServeBenchSettings(baseURL: "http://127.0.0.1:\(port)", endpoint: endpoint, label: "test", dataset: "random",
                                          maxConcurrency: concurrency, progress: false)
        return await ServeBenchmark.run(workload, rate: rate, against: ServerAddress(host: "127.0.0.1", port: port), endpoint: endpoint,
                                        form: form, settings: settings, timeoutSeconds: 20)
    }

    /// A stub with a first token after 150 ms and then one every 40 ms, 5 tokens: TTFT, ITL,
    /// TPOT and E2EL come out as scheduled (a little more for the trip and the timers, never
    /// less), and throughput is what 4 slots each finishing a request every 310 ms give.
    /// Medians, and a time scale well above the scheduling noise of a busy 2-core machine
    /// (other suites run beside this one), keep the tolerances tight enough to catch a wrong
    /// definition (a role chunk taken for the first token, a finish chunk for a token).
    @Test(arguments: [ServeEndpoint.completions, .chat])
    func figuresMatchTheStubsSchedule(endpoint: ServeEndpoint) async throws {
        let firstToken = 0.150, gap = 0.040, tokens = 5, slots = 4, requests = 16
        let stub = try await StubServer.start { _ in StubServer.Behavior(firstTokenDelay: firstToken, gap: gap, tokens: tokens) }
        let form: PromptForm = endpoint == .chat ? .chat : .text
        let run = await run(words(requests, output: tokens, form: form), port: stub.port, endpoint: endpoint, form: form, concurrency: slots)
        await stub.stop()
        let m = run.metrics
        #expect(m.completed == requests && m.failed == 0, "\(m.failures)")
        #expect(m.totalOutput == requests * tokens && m.outputSources == [.usage: requests])
        #expect(run.result.records.allSatisfy { $0.itls.count == tokens - 1 }, "one gap between each two of the 5 tokens")
        let cycle = firstToken + Double(tokens - 1) * gap
        #expect(m.ttft.median >= firstToken * 1000 && m.ttft.median < firstToken * 1000 + 20, "TTFT median \(m.ttft.median) ms")
        #expect(abs(m.itl.median - gap * 1000) < 8, "ITL median \(m.itl.median) ms")
        #expect(abs(m.tpot.median - gap * 1000) < 8, "TPOT median \(m.tpot.median) ms")
        #expect(m.e2el.median >= cycle * 1000 && m.e2el.median < cycle * 1000 + 30, "E2EL median \(m.e2el.median) ms; TTFT \(m.ttft.median), ITL \(m.itl.median)")
        let expected = Double(slots) / cycle
        #expect(m.requestThroughput <= expected * 1.02 && m.requestThroughput > expected * 0.8,
                "\(m.requestThroughput) requests/s; the schedule allows \(expected)")
        #expect(abs(m.outputThroughput - m.requestThroughput * Double(tokens)) < 1e-6)
        #expect(m.maxConcurrentRequests == slots)
    }

    /// Every fifth request succeeds; the others break in each way a server can: the connection
    /// closed mid-stream, a line that is no SSE field, data that is no JSON, an error event,
    /// an HTTP error status. The run goes on, and the report groups them.
    @Test func brokenResponsesAreCountedWithTheirReasons() async throws {
        let stub = try await StubServer.start { n in
            var behavior = StubServer.Behavior(tokens: 4)
            switch n % 6 {
            case 1: behavior.fault = .closeAfter(tokens: 2)
            case 2: behavior.fault = .rawLine("this is not sse\n\n", afterTokens: 1)
            case 3: behavior.fault = .rawLine("data: {\"choices\": [\n\n", afterTokens: 1)
            case 4: behavior.fault = .rawLine("data: {\"error\": {\"message\": \"the engine stopped\"}}\n\n", afterTokens: 3)
            case 5: behavior.fault = .status(500)
            default: break
            }
            return behavior
        }
        let run = await run(words(30, output: 4), port: stub.port, concurrency: 3)
        await stub.stop()
        let m = run.metrics
        #expect(m.completed == 5 && m.failed == 25)
        let counts = Dictionary(uniqueKeysWithValues: m.failures.map { ($0.reason, $0.count) })
        #expect(counts == ["connection closed mid-stream": 5, "malformed SSE line": 10, "error event in the stream": 5, "HTTP 500": 5], "\(counts)")
        let examples = m.failures.map(\.example).joined(separator: "\n")
        #expect(examples.contains("after 2 content chunks"), "\(examples)")
        #expect(examples.contains("the engine stopped") && examples.contains("the stub answers 500"), "\(examples)")
        let table = ServeReport.table(run.settings, run.result, m)
        #expect(table.contains("failed requests by reason") && table.contains("connection closed mid-stream"))
        // The successful ones are measured as usual.
        #expect(m.totalOutput == 5 * 4)
    }

    @Test func anUnreachableServerFailsEveryRequestAndTheRunEnds() async throws {
        let stub = try await StubServer.start { _ in StubServer.Behavior() }
        let port = stub.port
        await stub.stop()  // nobody listens there now
        let run = await run(words(6, output: 4), port: port, concurrency: 2)
        #expect(run.metrics.completed == 0 && run.metrics.failed == 6)
        #expect(run.metrics.failures.map(\.reason) == ["cannot connect"])
        #expect(run.metrics.failures.first?.example.lowercased().contains("refused") == true, "\(run.metrics.failures)")
        #expect(run.metrics.ttft.mean == 0 && run.metrics.requestThroughput == 0)
    }

    /// Token-id form: an answer goes on as the ids the server sent with it (`return_token_ids`,
    /// asked for by every round), not as its text encoded again; the ids a stream carries add up.
    @Test func multiTurnTokenIdsSendTheAnswersIds() throws {
        let conversation = Conversation(turns: [PromptPiece(tokens: [11, 12], count: 2), PromptPiece(tokens: [13], count: 1)], answerTokens: 2)
        let first = conversation.request(after: [], form: .tokenIds, tokenizer: nil)
        #expect(first.prompt == .tokens([11, 12]) && first.returnTokenIds)
        let second = conversation.request(after: [.init(text: "two words", tokens: 2, ids: [901, 902])], form: .tokenIds, tokenizer: nil)
        #expect(second.prompt == .tokens([11, 12, 901, 902, 13]) && second.promptTokens == 5)
        #expect(String(decoding: RequestBody.encode(second, endpoint: .completions, model: nil, ignoreEOS: false), as: UTF8.self)
            .contains(#""return_token_ids":true"#))
        #expect(!String(decoding: RequestBody.encode(BenchRequest(prompt: .text("x"), promptTokens: 1, maxTokens: 1), endpoint: .completions,
                                                     model: nil, ignoreEOS: false), as: UTF8.self).contains("return_token_ids"))

        var state = StreamState(start: 0)
        let decoder = JSONDecoder()
        for event in [#"{"choices": [{"index": 0, "text": "a", "token_ids": [5], "prompt_token_ids": [1, 2]}]}"#,
                      #"{"choices": [{"index": 0, "text": "", "token_ids": [6]}]}"#,
                      #"{"choices": [{"index": 0, "text": "b", "token_ids": [7], "finish_reason": "length"}]}"#] {
            state.event(Array(event.utf8), at: 1, decoder: decoder)
        }
        #expect(state.tokenIds == [5, 6, 7] && state.text == "ab")
        #expect(StreamState(start: 0).tokenIds == nil)
    }

    /// Multi-turn over the chat endpoint: each round goes out after the answer to the one
    /// before, with that answer (the stub's text) as an assistant message.
    @Test func multiTurnRoundsResendTheConversation() async throws {
        let stub = try await StubServer.start(recordBodies: true) { n in
            // The fourth request (the second conversation's first round) fails: that conversation's later rounds are not sent.
            StubServer.Behavior(tokens: 3, fault: n == 3 ? .status(503) : nil)
        }
        var maker = PromptMaker(tokenizer: nil, form: .chat, seed: 4)
        let workload = Workload.multiTurn(conversations: 3, rounds: 3, userLength: 5, answerLength: 3, maker: &maker)
        let run = await run(workload, port: stub.port, endpoint: .chat, form: .chat, concurrency: 1)
        await stub.stop()
        #expect(run.result.records.count == 9)
        let m = run.metrics
        #expect(m.completed == 6 && m.failed == 3, "\(m.failures)")
        #expect(Dictionary(uniqueKeysWithValues: m.failures.map { ($0.reason, $0.count) }) == ["HTTP 503": 1, "not sent: an earlier round failed": 2])
        let sent = try stub.bodies.map { body -> [[String: String]] in
            let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
            return try #require(object["messages"] as? [[String: String]])
        }
        // One at a time: conversation 1's three rounds, conversation 2's first (failed), conversation 3's three.
        #expect(sent.map(\.count) == [1, 3, 5, 1, 1, 3, 5])
        for round in sent where round.count > 1 {
            #expect(round.enumerated().allSatisfy { $0.element["role"] == ($0.offset % 2 == 0 ? "user" : "assistant") })
            #expect(round.filter { $0["role"] == "assistant" }.allSatisfy { $0["content"] == " tok0 tok1 tok2" })
        }
        #expect(sent[2][0] == sent[0][0] && sent[2][2] == sent[1][2], "a round repeats the conversation so far")
    }

    /// The command end to end: a sweep over two rates writes {label, runs} and the chart, which
    /// also draws the line of an earlier run's file (--plot-with).
    @Test func aSweepWritesItsResultsAndChart() async throws {
        let stub = try await StubServer.start { _ in StubServer.Behavior(firstTokenDelay: 0.005, gap: 0.002, tokens: 4) }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-sweep-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let base = ["--base-url", "http://127.0.0.1:\(stub.port)", "--model", "stub", "--num-prompts", "8", "--random-input-len", "8",
                    "--random-output-len", "4", "--no-progress"]
        let earlier = directory.appendingPathComponent("earlier.json").path, sweep = directory.appendingPathComponent("sweep.json").path
        try await BenchServeCommand.parse(base + ["--label", "earlier", "--json-out", earlier]).runAsync()
        try await BenchServeCommand.parse(base + ["--label", "now", "--sweep-rates", "40,inf", "--json-out", sweep, "--plot-with", earlier]).runAsync()
        await stub.stop()

        let single = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: earlier))) as? [String: Any])
        #expect(single["completed"] as? Int == 8 && single["label"] as? String == "earlier" && single["request_rate"] as? String == "inf")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: sweep))) as? [String: Any])
        let runs = try #require(object["runs"] as? [[String: Any]])
        #expect(object["label"] as? String == "now" && runs.count == 2)
        #expect(runs[0]["request_rate"] as? Double == 40 && runs[1]["request_rate"] as? String == "inf")
        #expect(runs.allSatisfy { $0["completed"] as? Int == 8 && $0["total_output_tokens"] as? Int == 32 })
        let svg = try String(contentsOfFile: directory.appendingPathComponent("sweep.svg").path, encoding: .utf8)
        #expect(svg.components(separatedBy: "<polyline").count - 1 == 4, "a line per label in each of the two panels")
        #expect(svg.contains(">now<") && svg.contains(">earlier<"))
    }

    /// The client's own overhead: requests at rate inf against a stub answering at once, in
    /// this process. `vtensor bench serve --self-test` measures the real figure on a release
    /// build (about 6,000 requests/s on 2 cores; README); this debug build, beside the other
    /// suites, gets 400-1,200 here, so the floor is low. What must hold whatever the machine:
    /// the requests overlap (a client that sent them one at a time would stay at one open).
    @Test func theClientKeepsUpWithAnInstantServer() async throws {
        let run = try await ClientSelfTest.run(requests: 2000, concurrency: 32, clientThreads: 2, progress: false)
        #expect(run.metrics.completed == 2000 && run.metrics.failed == 0, "\(run.metrics.failures)")
        #expect(run.metrics.totalOutput == 2000 * 8)
        print("bench serve client self-test (debug build): \(Int(run.metrics.requestThroughput)) requests/s")
        #expect(run.metrics.requestThroughput > 100, "\(run.metrics.requestThroughput) requests/s")
        #expect(run.metrics.maxConcurrentRequests > 16, "at most \(run.metrics.maxConcurrentRequests) of 32 slots in use at once")
    }
}
