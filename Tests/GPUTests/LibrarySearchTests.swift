import Testing
@testable import GPU

@Suite struct LibrarySearchTests {
    @Test func nvrtcWithoutEnvironmentTriesToolkitThenLoaderNewestFirst() {
        #expect(CUDALibraries.nvrtcCandidates(environment: [:]) == [
            "/usr/local/cuda/lib64/libnvrtc.so.13", "libnvrtc.so.13",
            "/usr/local/cuda/lib64/libnvrtc.so.12", "libnvrtc.so.12",
            "libnvrtc.so",
        ])
    }

    @Test func cudaHomeAndCudaPathComeFirstForEachVersion() {
        let environment = ["CUDA_HOME": "/opt/cuda-13/", "CUDA_PATH": "/opt/other", "HOME": "/root"]
        #expect(CUDALibraries.cublasLtCandidates(environment: environment) == [
            "/opt/cuda-13/lib64/libcublasLt.so.13", "/opt/other/lib64/libcublasLt.so.13",
            "/usr/local/cuda/lib64/libcublasLt.so.13", "libcublasLt.so.13",
            "/opt/cuda-13/lib64/libcublasLt.so.12", "/opt/other/lib64/libcublasLt.so.12",
            "/usr/local/cuda/lib64/libcublasLt.so.12", "libcublasLt.so.12",
            "libcublasLt.so",
        ])
    }

    @Test func duplicateRootsAndEmptyValuesAreSkipped() {
        let environment = ["CUDA_HOME": "/usr/local/cuda", "CUDA_PATH": ""]
        let list = CUDALibraries.nvrtcCandidates(environment: environment)
        #expect(list.first == "/usr/local/cuda/lib64/libnvrtc.so.13")
        #expect(Set(list).count == list.count)
        #expect(list.count == 5)
        #expect(CUDALibraries.includeDirectoryCandidates(environment: environment) == ["/usr/local/cuda/include"])
    }

    @Test func driverIsLoadedByNameOnly() {
        #expect(CUDALibraries.driverCandidates == ["libcuda.so.1"])
    }

    @Test func includeDirectoriesFollowTheRoots() {
        #expect(CUDALibraries.includeDirectoryCandidates(environment: ["CUDA_PATH": "/c"]) == ["/c/include", "/usr/local/cuda/include"])
        let directory = TemporaryDirectory()
        directory.write("cuda.h", "// header")
        #expect(CUDALibraries.toolkitIncludeDirectory(environment: ["CUDA_HOME": directory.path]) == nil)
        let root = TemporaryDirectory()
        mkdirForTest(root.file("include"))
        root.write("include/cuda.h", "")
        #expect(CUDALibraries.toolkitIncludeDirectory(environment: ["CUDA_HOME": root.path]) == root.path + "/include")
    }

    @Test func versionedDriverSymbolsNeverFallBackToLegacyNames() {
        #expect(DriverAPI.fallbackNames(for: "cuMemAlloc") == ["cuMemAlloc_v2"])
        #expect(DriverAPI.fallbackNames(for: "cuMemGetInfo") == ["cuMemGetInfo_v2"])
        #expect(DriverAPI.fallbackNames(for: "cuDevicePrimaryCtxRelease") == ["cuDevicePrimaryCtxRelease_v2"])
        #expect(DriverAPI.fallbackNames(for: "cuEventElapsedTime") == ["cuEventElapsedTime_v2", "cuEventElapsedTime"])
        #expect(DriverAPI.fallbackNames(for: "cuMemMap") == ["cuMemMap"])
        #expect(DriverAPI.fallbackNames(for: "cuMemsetD8Async") == ["cuMemsetD8Async"])
    }
}

@Suite struct DynamicLibraryTests {
    @Test func missingLibraryErrorListsEveryCandidate() {
        do {
            _ = try DynamicLibrary.open(
                "libvtensor-missing", candidates: ["/nonexistent/libvtensor-missing.so.1", "libvtensor-missing.so.1"],
                consequence: "tests only")
            Issue.record("opening a missing library succeeded")
        } catch let error as GPUError {
            guard case let .libraryNotFound(library, tried, failures, _) = error else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(library == "libvtensor-missing")
            #expect(tried == ["/nonexistent/libvtensor-missing.so.1", "libvtensor-missing.so.1 (loader path)"])
            #expect(failures.isEmpty)
            #expect(error.description.hasSuffix(": tests only"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func aFileThatIsNotALibraryReportsTheLoaderMessage() throws {
        let directory = TemporaryDirectory()
        directory.write("libfake.so", "not an ELF file")
        #expect {
            _ = try DynamicLibrary.open("libfake", candidates: [directory.file("libfake.so")], consequence: "x")
        } throws: { error in
            guard case let .libraryNotFound(_, _, failures, _)? = error as? GPUError else { return false }
            return failures.count == 1 && failures[0].contains("libfake.so")
        }
    }

    @Test func resolvesAndCallsARealFunction() throws {
        let library = try DynamicLibrary.open("libm", candidates: ["libvtensor-missing.so", "libm.so.6"], consequence: "x")
        #expect(library.path == "libm.so.6")
        typealias Cosine = @convention(c) (Double) -> Double
        let cosine = try library.function("cos", as: Cosine.self)
        #expect(cosine(0) == 1)
        #expect(library.address(of: "vtensor_no_such_symbol") == nil)
        #expect(throws: GPUError.self) { try library.require(["vtensor_no_such_symbol"]) }
        do {
            _ = try library.require(["vtensor_a", "vtensor_b"])
            Issue.record("resolving missing symbols succeeded")
        } catch {
            #expect("\(error)" == "symbol vtensor_a or vtensor_b not found in libm.so.6")
        }
    }
}
