import CCUDA
import Support

/// cuBLASLt, loaded once per process from the first of
/// ``CUDALibraries/cublasLtCandidates(environment:)`` that opens. Only the handle and version
/// entry points are resolved now; the matmul ones arrive with the model runtime (resolve more
/// through ``library``).
///
/// `@unchecked Sendable`: all stored properties are immutable.
public final class CuBLASLt: @unchecked Sendable {
    /// `@unchecked Sendable`: immutable C function addresses.
    public struct API: @unchecked Sendable {
        public let cublasLtCreate: PFN_cublasLtCreate
        public let cublasLtDestroy: PFN_cublasLtDestroy
        public let cublasLtGetVersion: PFN_cublasLtGetVersion

        init(_ library: DynamicLibrary) throws {
            cublasLtCreate = try library.function("cublasLtCreate", as: PFN_cublasLtCreate.self)
            cublasLtDestroy = try library.function("cublasLtDestroy", as: PFN_cublasLtDestroy.self)
            cublasLtGetVersion = try library.function("cublasLtGetVersion", as: PFN_cublasLtGetVersion.self)
        }
    }

    public let api: API
    public let library: DynamicLibrary
    /// `cublasLtGetVersion`: major * 10000 + minor * 100 + patch, e.g. 130100 for 13.1.0.
    public let version: Int

    /// ``version`` as "major.minor.patch".
    public var versionString: String { "\(version / 10000).\(version % 10000 / 100).\(version % 100)" }

    private static let once = LoadOnce<CuBLASLt>()

    /// The process's cuBLASLt, loaded on first use.
    ///
    /// - Throws: ``GPUError/libraryNotFound(library:tried:failures:consequence:)`` or
    ///   ``GPUError/symbolNotFound(symbol:library:)``.
    public static func shared() throws -> CuBLASLt {
        try once.get { try CuBLASLt(environment: ProcessEnvironment.current()) }
    }

    private init(environment: [String: String]) throws {
        let library = try DynamicLibrary.open(
            "libcublasLt (libcublasLt.so.13, libcublasLt.so.12, libcublasLt.so)",
            candidates: CUDALibraries.cublasLtCandidates(environment: environment),
            consequence: "cuBLASLt matrix multiplication unavailable; install the CUDA toolkit's cuBLAS or set CUDA_HOME")
        api = try API(library)
        self.library = library
        version = api.cublasLtGetVersion()
    }

    /// `cublasLtCreate` with `context` current; the handle is destroyed when released.
    public func makeHandle(context: CUDAContext) throws -> CuBLASLtHandle {
        try context.makeCurrent()
        return try CuBLASLtHandle(library: self, context: context)
    }
}

/// A cuBLASLt handle (`cublasLtCreate`), destroyed in `deinit` (`cublasLtDestroy`).
///
/// `@unchecked Sendable`: the handle never changes; cuBLASLt handles may be shared by threads.
public final class CuBLASLtHandle: @unchecked Sendable {
    public let library: CuBLASLt
    public let context: CUDAContext
    public let handle: cublasLtHandle_t

    fileprivate init(library: CuBLASLt, context: CUDAContext) throws {
        var handle: cublasLtHandle_t? = nil
        let status = library.api.cublasLtCreate(&handle)
        guard status == CUBLAS_STATUS_SUCCESS, let handle else {
            throw GPUError.cublasCall(function: "cublasLtCreate", status: status)
        }
        self.library = library
        self.context = context
        self.handle = handle
    }

    deinit {
        _ = library.api.cublasLtDestroy(handle)
    }
}
