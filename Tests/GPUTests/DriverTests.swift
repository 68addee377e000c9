import Testing
@testable import GPU

/// These pass both here (no CUDA: the errors must be clear) and on a GPU machine.
@Suite struct DriverTests {
    @Test func loadingTheDriverGivesADriverOrAClearError() {
        do {
            let driver = try CUDADriver.shared()
            #expect(driver.version >= 12000)
            #expect(driver.library.path == "libcuda.so.1")
            #expect(try CUDADriver.shared() === driver)
            #expect(CUDADriver.loadedIfAny === driver)
        } catch let error as GPUError {
            switch error {
            case let .libraryNotFound(library, tried, _, _):
                #expect(library == "libcuda.so.1")
                #expect(tried == ["libcuda.so.1 (loader path)"])
                #expect(error.description.hasPrefix("libcuda.so.1 not found (tried: libcuda.so.1"))
                #expect(error.description.hasSuffix("no CUDA driver on this machine"))
                #expect(CUDADriver.loadedIfAny == nil)
                // The failure is remembered, not retried.
                #expect(throws: GPUError.self) { try CUDADriver.shared() }
            case .noDevice:
                #expect(error.description.hasPrefix("no CUDA device: cuInit failed"))
            default:
                Issue.record("unexpected driver error: \(error)")
            }
        } catch {
            Issue.record("driver load threw a non-GPUError: \(error)")
        }
    }

    @Test func contextCreationFailsCleanlyWithoutADriver() {
        guard (try? CUDADriver.shared()) == nil else { return }
        #expect {
            _ = try CUDAContext(device: 0)
        } throws: { error in
            "\(error)".contains("libcuda.so.1")
        }
    }

    @Test func reportNeverThrowsAndExplainsItself() {
        let report = GPUReport.collect()
        if report.available {
            #expect(report.reason == nil)
            #expect(!report.devices.isEmpty)
            #expect(report.driverVersion != nil)
            #expect(report.devices.allSatisfy { $0.totalMemory > 0 && $0.multiprocessorCount > 0 })
        } else {
            let reason = report.reason ?? ""
            #expect(reason.hasPrefix("no CUDA device: "))
            if report.driverVersion == nil {
                #expect(reason.hasPrefix("no CUDA device: libcuda.so.1 not found"))
                #expect(report.devices.isEmpty)
                #expect(report.summary.contains("GPU: unavailable: no CUDA device: libcuda.so.1 not found"))
            }
        }
        // NVRTC and cuBLASLt either loaded with a version or say why not, naming the library.
        for (library, name) in [(report.nvrtc, "libnvrtc"), (report.cublasLt, "libcublasLt")] {
            if library.loaded {
                #expect(library.version != nil && library.path != nil)
            } else {
                #expect(library.error?.contains(name) == true)
                #expect(library.error?.contains("/usr/local/cuda/lib64/\(name).so.13") == true)
            }
        }
    }

    @Test func computeCapabilityNamesArchitectures() {
        let hopper = ComputeCapability(major: 9, minor: 0)
        #expect(hopper.architecture() == "sm_90")
        #expect(hopper.architecture(suffix: "a") == "sm_90a")
        #expect(hopper.description == "9.0")
        #expect(ComputeCapability(major: 8, minor: 9) < hopper)
    }
}

@Suite struct LoadOnceTests {
    final class Box: Sendable {
        let value: Int
        init(_ value: Int) { self.value = value }
    }

    final class Counter: @unchecked Sendable {
        // Mutated only inside LoadOnce's lock.
        var calls = 0
    }

    struct Failure: Error {}

    @Test func loadsOnceAcrossThreads() async throws {
        let once = LoadOnce<Box>()
        let counter = Counter()
        #expect(once.loaded == nil)
        let values = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<16 {
                group.addTask {
                    try once.get {
                        counter.calls += 1
                        return Box(42)
                    }.value
                }
            }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(values == Array(repeating: 42, count: 16))
        #expect(counter.calls == 1)
        #expect(once.loaded?.value == 42)
    }

    @Test func remembersFailure() {
        let once = LoadOnce<Box>()
        let counter = Counter()
        for _ in 0..<3 {
            #expect(throws: Failure.self) {
                try once.get {
                    counter.calls += 1
                    throw Failure()
                }
            }
        }
        #expect(counter.calls == 1)
        #expect(once.loaded == nil)
    }
}
