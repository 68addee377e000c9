import CCUDA

/// A CUDA driver call that returned something other than `CUDA_SUCCESS`.
///
/// Modelled on swift-system's `Errno`: one struct keyed by the raw `CUresult`, with named
/// statics for the codes callers branch on. Equality and hashing look at `code` only, so
/// `error == .outOfMemory` and `case .notReady = error` work whatever function failed.
public struct CUDAError: Error, CustomStringConvertible, Hashable, Sendable {
    /// The raw `CUresult`.
    public let code: Int32
    /// The enum name, e.g. `CUDA_ERROR_OUT_OF_MEMORY`: from `cuGetErrorName` when the driver is
    /// loaded, else from a built-in table, else `CUDA_ERROR_<code>`.
    public let name: String
    /// The C function that failed, e.g. `cuMemCreate`; empty for the named statics.
    public let function: String
    /// The driver's text (`cuGetErrorString`), or the built-in one; empty when unknown.
    public let message: String

    /// Names `code` with the process's driver if it is already loaded (this never loads it).
    public init(code: Int32, function: String = "") {
        self.init(code: code, function: function, api: CUDADriver.loadedIfAny?.api)
    }

    /// Names `code` with `api` when given; used while the driver itself is still loading.
    init(code: Int32, function: String, api: DriverAPI?) {
        self.code = code
        self.function = function
        let builtIn = CUDAError.builtInNames[code]
        var name = builtIn?.name ?? "CUDA_ERROR_\(code)"
        var message = builtIn?.message ?? ""
        if let api {
            // cuGetErrorName/cuGetErrorString return static strings owned by the driver.
            var text: UnsafePointer<CChar>? = nil
            if api.cuGetErrorName(code, &text) == 0, let text { name = String(cString: text) }
            text = nil
            if api.cuGetErrorString(code, &text) == 0, let text { message = String(cString: text) }
        }
        self.name = name
        self.message = message
    }

    public var description: String {
        var text = function.isEmpty ? name : "\(function) failed: \(name)"
        if !message.isEmpty { text += " (\(message))" }
        return text
    }

    public static func == (lhs: CUDAError, rhs: CUDAError) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    public static let invalidValue = CUDAError(code: 1, function: "", api: nil)
    public static let outOfMemory = CUDAError(code: 2, function: "", api: nil)
    public static let notInitialized = CUDAError(code: 3, function: "", api: nil)
    public static let noDevice = CUDAError(code: 100, function: "", api: nil)
    public static let invalidDevice = CUDAError(code: 101, function: "", api: nil)
    public static let notFound = CUDAError(code: 500, function: "", api: nil)
    public static let notReady = CUDAError(code: 600, function: "", api: nil)
    public static let illegalAddress = CUDAError(code: 700, function: "", api: nil)
    public static let notSupported = CUDAError(code: 801, function: "", api: nil)

    public var isOutOfMemory: Bool { code == CUDAError.outOfMemory.code }
    public var isNotReady: Bool { code == CUDAError.notReady.code }
    public var isNotSupported: Bool { code == CUDAError.notSupported.code }

    /// Names and texts of common codes (CUDA 12/13 `cuda.h`), so errors read well even when
    /// the driver could not be asked.
    static let builtInNames: [Int32: (name: String, message: String)] = [
        0: ("CUDA_SUCCESS", "no error"),
        1: ("CUDA_ERROR_INVALID_VALUE", "invalid argument"),
        2: ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory"),
        3: ("CUDA_ERROR_NOT_INITIALIZED", "initialization error"),
        4: ("CUDA_ERROR_DEINITIALIZED", "driver shutting down"),
        34: ("CUDA_ERROR_STUB_LIBRARY", "CUDA driver is a stub library"),
        100: ("CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"),
        101: ("CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"),
        200: ("CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"),
        201: ("CUDA_ERROR_INVALID_CONTEXT", "invalid device context"),
        209: ("CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"),
        218: ("CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"),
        400: ("CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"),
        500: ("CUDA_ERROR_NOT_FOUND", "named symbol not found"),
        600: ("CUDA_ERROR_NOT_READY", "device not ready"),
        700: ("CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"),
        701: ("CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"),
        719: ("CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"),
        801: ("CUDA_ERROR_NOT_SUPPORTED", "operation not supported"),
        999: ("CUDA_ERROR_UNKNOWN", "unknown error"),
    ]
}
