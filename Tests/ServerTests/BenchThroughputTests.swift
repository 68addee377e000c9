import Foundation
import Testing

/// `vtensor bench throughput` as a user runs it (the built binary, the embedded model on the CPU):
/// its JSON uses the snake_case keys of vLLM's and SGLang's results, and the multi-turn workload
/// reports the prefix cache's hit rate there (issue 12 names the key: `prefix_cache_hit_rate`).
@Suite(.serialized) struct BenchThroughputTests {
    func benchThroughput(_ arguments: [String]) throws -> [String: Any] {
        let json = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-bench-throughput-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: json) }
        let (output, status) = try ServerProcess.vtensor(["bench", "throughput", "--backend", "cpu"] + arguments + ["--json-out", json.path])
        try #require(status == 0, "bench throughput exited with \(status):\n\(output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
    }

    @Test func multiTurnReportsTheHitRateUnderSnakeCaseKeys() throws {
        let workload = ["--dataset", "multi-turn", "--num-conversations", "2", "--rounds", "2", "--user-len", "40",
                        "--answer-len", "8", "--max-in-flight", "2"]
        let cached = try benchThroughput(workload)
        #expect(cached["requests"] as? Int == 4)
        let statistics = try #require(cached["statistics"] as? [String: Any])
        let hits = try #require(statistics["prefix_hit_tokens"] as? Int), queried = try #require(statistics["prefix_queried_tokens"] as? Int)
        let rate = try #require(cached["prefix_cache_hit_rate"] as? Double)
        // Round 2 resends round 1 (40 + 8 tokens) and finds its whole chunks cached.
        #expect(hits > 0 && rate > 0)
        #expect(abs(rate - Double(hits) / Double(queried)) < 1e-9, "rate \(rate), hits \(hits) of \(queried)")
        for key in ["output_tokens_per_second", "engine_host_ms_per_step", "kv_peak_created_bytes"] { #expect(cached[key] != nil, "\(key)") }
        #expect(cached.keys.allSatisfy { !$0.contains(where: \.isUppercase) }, "\(cached.keys.sorted())")

        let uncached = try benchThroughput(workload + ["--no-prefix-cache"])
        #expect(uncached["prefix_cache_hit_rate"] as? Double == 0)
    }
}
