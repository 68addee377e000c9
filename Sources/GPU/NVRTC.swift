import CCUDA
import Glibc
import Support

/// NVRTC, CUDA's runtime C++ compiler, loaded once per process from the first of
/// ``CUDALibraries/nvrtcCandidates(environment:)`` that opens. NVRTC needs no driver or GPU.
///
/// `@unchecked Sendable`: all stored properties are immutable, and NVRTC compiles distinct
/// programs concurrently.
public final class NVRTC: @unchecked Sendable {
    /// NVRTC's version (`nvrtcVersion`), e.g. 13.0.
    public struct Version: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
        public var major: Int
        public var minor: Int
        public init(major: Int, minor: Int) {
            self.major = major
            self.minor = minor
        }
        public var description: String { "\(major).\(minor)" }
        public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.major, lhs.minor) < (rhs.major, rhs.minor) }
    }

    /// The NVRTC functions vtensor calls. `@unchecked Sendable`: immutable C function addresses.
    public struct API: @unchecked Sendable {
        public let nvrtcVersion: PFN_nvrtcVersion
        public let nvrtcGetErrorString: PFN_nvrtcGetErrorString
        public let nvrtcCreateProgram: PFN_nvrtcCreateProgram
        public let nvrtcDestroyProgram: PFN_nvrtcDestroyProgram
        public let nvrtcCompileProgram: PFN_nvrtcCompileProgram
        public let nvrtcGetProgramLogSize: PFN_nvrtcGetProgramLogSize
        public let nvrtcGetProgramLog: PFN_nvrtcGetProgramLog
        public let nvrtcGetCUBINSize: PFN_nvrtcGetCUBINSize
        public let nvrtcGetCUBIN: PFN_nvrtcGetCUBIN

        init(_ library: DynamicLibrary) throws {
            nvrtcVersion = try library.function("nvrtcVersion", as: PFN_nvrtcVersion.self)
            nvrtcGetErrorString = try library.function("nvrtcGetErrorString", as: PFN_nvrtcGetErrorString.self)
            nvrtcCreateProgram = try library.function("nvrtcCreateProgram", as: PFN_nvrtcCreateProgram.self)
            nvrtcDestroyProgram = try library.function("nvrtcDestroyProgram", as: PFN_nvrtcDestroyProgram.self)
            nvrtcCompileProgram = try library.function("nvrtcCompileProgram", as: PFN_nvrtcCompileProgram.self)
            nvrtcGetProgramLogSize = try library.function("nvrtcGetProgramLogSize", as: PFN_nvrtcGetProgramLogSize.self)
            nvrtcGetProgramLog = try library.function("nvrtcGetProgramLog", as: PFN_nvrtcGetProgramLog.self)
            nvrtcGetCUBINSize = try library.function("nvrtcGetCUBINSize", as: PFN_nvrtcGetCUBINSize.self)
            nvrtcGetCUBIN = try library.function("nvrtcGetCUBIN", as: PFN_nvrtcGetCUBIN.self)
        }
    }

    public let api: API
    public let library: DynamicLibrary
    public let version: Version

    private static let once = LoadOnce<NVRTC>()

    /// The process's NVRTC, loaded on first use.
    ///
    /// - Throws: ``GPUError/libraryNotFound(library:tried:failures:consequence:)`` listing every
    ///   path tried, or ``GPUError/symbolNotFound(symbol:library:)``.
    public static func shared() throws -> NVRTC {
        try once.get { try NVRTC(environment: ProcessEnvironment.current()) }
    }

    private init(environment: [String: String]) throws {
        let library = try DynamicLibrary.open(
            "libnvrtc (libnvrtc.so.13, libnvrtc.so.12, libnvrtc.so)",
            candidates: CUDALibraries.nvrtcCandidates(environment: environment),
            consequence: "runtime kernel compilation unavailable; install the CUDA toolkit's NVRTC or set CUDA_HOME")
        let api = try API(library)
        var major: Int32 = 0
        var minor: Int32 = 0
        let result = api.nvrtcVersion(&major, &minor)
        if result != NVRTC_SUCCESS {
            throw GPUError.nvrtcCall(function: "nvrtcVersion", code: result, message: NVRTC.message(result, api))
        }
        self.api = api
        self.library = library
        self.version = Version(major: Int(major), minor: Int(minor))
    }

    /// Compiles `source` to a CUBIN for the architecture named in `options`
    /// (`--gpu-architecture=sm_XY`). NVRTC rejects `-O3` (it always optimises; see `-dopt`).
    ///
    /// - Throws: ``GPUError/compilationFailed(kernel:log:message:)`` with NVRTC's full log.
    public func compile(source: String, name: String, options: [String]) throws -> [UInt8] {
        try compileWithLog(source: source, name: name, options: options).cubin
    }

    /// `compile`, also returning NVRTC's log on success (warnings; with
    /// `--ptxas-options=-v`, each kernel's registers, shared memory and spills).
    public func compileWithLog(source: String, name: String, options: [String]) throws -> (cubin: [UInt8], log: String) {
        var program: nvrtcProgram? = nil
        try call(api.nvrtcCreateProgram(&program, source, name, 0, nil, nil), "nvrtcCreateProgram")
        defer { _ = api.nvrtcDestroyProgram(&program) }

        let result = withCStrings(options) { api.nvrtcCompileProgram(program, Int32(options.count), $0) }
        if result != NVRTC_SUCCESS {
            throw GPUError.compilationFailed(kernel: name, log: log(program), message: NVRTC.message(result, api))
        }
        var size = 0
        try call(api.nvrtcGetCUBINSize(program, &size), "nvrtcGetCUBINSize")
        guard size > 0 else {
            throw GPUError.compilationFailed(
                kernel: name, log: log(program),
                message: "no CUBIN produced; pass a real architecture (--gpu-architecture=sm_XY), not compute_XY")
        }
        var cubin = [UInt8](repeating: 0, count: size)
        try cubin.withUnsafeMutableBytes { buffer in
            try call(
                api.nvrtcGetCUBIN(program, buffer.baseAddress!.assumingMemoryBound(to: CChar.self)), "nvrtcGetCUBIN")
        }
        return (cubin, log(program))
    }

    /// `nvrtcGetProgramLog`: warnings and errors, empty if NVRTC has none.
    private func log(_ program: nvrtcProgram?) -> String {
        var size = 0
        guard api.nvrtcGetProgramLogSize(program, &size) == NVRTC_SUCCESS, size > 1 else { return "" }
        var text = [CChar](repeating: 0, count: size + 1)
        guard api.nvrtcGetProgramLog(program, &text) == NVRTC_SUCCESS else { return "" }
        return text.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    }

    private func call(_ result: nvrtcResult, _ function: String) throws {
        if result != NVRTC_SUCCESS {
            throw GPUError.nvrtcCall(function: function, code: result, message: NVRTC.message(result, api))
        }
    }

    private static func message(_ result: nvrtcResult, _ api: API) -> String {
        api.nvrtcGetErrorString(result).map { String(cString: $0) } ?? "NVRTC error \(result)"
    }
}

/// Calls `body` with a C array of C strings copied from `strings`, valid only inside `body`.
func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws -> R) rethrows -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
    return try pointers.withUnsafeBufferPointer { try body($0.baseAddress) }
}
