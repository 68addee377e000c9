import CCUDA

/// The CUDA driver (`libcuda.so.1`), opened and initialised once per process.
///
/// Each function is resolved through `cuGetProcAddress_v2` at the CUDA 12.0 ABI (the one
/// ccuda.h declares, which CUDA 13 drivers still serve), so a newer driver cannot hand us a
/// function with a changed signature. If that entry point is missing or refuses a symbol, the
/// explicitly versioned export is taken with `dlsym` instead (``DriverAPI/fallbackNames(for:)``).
///
/// `@unchecked Sendable`: every stored property is immutable after `init`, and the driver API
/// is thread-safe.
public final class CUDADriver: @unchecked Sendable {
    /// The raw function table, for callers that need the C API directly.
    public let api: DriverAPI
    public let library: DynamicLibrary
    /// `cuDriverGetVersion`, e.g. 13000 for CUDA 13.0.
    public let version: Int32
    /// `cuDeviceGetCount` after `cuInit`.
    public let deviceCount: Int
    /// Functions `cuGetProcAddress_v2` did not serve, found with `dlsym` instead (empty normally).
    public let resolvedWithDlsym: [String]

    /// The CUDA version requested from `cuGetProcAddress_v2`: 12.0, the ABI of ccuda.h.
    public static let abiVersion: Int32 = 12000

    private static let once = LoadOnce<CUDADriver>()

    /// The process's driver, loaded on first use (thread-safe; a failure is remembered).
    ///
    /// - Throws: ``GPUError/libraryNotFound(library:tried:failures:consequence:)`` when there is
    ///   no `libcuda.so.1`, ``GPUError/symbolNotFound(symbol:library:)`` for a driver too old,
    ///   ``GPUError/noDevice(reason:)`` when `cuInit` fails, ``CUDAError`` for later calls.
    public static func shared() throws -> CUDADriver {
        try once.get { try CUDADriver() }
    }

    /// The driver if some earlier call loaded it; never loads.
    public static var loadedIfAny: CUDADriver? { once.loaded }

    private init() throws {
        let library = try DynamicLibrary.open(
            "libcuda.so.1", candidates: CUDALibraries.driverCandidates,
            consequence: "no CUDA driver on this machine")
        let getProcAddress = library.address(of: "cuGetProcAddress_v2").map {
            // dlsym returned the address of cuGetProcAddress_v2, declared as PFN_cuGetProcAddress_v2.
            unsafeBitCast($0, to: PFN_cuGetProcAddress_v2.self)
        }
        var fallbacks: [String] = []
        let api = try DriverAPI { symbol in
            if let getProcAddress {
                var pointer: UnsafeMutableRawPointer? = nil
                var status: Int32 = 0
                // Flags 0 = CU_GET_PROC_ADDRESS_DEFAULT; status 0 = CU_GET_PROC_ADDRESS_SUCCESS.
                if getProcAddress(symbol, &pointer, CUDADriver.abiVersion, 0, &status) == 0, status == 0,
                    let pointer
                {
                    return pointer
                }
            }
            fallbacks.append(symbol)
            return try library.require(DriverAPI.fallbackNames(for: symbol))
        }
        let initResult = api.cuInit(0)
        if initResult != 0 {
            let error = CUDAError(code: initResult, function: "cuInit", api: api)
            throw GPUError.noDevice(reason: error.description)
        }
        var version: Int32 = 0
        var count: Int32 = 0
        try CUDADriver.check(api.cuDriverGetVersion(&version), "cuDriverGetVersion", api: api)
        try CUDADriver.check(api.cuDeviceGetCount(&count), "cuDeviceGetCount", api: api)
        self.api = api
        self.library = library
        self.version = version
        self.deviceCount = Int(count)
        self.resolvedWithDlsym = fallbacks
    }

    /// Throws ``CUDAError`` for `function` unless `result` is `CUDA_SUCCESS`. The error's name
    /// and text are captured at once, while the driver state that produced them is current.
    @inline(__always)
    public func check(_ result: CUresult, _ function: String) throws {
        if result != 0 { throw CUDAError(code: result, function: function, api: api) }
    }

    @inline(__always)
    static func check(_ result: CUresult, _ function: String, api: DriverAPI) throws {
        if result != 0 { throw CUDAError(code: result, function: function, api: api) }
    }

    /// `version` as "major.minor", e.g. "13.0".
    public var versionString: String { "\(version / 1000).\(version % 1000 / 10)" }
}
