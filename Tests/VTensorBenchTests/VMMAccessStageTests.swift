import Testing
@testable import VTensorBench

/// `bench vmm --only access` on the host backend: every run length is timed, the host backend
/// unmaps a run in one call, and the mapper is measured both ways (so the stage the GPU script
/// depends on runs in CI, not first on the GPU).
@Suite struct VMMAccessStageTests {
    @Test func theAccessStageRunsOnTheHostBackend() throws {
        let device = try openDevice(.cpu, ordinal: 0, hostCapacity: 1 << 30)
        let bench = VMMBench(device: device, chunks: 128, steps: 0, log: false, stages: ["access"])
        let report = try bench.run()
        let access = try #require(report.access)
        #expect(access.chunks == 128)
        #expect(access.runs.map(\.runChunks) == [1, 2, 8, 32, 128])
        #expect(access.runs.map(\.calls) == [128, 64, 16, 4, 1])
        #expect(access.runs.allSatisfy { $0.unmapInOneCall && $0.unmapPerCall != nil && $0.setAccessPerCall.count == $0.calls })
        #expect(access.backendUnmapsRuns)
        #expect(access.mapperPerChunk.count == 2 && access.mapperPerRun.count == 2 && (access.mapperPerRun + access.mapperPerChunk).allSatisfy { $0 > 0 })
        #expect(access.copyMillisIdle == nil, "no copy kernel on the CPU")
    }
}

/// The placement stage reads GPU memory only: on the host backend it reports nothing rather than
/// a number, and each `--placement-trigger` name parses to its trigger.
@Suite struct VMMPlacementStageTests {
    @Test func thePlacementStageIsAGPUStage() throws {
        let device = try openDevice(.cpu, ordinal: 0, hostCapacity: 1 << 30)
        let bench = VMMBench(device: device, chunks: 0, steps: 0, log: false, stages: ["placement"], placementTrigger: .slabRelease)
        let report = try bench.run()
        #expect(report.placement == nil)
        #expect(report.layouts.isEmpty && report.churn == nil)
    }

    @Test func theReachStageIsAGPUStage() throws {
        let device = try openDevice(.cpu, ordinal: 0, hostCapacity: 1 << 30)
        let report = try VMMBench(device: device, chunks: 0, steps: 0, log: false, stages: ["reach"]).run()
        #expect(report.reach.isEmpty && report.placement == nil)
        #expect(VMMBench.allStages.contains("reach"))
    }

    @Test func aReachReadIsRatedByItsMedianTiming() {
        let read = KVReachRead(pass: 0, layout: "blocked", tokens: 2048, kvBytes: 16 << 30, bytesRead: 512 << 20, millis: [0.3, 0.2, 0.1])
        #expect(read.medianMillis == 0.2)
        #expect(abs(read.tbps - Double(512 << 20) / 0.0002 / 1e12) < 1e-9)
    }

    @Test func everyTriggerNameParses() throws {
        for trigger in VMMBench.PlacementTrigger.allCases {
            #expect(VMMBench.PlacementTrigger(argument: trigger.rawValue) == trigger)
        }
        #expect(VMMBench.PlacementTrigger(argument: "bogus") == nil)
        let command = try BenchVMMCommand.parse(["--only", "placement", "--placement-trigger", "alloc-free-2g"])
        #expect(command.placementTrigger == .allocFree2G)
    }
}
