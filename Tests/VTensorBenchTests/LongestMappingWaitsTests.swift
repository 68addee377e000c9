import Engine
import Runtime
import Testing
@testable import VTensorBench

/// The engine records its longest blocked mapping waits as it counts them: with a set access
/// slow enough that prompts' mappings block, the records agree with the totals.
@Suite struct LongestMappingWaitsTests {
    @Test func theLongestWaitsAgreeWithTheTotals() throws {
        let config = try #require(ModelPresets.config(named: "llama-3-8b"))
        let command = try BenchEngineCommand.parse(["--set-access-delay-us", "400"])
        let engine = try command.makeEngine(config: config, rows: 8, tokensPerRequest: 512, requestsHeld: 16)
        for k in 0..<24 {
            let prompt = (0..<(64 + 16 * (k % 5))).map { 1000 + k * 100 + $0 }
            try engine.add(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 20, ignoreEOS: true)))
        }
        while engine.hasWork {
            for output in engine.step() { #expect(output.error == nil) }
        }
        let stats = engine.statistics
        let waits = stats.longestMappingWaits
        #expect(stats.blockedMappingWaits > 0, "a 400 us set access a chunk blocks some step")
        #expect(waits.count == min(MappingWait.kept, stats.blockedMappingWaits))
        #expect(zip(waits, waits.dropFirst()).allSatisfy { $0.seconds >= $1.seconds })
        #expect(waits.first?.seconds == stats.maxMappingWaitSeconds)
        #expect(waits.reduce(0) { $0 + $1.seconds } <= stats.mappingWaitSeconds + 1e-9)
        #expect(Set(waits.map(\.step)).count == waits.count && waits.allSatisfy { $0.step >= 1 && $0.step <= stats.steps && $0.rows > 0 })
    }
}
