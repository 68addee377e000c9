import Foundation
import Testing
@testable import VTensorBench

/// `bench engine --workload multi-turn|arrivals`: the null model on a modeled clock. The
/// conversations reach the engine with their answers fed back, so with the prefix cache each
/// round computes only its new user turn (within a block at the boundary), without it the whole
/// conversation; and the step cost model prices what it is given.
@Suite struct ModeledClockTests {
    struct Arm: Decodable {
        var prefixCache: Bool
        var promptTokensComputed: Int
        var hitRate: Double
        var outputTokensPerSecond: Double
        var firstTokenMeanMsByRound: [Double]
    }

    @Test func multiTurnComputesOnlyTheNewTurnsWithTheCache() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-mt-\(UUID().uuidString).json").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        let command = try BenchEngineCommand.parse(["--workload", "multi-turn", "--num-conversations", "8", "--max-in-flight", "4",
                                                    "--rounds", "3", "--user-len", "64", "--answer-len", "8", "--kv-budget-gib", "1",
                                                    "--json-out", path])
        try command.run()
        let arms = try JSONDecoder().decode([Arm].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        let on = try #require(arms.first { $0.prefixCache }), off = try #require(arms.first { !$0.prefixCache })
        // Without the cache: every round's whole prompt, 64, 64 + 8 + 64, 2 x 72 + 64 tokens.
        #expect(off.promptTokensComputed == 8 * (64 + 136 + 208))
        // With it: the user turns, and at most a block more a round where a turn starts mid-block
        // (a round's last prompt token is always computed).
        #expect(on.promptTokensComputed >= 8 * 3 * 64 && on.promptTokensComputed <= 8 * 3 * (64 + 16))
        #expect(on.hitRate > 0.4 && off.hitRate == 0)
        #expect(on.outputTokensPerSecond > off.outputTokensPerSecond)
        #expect(on.firstTokenMeanMsByRound.count == 3 && on.firstTokenMeanMsByRound.allSatisfy { $0 > 0 })
    }

    @Test func theCostModelPricesRowsAsDocumented() {
        let cost = StepCostModel.h200Llama3_8B
        let decodes = cost.milliseconds(rows: Array(repeating: (start: 499, tokens: 1), count: 128))
        // 4 ms + 128 x 12 us + 128 x 500 tokens x 128 KiB at 4 TB/s (2.1 ms).
        #expect(abs(decodes - (4 + 1.536 + 128 * 500 * 131_072 / 4e12 * 1000)) < 1e-9)
        let prompt = cost.milliseconds(rows: [(start: 0, tokens: 8192)])
        #expect(prompt > 200 && prompt < 240, "8,192 prompt tokens: \(prompt) ms")
        // A prompt chunk after cached tokens pays attention to them too.
        #expect(cost.milliseconds(rows: [(start: 4096, tokens: 512)]) > cost.milliseconds(rows: [(start: 0, tokens: 512)]))
    }
}
