import Glibc

/// A file operation that failed: what was attempted on which path, and the C `errno`.
public struct FileSystemError: Error, Equatable, Sendable, CustomStringConvertible {
    public let path: String
    /// What was attempted, e.g. "create directory", "write", "rename into place".
    public let operation: String
    public let errno: Int32

    public init(path: String, operation: String, errno: Int32) {
        self.path = path
        self.operation = operation
        self.errno = errno
    }

    public var description: String {
        let reason = strerror(errno).map { String(cString: $0) } ?? "errno \(errno)"
        return "cannot \(operation) \(path): \(reason)"
    }
}

/// The few POSIX file operations the kernel cache needs (this module avoids Foundation).
public enum FileSystem {
    public static func isRegularFile(_ path: String) -> Bool { fileType(path) == S_IFREG }
    public static func isDirectory(_ path: String) -> Bool { fileType(path) == S_IFDIR }

    private static func fileType(_ path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & S_IFMT
    }

    /// `mkdir -p`: creates `path` and any missing parents (mode 0755 before umask).
    ///
    /// - Throws: ``FileSystemError`` naming the component that could not be created.
    public static func createDirectories(_ path: String) throws {
        precondition(!path.isEmpty, "empty directory path")
        if isDirectory(path) { return }
        var prefix = path.hasPrefix("/") ? "/" : ""
        for component in path.split(separator: "/", omittingEmptySubsequences: true) {
            prefix += component
            if mkdir(prefix, 0o755) != 0 {
                let code = errno
                guard code == EEXIST, isDirectory(prefix) else {
                    throw FileSystemError(path: prefix, operation: "create directory", errno: code == EEXIST ? ENOTDIR : code)
                }
            }
            prefix += "/"
        }
    }

    /// The whole file, or nil when it does not exist or cannot be read.
    public static func contents(of path: String) -> [UInt8]? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return nil }
        defer { close(descriptor) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let count = chunk.withUnsafeMutableBytes { Glibc.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                return nil
            }
            if count == 0 { return bytes }
            bytes.append(contentsOf: chunk[0..<count])
        }
    }

    /// Writes `bytes` to a unique temporary file beside `path`, then `rename`s it over `path`,
    /// so readers in any process see either the old file, or the new one complete.
    ///
    /// - Throws: ``FileSystemError``; the temporary file is removed first.
    public static func writeAtomically(_ path: String, bytes: [UInt8]) throws {
        let temporary = "\(path).tmp.\(getpid()).\(UInt64.random(in: 0...UInt64.max))"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            throw FileSystemError(path: temporary, operation: "create", errno: errno)
        }
        var written = 0
        let failure: Int32? = bytes.withUnsafeBytes { buffer in
            while written < buffer.count {
                let count = write(descriptor, buffer.baseAddress! + written, buffer.count - written)
                if count < 0 {
                    if errno == EINTR { continue }
                    return errno
                }
                written += count
            }
            return nil
        }
        let closeFailed = close(descriptor) != 0 ? errno : nil
        if let code = failure ?? closeFailed {
            unlink(temporary)
            throw FileSystemError(path: temporary, operation: "write", errno: code)
        }
        if rename(temporary, path) != 0 {
            let code = errno
            unlink(temporary)
            throw FileSystemError(path: path, operation: "rename into place", errno: code)
        }
    }
}
