import Foundation
import Engine
import Runtime
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

    /// Priced as the shared-prefix decode reads them, requests that alias one cached prefix make
    /// tiles (the engine's real prefix cache and KV cache decide who shares: aliased chunks, or
    /// the same pages) and cost less modeled time; priced plainly, none.
    @Test func sharedPrefixDecodeIsPricedFromTheCachesOwnSharing() throws {
        let config = try #require(ModelPresets.config(named: "llama-3-8b"))
        for paged in [false, true] {
            var clocks: [Bool: Double] = [:]
            for tiled in [false, true] {
                let command = try BenchEngineCommand.parse(["--shared-prefix-decode", tiled ? "on" : "off"])
                let engine = try command.makeEngine(config: config, rows: 16, tokensPerRequest: 400, requestsHeld: 16, paged: paged,
                                                    cost: StepCostModel.h200Llama3_8B)
                let null = try #require(engine.model as? BenchEngineCommand.NullModel)
                for group in 0..<2 {
                    let system = (0..<256).map { 1000 + group * 1000 + $0 }
                    for k in 0..<4 {
                        let prompt = system + (0..<20).map { 5000 + group * 100 + k * 20 + $0 }
                        try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 24, ignoreEOS: true)))
                    }
                }
                while engine.hasWork {
                    for output in engine.step() { #expect(output.error == nil) }
                }
                #expect(engine.statistics.prefixHitTokens >= 6 * 256, "the followers found the system prompt cached")
                if tiled {
                    #expect(null.tiles > 0 && null.sparedKeys > 0)
                    // A tile spares at most (4 - 1) x 256 keys a step; a group of 4 makes one tile.
                    #expect(null.sparedKeys <= null.tiles * 3 * 256)
                } else {
                    #expect(null.tiles == 0 && null.sparedKeys == 0)
                }
                clocks[tiled] = null.clockMs
            }
            #expect(clocks[true]! < clocks[false]!, paged ? "paged" : "virtual tensors")
        }
    }
}
