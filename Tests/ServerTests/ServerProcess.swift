import Foundation
import Glibc
import Testing

/// A `vtensor serve` process on a free loopback port, started from the built binary (the embedded
/// model, on the CPU without a GPU) and stopped by its PID.
///
/// Tests that need no flags of their own share ``shared`` (one model load for the whole run);
/// tests that need flags (an API key, a body limit, a shutdown timeout) start their own.
final class ServerProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let base: String
    let logURL: URL

    /// The server every flag-free test talks to; started on first use, killed when the test
    /// process exits.
    static let shared: Result<ServerProcess, any Error> = Result {
        let server = try ServerProcess(arguments: ["--served-model-name", "smol"])
        atexit { ServerProcess.sharedForExit?.kill() }
        sharedForExit = server
        return server
    }
    nonisolated(unsafe) private static var sharedForExit: ServerProcess?

    static func sharedServer() throws -> ServerProcess { try shared.get() }

    /// Starts `vtensor serve --port <free> <arguments>` and waits (up to `timeout` seconds) for /health.
    init(arguments: [String], environment: [String: String]? = nil, timeout: TimeInterval = 60) throws {
        let binary = try Self.executable()
        port = try Self.freePort()
        base = "http://127.0.0.1:\(port)"
        logURL = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-serve-\(port)-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: logURL.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: logURL)
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--port", "\(port)"] + arguments
        if let environment { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        process.standardOutput = logHandle
        process.standardError = logHandle
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline && process.isRunning {
            if let (_, status) = try? Self.curl(["--max-time", "2", base + "/health"], quiet: true), status == 200 { return }
            usleep(200_000)
        }
        let log = self.log()
        kill()
        throw TestFailure("the server never answered /health:\n\(log)")
    }

    deinit { kill() }

    /// What the server printed so far.
    func log() -> String { (try? String(contentsOf: logURL, encoding: .utf8)) ?? "" }

    var isRunning: Bool { process.isRunning }

    /// Sends `signal` and waits up to `timeout` seconds for the process to exit; true if it did.
    @discardableResult
    func stop(signal: Int32 = SIGTERM, timeout: TimeInterval = 10) -> Bool {
        guard process.isRunning else { return true }
        Glibc.kill(process.processIdentifier, signal)
        let stopBy = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < stopBy { usleep(50_000) }
        return !process.isRunning
    }

    func kill() {
        if process.isRunning {
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    // MARK: Talking to it

    func get(_ path: String, headers: [String] = []) throws -> (body: String, status: Int) {
        try Self.curl(headers.flatMap { ["-H", $0] } + [base + path])
    }

    func post(_ path: String, _ body: String, headers: [String] = []) throws -> (body: String, status: Int) {
        try Self.curl(["-X", "POST", "-H", "Content-Type: application/json"] + headers.flatMap { ["-H", $0] }
                      + ["--data-binary", body, base + path])
    }

    /// The Prometheus text at /metrics.
    func metrics() throws -> String { try get("/metrics").body }

    // MARK: Tools

    /// `vtensor` next to the test bundle (.build/debug/vtensor), or $VTENSOR_BIN.
    static func executable() throws -> String {
        if let path = ProcessInfo.processInfo.environment["VTENSOR_BIN"] { return path }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        var directory = bundle.deletingLastPathComponent()
        // The bundle may be a directory (vtensorPackageTests.xctest/...) on some layouts.
        for _ in 0..<3 {
            let candidate = directory.appendingPathComponent("vtensor").path
            if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
            directory = directory.deletingLastPathComponent()
        }
        throw TestFailure("no vtensor executable next to the test bundle (\(bundle.path)): run `swift build` first (or set VTENSOR_BIN)")
    }

    /// A loopback port nobody listens on: bind port 0, read what the kernel gave, close.
    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestFailure("socket() failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Int32 in
                guard bind(fd, pointer, length) == 0 else { return -1 }
                return getsockname(fd, pointer, &length)
            }
        }
        guard bound == 0 else { throw TestFailure("bind/getsockname failed: errno \(errno)") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// Runs curl; returns the body and the HTTP status.
    static func curl(_ arguments: [String], quiet: Bool = false) throws -> (body: String, status: Int) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "-N", "--max-time", "60", "-w", "\n%{http_code}"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        if quiet { process.standardError = FileHandle.nullDevice }
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        var text = String(decoding: data, as: UTF8.self)
        guard let newline = text.lastIndex(of: "\n") else { throw TestFailure("curl gave no status: \(text)") }
        let status = Int(text[text.index(after: newline)...]) ?? 0
        text = String(text[..<newline])
        return (text, status)
    }

    static func object(_ text: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(text)")
        }
        return object
    }

    /// Runs `python3 <script> <arguments>`; returns its combined output and exit status.
    static func python(_ script: String, _ arguments: [String]) throws -> (output: String, status: Int32) {
        try run("/usr/bin/env", ["python3", script] + arguments)
    }

    /// Runs the built `vtensor` with `arguments`; returns its combined output and exit status.
    static func vtensor(_ arguments: [String], environment: [String: String] = [:]) throws -> (output: String, status: Int32) {
        try run(try executable(), arguments, environment: environment)
    }

    /// Runs `executable` to its end (in `directory`, if given, with `environment` added to this
    /// process's); returns its combined output and exit status.
    static func run(_ executable: String, _ arguments: [String], in directory: URL? = nil,
                    environment: [String: String] = [:]) throws -> (output: String, status: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let directory { process.currentDirectoryURL = directory }
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (String(decoding: data, as: UTF8.self), process.terminationStatus)
    }

    /// A file under Tests/ServerTests (found from this source file's path).
    static func resource(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent(name).path
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
