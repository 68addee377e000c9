import ArgumentParser
import CLICommon
import Testing

/// `--matmul-autotune` is on by default and keeps its choices in the default cache file unless
/// told otherwise; `--matmul-tuning-cache none` keeps nothing.
@Suite struct TuningCacheFlagTests {
    @Test func theAutotuneAndItsCacheReachTheModelOptions() throws {
        let defaults = try EngineFlags.parse([]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(defaults.gpu.matmulAutotune)
        let given = try EngineFlags.parse(["--matmul-tuning-cache", "/tmp/x/tuning.json"])
        #expect(given.runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false).gpu.matmulTuningCache == "/tmp/x/tuning.json")
        let none = try EngineFlags.parse(["--matmul-tuning-cache", "none"])
        #expect(none.runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false).gpu.matmulTuningCache == nil)
        let off = try EngineFlags.parse(["--matmul-autotune", "off"]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(!off.gpu.matmulAutotune)
    }

    @Test func anEmptyCachePathIsRefused() {
        #expect(throws: (any Error).self) { try EngineFlags.parse(["--matmul-tuning-cache", ""]) }
    }
}
