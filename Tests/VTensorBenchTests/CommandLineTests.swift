import ArgumentParser
import CLICommon
import Testing

/// The shared flags read negative numbers as values, so the user sees the range check that
/// names the problem instead of "Missing value".
@Suite struct CommandLineTests {
    func message<T: ParsableArguments>(_ type: T.Type, _ arguments: [String]) -> String? {
        do {
            _ = try type.parse(arguments)
            return nil
        } catch {
            return type.message(for: error)
        }
    }

    @Test func negativeNumbersReachTheRangeChecks() {
        #expect(message(EngineFlags.self, ["--threads", "-2"]) == "--threads must be at least 1, got -2")
        #expect(message(EngineFlags.self, ["--max-num-seqs", "-1"]) == "--max-num-seqs must be at least 1, got -1")
        #expect(message(EngineFlags.self, ["--max-num-batched-tokens", "0"]) == "--max-num-batched-tokens must be at least 1, got 0")
        #expect(message(EngineFlags.self, ["--max-model-len", "1"])?.contains("at least 2") == true)
        #expect(message(EngineFlags.self, ["--kv-budget-mib", "-64"]) == "--kv-budget-mib must be at least 1, got -64")
        #expect(message(BackendOptions.self, ["--device", "-1"])?.contains("got -1") == true)
        #expect(message(EngineFlags.self, ["--threads", "2", "--max-num-seqs", "8"]) == nil)
    }

    @Test func kvModeAndPipelineSwitches() throws {
        let flags = try EngineFlags.parse(["--kv", "paged", "--pipeline-steps", "off"])
        #expect(flags.kv == .paged)
        #expect(flags.pipelineSteps == .off)
        #expect(message(EngineFlags.self, ["--kv", "pages"]) != nil)
        let defaults = try EngineFlags.parse([])
        #expect(defaults.kv == .vtensor && defaults.pipelineSteps == .on)
    }

    /// `--access-per-run` reaches the GPU model's options (off unless asked for).
    @Test func accessPerRunReachesTheModelOptions() throws {
        let on = try EngineFlags.parse(["--access-per-run", "on"]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(on.gpu.accessPerRun)
        let off = try EngineFlags.parse([]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(!off.gpu.accessPerRun)
        #expect(message(EngineFlags.self, ["--access-per-run", "yes"]) != nil)
    }

    /// Shared-prefix decode tiles and eviction a step ahead are on unless turned off.
    @Test func sharedPrefixDecodeAndEvictAheadDefaults() throws {
        let defaults = try EngineFlags.parse([])
        #expect(defaults.evictAhead == .on && defaults.sharedPrefixDecode == .on)
        #expect(defaults.runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false).gpu.sharedPrefixDecode)
        let off = try EngineFlags.parse(["--evict-ahead", "off", "--shared-prefix-decode", "off"])
        #expect(off.evictAhead == .off && !off.runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false).gpu.sharedPrefixDecode)
        #expect(message(EngineFlags.self, ["--evict-ahead", "sometimes"]) != nil)
    }

    /// Matmul buckets and the autotune are on unless turned off; both reach the GPU model's options.
    @Test func matmulBucketsAndAutotuneFlags() throws {
        let defaults = try EngineFlags.parse([]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(defaults.gpu.matmulBuckets && defaults.gpu.matmulAutotune)
        let flipped = try EngineFlags.parse(["--matmul-buckets", "off", "--matmul-autotune", "off"])
            .runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(!flipped.gpu.matmulBuckets && !flipped.gpu.matmulAutotune)
        #expect(message(EngineFlags.self, ["--matmul-autotune", "maybe"]) != nil)
    }

    /// The two experiments of 2026-12-06 (sixth session) are off unless asked for, reach the GPU
    /// model's options when they are, and refuse values they cannot take.
    @Test func splitKAndReservationAlignmentExperiments() throws {
        let defaults = try EngineFlags.parse([]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(!defaults.gpu.matmulAutotuneSplitK && defaults.gpu.reservationAlignment == 0)
        let on = try EngineFlags.parse(["--matmul-autotune-split-k", "on", "--kv-reservation-alignment-mib", "1024"])
            .runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(on.gpu.matmulAutotuneSplitK && on.gpu.reservationAlignment == 1 << 30)
        #expect(message(EngineFlags.self, ["--kv-reservation-alignment-mib", "3"])
                == "--kv-reservation-alignment-mib must be a non-negative multiple of 2 (the chunk size), got 3")
        #expect(message(EngineFlags.self, ["--kv-reservation-alignment-mib", "-2"]) != nil)
    }

    @Test func gpuMemoryUtilization() throws {
        let options = try EngineFlags.parse(["--gpu-memory-utilization", "0.8"]).runtimeOptions(backend: nil, device: 0, nativeCPUWeights: false)
        #expect(options.kvBudget == .fractionOfTotal(0.8))
        #expect(message(EngineFlags.self, ["--gpu-memory-utilization", "1.5"]) == "--gpu-memory-utilization must be in (0, 1], got 1.5")
        #expect(message(EngineFlags.self, ["--gpu-memory-utilization", "-0.5"]) == "--gpu-memory-utilization must be in (0, 1], got -0.5")
        #expect(message(EngineFlags.self, ["--gpu-memory-utilization", "0.8", "--kv-budget-mib", "512"])
                == "give --kv-budget-mib or --gpu-memory-utilization, not both")
    }

    @Test func vLLMsNameForTurningThePrefixCacheOff() throws {
        #expect(try EngineFlags.parse(["--no-enable-prefix-caching"]).noPrefixCache)
        #expect(try EngineFlags.parse(["--no-prefix-cache"]).noPrefixCache)
        #expect(try !EngineFlags.parse([]).noPrefixCache)
    }

    @Test func stepOverheadTokens() throws {
        #expect(message(EngineFlags.self, ["--step-overhead-tokens", "0"]) == "--step-overhead-tokens must be at least 1, got 0")
        #expect(try EngineFlags.parse(["--step-overhead-tokens", "512"]).stepOverheadTokens == 512)
        #expect(try EngineFlags.parse([]).stepOverheadTokens == nil)
    }

    /// The prefetch paths can be turned off for an A/B (0), never made negative; late draws are on by default.
    @Test func prefetchStepsAliasAheadAndLateDraws() throws {
        #expect(message(EngineFlags.self, ["--prefetch-steps", "-1"]) == "--prefetch-steps must be at least 0, got -1")
        #expect(message(EngineFlags.self, ["--alias-ahead-chunks", "-2"]) == "--alias-ahead-chunks must be at least 0, got -2")
        #expect(try EngineFlags.parse(["--prefetch-steps", "0"]).prefetchSteps == 0)
        #expect(try EngineFlags.parse(["--alias-ahead-chunks", "0"]).aliasAheadChunks == 0)
        #expect(try EngineFlags.parse([]).lateDraws == .on)
        #expect(try EngineFlags.parse(["--late-draws", "off"]).lateDraws == .off)
    }
}
