import Glibc

/// Something about the machine, rather than one driver call, keeps the GPU from being used.
///
/// Errors are split in two: a driver call that returns a non-success `CUresult` throws
/// ``CUDAError`` directly (so callers can test `error == .outOfMemory`); everything
/// environmental (a library or symbol missing, no device, NVRTC rejecting a kernel, the
/// kernel cache's file system) throws `GPUError`.
public enum GPUError: Error, CustomStringConvertible, Sendable {
    /// No candidate of `library` could be opened. `tried` lists every name or path in the
    /// order tried; `failures` holds the loader's message for candidates that exist but failed
    /// to load (plain "no such file" misses are left out); `consequence` says what it means.
    case libraryNotFound(library: String, tried: [String], failures: [String], consequence: String)
    /// `library` loaded but lacks `symbol` (too old a version, or a stub).
    case symbolNotFound(symbol: String, library: String)
    /// The driver is missing, reports no devices, or the requested ordinal does not exist.
    case noDevice(reason: String)
    /// The device cannot back the KV cache with CUDA virtual memory (`cuMemCreate` et al.).
    case virtualMemoryUnsupported(device: Int, name: String)
    /// NVRTC rejected `kernel`; `log` is NVRTC's full program log.
    case compilationFailed(kernel: String, log: String, message: String)
    /// An NVRTC call other than the compile itself failed.
    case nvrtcCall(function: String, code: Int32, message: String)
    /// A cuBLASLt call returned a status other than `CUBLAS_STATUS_SUCCESS`.
    case cublasCall(function: String, status: Int32)
    /// The kernel cache could not `operation` on `path`; `errno` is the C errno.
    case cacheIO(path: String, operation: String, errno: Int32)
    /// The device lacks a feature a kernel needs (e.g. sm_90a instructions on another chip).
    case unsupportedDevice(String)

    public var description: String {
        switch self {
        case let .libraryNotFound(library, tried, failures, consequence):
            var text = "\(library) not found (tried: \(tried.joined(separator: ", ")))"
            if !failures.isEmpty { text += " [\(failures.joined(separator: "; "))]" }
            return text + ": " + consequence
        case let .symbolNotFound(symbol, library):
            return "symbol \(symbol) not found in \(library)"
        case let .noDevice(reason):
            return "no CUDA device: \(reason)"
        case let .virtualMemoryUnsupported(device, name):
            return "device \(device) (\(name)) does not support CUDA virtual memory management"
        case let .compilationFailed(kernel, log, message):
            let trimmed = log.trimmingTrailingWhitespace()
            return "NVRTC failed to compile \(kernel): \(message)" + (trimmed.isEmpty ? "" : "\n\(trimmed)")
        case let .nvrtcCall(function, code, message):
            return "\(function) failed: NVRTC error \(code) (\(message))"
        case let .cublasCall(function, status):
            return "\(function) failed: cuBLAS status \(status)"
        case let .cacheIO(path, operation, code):
            return "kernel cache: cannot \(operation) \(path): \(errnoText(code))"
        case let .unsupportedDevice(reason):
            return reason
        }
    }
}

/// `strerror` text for `code`, copied at once (glibc's buffer may be reused).
func errnoText(_ code: Int32) -> String {
    guard let text = strerror(code) else { return "errno \(code)" }
    return String(cString: text)
}

extension String {
    func trimmingTrailingWhitespace() -> String {
        var end = endIndex
        while end > startIndex {
            let previous = index(before: end)
            guard self[previous].isWhitespace || self[previous] == "\0" else { break }
            end = previous
        }
        return String(self[..<end])
    }
}
