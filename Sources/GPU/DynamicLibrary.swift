import Glibc

/// A shared library opened with `dlopen`, the only way this module reaches CUDA (nothing is
/// linked at build time, so vtensor builds and tests on machines without it).
///
/// Libraries are opened once per process and never closed: the function tables built from them
/// live as long as the process. `@unchecked Sendable`: `handle` and `path` never change after
/// `init`, and `dlsym` is thread-safe.
public final class DynamicLibrary: @unchecked Sendable {
    /// The candidate that opened (a path, or a bare name resolved by the loader).
    public let path: String
    let handle: UnsafeMutableRawPointer

    private init(path: String, handle: UnsafeMutableRawPointer) {
        self.path = path
        self.handle = handle
    }

    /// Opens the first of `candidates` that `dlopen(RTLD_NOW | RTLD_LOCAL)` accepts; a path with
    /// a slash is opened as is, a bare name goes through the default loader path.
    ///
    /// - Throws: ``GPUError/libraryNotFound(library:tried:failures:consequence:)`` naming
    ///   `library`, every candidate, and the loader's message for any that exist but failed.
    public static func open(_ library: String, candidates: [String], consequence: String) throws -> DynamicLibrary {
        precondition(!candidates.isEmpty, "no candidates for \(library)")
        var tried: [String] = []
        var failures: [String] = []
        for candidate in candidates {
            if let handle = dlopen(candidate, RTLD_NOW | RTLD_LOCAL) {
                return DynamicLibrary(path: candidate, handle: handle)
            }
            let message = dlerror().map { String(cString: $0) } ?? "unknown dlopen error"
            tried.append(candidate.contains("/") ? candidate : "\(candidate) (loader path)")
            if !message.contains("No such file or directory") { failures.append(message) }
        }
        throw GPUError.libraryNotFound(library: library, tried: tried, failures: failures, consequence: consequence)
    }

    /// The address of `symbol`, or nil when the library lacks it.
    public func address(of symbol: String) -> UnsafeMutableRawPointer? {
        dlsym(handle, symbol)
    }

    /// The address of the first of `names` the library exports.
    ///
    /// - Throws: ``GPUError/symbolNotFound(symbol:library:)`` naming the first name and this library.
    public func require(_ names: [String]) throws -> UnsafeMutableRawPointer {
        precondition(!names.isEmpty, "no symbol names given")
        for name in names {
            if let pointer = address(of: name) { return pointer }
        }
        throw GPUError.symbolNotFound(symbol: names.joined(separator: " or "), library: path)
    }

    /// ``require(_:)`` cast to the C function type `F` (a `PFN_*` typedef from ccuda.h).
    public func function<F>(_ names: String..., as type: F.Type) throws -> F {
        let pointer = try require(names)
        // dlsym returns the function's address; its C type is the PFN typedef the caller names.
        return unsafeBitCast(pointer, to: F.self)
    }
}
