import Testing
@testable import GPU

@Suite struct CUDAErrorTests {
    @Test func namesCommonCodesWithoutADriver() {
        let error = CUDAError(code: 2, function: "cuMemCreate", api: nil)
        #expect(error.name == "CUDA_ERROR_OUT_OF_MEMORY")
        #expect(error.message == "out of memory")
        #expect(error.description == "cuMemCreate failed: CUDA_ERROR_OUT_OF_MEMORY (out of memory)")
        #expect(error.isOutOfMemory)
        #expect(!error.isNotReady)
    }

    @Test func unknownCodesGetANumericName() {
        let error = CUDAError(code: 12345, function: "cuFoo", api: nil)
        #expect(error.name == "CUDA_ERROR_12345")
        #expect(error.message.isEmpty)
        #expect(error.description == "cuFoo failed: CUDA_ERROR_12345")
    }

    @Test func publicInitializerNamesTheSameWayWithOrWithoutADriver() {
        // Whether or not a driver is loaded in this process, these are the names it reports.
        let error = CUDAError(code: 600, function: "cuEventQuery")
        #expect(error.name == "CUDA_ERROR_NOT_READY")
        #expect(error.description.hasPrefix("cuEventQuery failed: CUDA_ERROR_NOT_READY"))
    }

    @Test func namedStaticsCarryTheirCodes() {
        #expect(CUDAError.invalidValue.code == 1)
        #expect(CUDAError.outOfMemory.code == 2)
        #expect(CUDAError.noDevice.code == 100)
        #expect(CUDAError.notReady.code == 600)
        #expect(CUDAError.notSupported.code == 801)
        #expect(CUDAError.noDevice.description == "CUDA_ERROR_NO_DEVICE (no CUDA-capable device is detected)")
    }

    @Test func equalityComparesCodesOnly() {
        let failure = CUDAError(code: 2, function: "cuMemAlloc", api: nil)
        #expect(failure == .outOfMemory)
        #expect(failure != .invalidValue)
        #expect(Set([failure, CUDAError.outOfMemory]).count == 1)
        let thrown: any Error = failure
        var matched = false
        if let error = thrown as? CUDAError, case .outOfMemory = error { matched = true }
        #expect(matched)
    }
}

@Suite struct GPUErrorTests {
    @Test func libraryNotFoundNamesLibraryAndEveryPath() {
        let error = GPUError.libraryNotFound(
            library: "libnvrtc", tried: ["/opt/cuda/lib64/libnvrtc.so.13", "libnvrtc.so.13 (loader path)"],
            failures: ["/opt/cuda/lib64/libnvrtc.so.13: wrong ELF class"], consequence: "no kernels")
        #expect(
            error.description
                == "libnvrtc not found (tried: /opt/cuda/lib64/libnvrtc.so.13, libnvrtc.so.13 (loader path)) [/opt/cuda/lib64/libnvrtc.so.13: wrong ELF class]: no kernels"
        )
    }

    @Test func otherDescriptions() {
        #expect(GPUError.noDevice(reason: "none here").description == "no CUDA device: none here")
        #expect(GPUError.symbolNotFound(symbol: "cuMemMap", library: "libcuda.so.1").description
            == "symbol cuMemMap not found in libcuda.so.1")
        let compile = GPUError.compilationFailed(kernel: "rmsnorm", log: "rmsnorm.cu(3): error: oops\n\n", message: "NVRTC_ERROR_COMPILATION")
        #expect(compile.description == "NVRTC failed to compile rmsnorm: NVRTC_ERROR_COMPILATION\nrmsnorm.cu(3): error: oops")
        let io = GPUError.cacheIO(path: "/x/y.cubin", operation: "create", errno: 13)
        #expect(io.description == "kernel cache: cannot create /x/y.cubin: Permission denied")
        #expect(GPUError.virtualMemoryUnsupported(device: 1, name: "T4").description.contains("device 1 (T4)"))
    }
}
