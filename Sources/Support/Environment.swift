import Glibc

/// The environment variables vtensor reads, gathered into a dictionary so that every
/// decision made from them (library search, cache directory) is a pure, testable function.
public enum ProcessEnvironment {
    /// Names read by ``current()``.
    public static let names = ["CUDA_HOME", "CUDA_PATH", "VTENSOR_CACHE_DIR", "XDG_CACHE_HOME", "HOME"]

    /// Reads ``names`` with `getenv` (not `environ`, which Swift 6 treats as shared mutable state).
    public static func current() -> [String: String] {
        var environment: [String: String] = [:]
        for name in names {
            if let value = getenv(name) { environment[name] = String(cString: value) }
        }
        return environment
    }
}

extension ProcessEnvironment {
    /// vtensor's cache root: `$VTENSOR_CACHE_DIR` if set, else `$XDG_CACHE_HOME/vtensor` (only
    /// when absolute, as the XDG spec requires), else `$HOME/.cache/vtensor`, else nil.
    /// Compiled kernels live in `ROOT/kernels`, fetched models in `ROOT/assets`.
    public static func cacheRoot(_ environment: [String: String]) -> String? {
        if let root = environment.nonEmpty("VTENSOR_CACHE_DIR") { return root }
        if let root = environment.nonEmpty("XDG_CACHE_HOME"), root.hasPrefix("/") { return root.joiningPath("vtensor") }
        if let home = environment.nonEmpty("HOME") { return home.joiningPath(".cache/vtensor") }
        return nil
    }
}

extension Dictionary where Key == String, Value == String {
    /// The value of `name` when set and not empty, without trailing slashes (a lone "/" stays).
    public func nonEmpty(_ name: String) -> String? {
        guard var value = self[name], !value.isEmpty else { return nil }
        while value.count > 1 && value.hasSuffix("/") { value.removeLast() }
        return value
    }
}

extension String {
    /// `self + "/" + component`, without doubling a trailing slash.
    public func joiningPath(_ component: String) -> String { hasSuffix("/") ? self + component : self + "/" + component }
}
