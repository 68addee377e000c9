import Foundation
import Testing

/// `vtensor bench serve` against the real `vtensor serve` (the embedded model on the CPU): the
/// built binary, as a user runs it, with token-id prompts on /v1/completions and a multi-turn
/// chat on /v1/chat/completions.
@Suite(.serialized) struct BenchServeTests {
    /// Runs `vtensor bench serve <arguments> --json-out FILE`; returns its JSON result and output.
    func benchServe(_ arguments: [String]) throws -> (result: [String: Any], output: String) {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-bench-serve-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: json) }
        let (output, status) = try ServerProcess.vtensor(["bench", "serve"] + arguments + ["--json-out", json.path, "--no-progress"])
        try #require(status == 0, "bench serve exited with \(status):\n\(output)")
        let data = try Data(contentsOf: json)
        return (try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any]), output)
    }

    @Test func tokenIdPromptsOfExactLengths() throws {
        let server = try ServerProcess.sharedServer()
        let (result, output) = try benchServe(["--base-url", server.base, "--tokenizer", "embedded", "--num-prompts", "3",
                                               "--random-input-len", "16", "--random-output-len", "3", "--ignore-eos", "--max-concurrency", "3"])
        #expect(result["completed"] as? Int == 3 && result["failed"] as? Int == 0, "\(output)")
        // The model came from /v1/models; --ignore-eos makes every answer its full length.
        #expect(result["model_id"] as? String == "smol")
        #expect(result["total_output_tokens"] as? Int == 9)
        #expect(result["output_tokens_source"] as? [String: Int] == ["usage": 3])
        // Token ids go to the server as they are: the server counts exactly the prompt sent.
        #expect(result["input_lens"] as? [Int] == [16, 16, 16], "\(result["input_lens"] ?? "none")")
        for key in ["mean_ttft_ms", "p99_tpot_ms", "median_itl_ms", "p90_e2el_ms", "request_throughput", "output_throughput"] {
            #expect((result[key] as? Double ?? 0) > 0, "\(key)")
        }
        #expect(output.contains("token ids (exact lengths"), "\(output)")
        // The server's counters over the run, from /metrics before and after (other tests may
        // share the server, so at least this run's own tokens).
        let counters = try #require(result["server_counters"] as? [String: Double], "\(result.keys.sorted())")
        #expect((counters["vllm:prompt_tokens_total"] ?? 0) >= 48 && (counters["vllm:generation_tokens_total"] ?? 0) >= 9, "\(counters)")
        #expect(output.contains("server: prefix cache"), "\(output)")
    }

    /// Multi-turn in token-id form sends each answer on as the ids the server generated
    /// (`return_token_ids`), so every round's prompt is the round before, its answer's ids and
    /// the new turn, to the token.
    @Test func multiTurnTokenIdsCarryTheAnswersOwnIds() throws {
        let server = try ServerProcess.sharedServer()
        let before = try MetricsScrape(server.metrics()).value("vtensor:prefix_cache_takeovers_total")
        let (result, output) = try benchServe(["--base-url", server.base, "--tokenizer", "embedded", "--dataset", "multi-turn",
                                               "--num-conversations", "2", "--rounds", "3", "--user-len", "8", "--answer-len", "3",
                                               "--max-in-flight", "2", "--ignore-eos"])
        // Each later round starts with everything its conversation's last round left, so it takes
        // that holder over whole (no chunk mapped): 2 conversations x 2 later rounds.
        let takeovers = try MetricsScrape(server.metrics()).value("vtensor:prefix_cache_takeovers_total") - before
        #expect(takeovers >= 4, "\(takeovers) takeovers")
        #expect(((result["server_counters"] as? [String: Double])?["vtensor:prefix_cache_takeovers_total"] ?? 0) >= 4, "\(result["server_counters"] ?? "none")")
        #expect(result["completed"] as? Int == 6 && result["failed"] as? Int == 0, "\(output)")
        #expect(result["requests_with_token_ids"] as? Int == 6, "\(output)")
        #expect(output.contains("the server's ids for 6 of 6"), "\(output)")
        let inputs = try #require(result["input_lens"] as? [Int])
        // Two conversations interleave: sorted, the lengths are each round's twice.
        #expect(inputs.sorted() == [8, 8, 19, 19, 30, 30], "\(inputs)")
        // Rounds are numbered from 0, and the first rounds' first tokens are reported apart.
        let rounds = try #require(result["rounds"] as? [Int])
        #expect(rounds.sorted() == [0, 0, 1, 1, 2, 2], "\(rounds)")
        #expect(zip(rounds, inputs).allSatisfy { [0: 8, 1: 19, 2: 30][$0.0] == $0.1 }, "\(rounds) \(inputs)")
        for key in ["median_ttft_ms_first_round", "median_ttft_ms_later_rounds", "mean_ttft_ms_later_rounds"] {
            #expect((result[key] as? Double ?? 0) > 0, "\(key)")
        }
        #expect(output.contains("first token by round"), "\(output)")
    }

    @Test func multiTurnChat() throws {
        let server = try ServerProcess.sharedServer()
        let (result, output) = try benchServe(["--base-url", server.base, "--endpoint", "/v1/chat/completions", "--tokenizer", "embedded",
                                               "--dataset", "multi-turn", "--num-conversations", "1", "--rounds", "2", "--user-len", "8",
                                               "--answer-len", "2", "--ignore-eos"])
        #expect(result["completed"] as? Int == 2 && result["failed"] as? Int == 0, "\(output)")
        let inputs = try #require(result["input_lens"] as? [Int])
        // The second round resends the first with its answer and adds a user turn of 8 tokens.
        #expect(inputs.count == 2 && inputs[1] >= inputs[0] + 2 + 8, "\(inputs)")
    }
}
