import Support

/// Everything a compiled kernel depends on. Two keys with equal ``text`` may share a CUBIN.
public struct KernelCacheKey: Hashable, Sendable {
    public var source: String
    /// The complete NVRTC option list, architecture included.
    public var options: [String]
    public var computeCapability: ComputeCapability
    public var nvrtcVersion: NVRTC.Version
    public var driverVersion: Int32

    public init(
        source: String, options: [String], computeCapability: ComputeCapability, nvrtcVersion: NVRTC.Version,
        driverVersion: Int32
    ) {
        self.source = source
        self.options = options
        self.computeCapability = computeCapability
        self.nvrtcVersion = nvrtcVersion
        self.driverVersion = driverVersion
    }

    /// The canonical key, stored in the sidecar file. Options and source are length-prefixed,
    /// so no choice of their contents can make two different keys read the same.
    public var text: String {
        var text = "vtensor kernel cache key 1\n"
        text += "compute-capability \(computeCapability)\n"
        text += "nvrtc \(nvrtcVersion)\n"
        text += "driver \(driverVersion)\n"
        text += "options \(options.count)\n"
        for option in options { text += "\(option.utf8.count) \(option)\n" }
        text += "source \(source.utf8.count)\n"
        text += source
        return text
    }

    /// The first 128 bits of SHA-256 of ``text``, as 32 hex digits: the cache file name.
    public var hash: String { SHA256.hex(Array(SHA256.hash(text.utf8).prefix(16))) }
}

/// CUBINs on disk: `<directory>/<hash>.cubin` plus `<hash>.key` holding the full key text.
///
/// A file is a hit only when its sidecar equals the key exactly, so a hash collision or a
/// stale entry reads as a miss. Writes go to a temporary file renamed into place (CUBIN
/// first, sidecar second), so processes compiling the same kernel at once never see a
/// partial file. Not thread-aware itself: every operation is a handful of system calls.
public struct KernelCache: Sendable {
    public let directory: String

    public init(directory: String) {
        precondition(!directory.isEmpty, "empty kernel cache directory")
        self.directory = directory
    }

    /// `$VTENSOR_CACHE_DIR/kernels` if set, else `$XDG_CACHE_HOME/vtensor/kernels` (only when
    /// absolute, as the XDG spec requires), else `$HOME/.cache/vtensor/kernels`, else nil
    /// (no disk cache).
    public static func defaultDirectory(environment: [String: String]) -> String? {
        ProcessEnvironment.cacheRoot(environment)?.joiningPath("kernels")
    }

    public func binaryPath(for key: KernelCacheKey) -> String { directory.joiningPath(key.hash + ".cubin") }
    public func keyPath(for key: KernelCacheKey) -> String { directory.joiningPath(key.hash + ".key") }

    /// The stored CUBIN for `key`, or nil when absent, unreadable, empty, or stored under a
    /// different key text.
    public func load(_ key: KernelCacheKey) -> [UInt8]? {
        guard let stored = FileSystem.contents(of: keyPath(for: key)), stored.elementsEqual(key.text.utf8),
            let binary = FileSystem.contents(of: binaryPath(for: key)), !binary.isEmpty
        else { return nil }
        return binary
    }

    /// Stores `binary` for `key`, creating the directory if needed.
    ///
    /// - Throws: ``GPUError/cacheIO(path:operation:errno:)``.
    public func store(_ binary: [UInt8], for key: KernelCacheKey) throws {
        do {
            try FileSystem.createDirectories(directory)
            try FileSystem.writeAtomically(binaryPath(for: key), bytes: binary)
            try FileSystem.writeAtomically(keyPath(for: key), bytes: Array(key.text.utf8))
        } catch let error as FileSystemError {
            throw GPUError.cacheIO(path: error.path, operation: error.operation, errno: error.errno)
        }
    }
}
