import Foundation
import Glibc
import Testing

/// SIGTERM and SIGINT: the server stops accepting, lets streams in flight run for up to
/// --shutdown-timeout, aborts what is left, joins the engine and exits 0. Each test starts its own
/// server, since each one ends it.
@Suite struct ShutdownTests {
    /// A generous timeout: the stream under way finishes whole while new connections are refused.
    @Test func sigtermLetsAStreamInFlightFinish() throws {
        let server = try ServerProcess(arguments: ["--shutdown-timeout", "120"])
        defer { server.kill() }
        let maxTokens = 64
        let stream = try BackgroundStream(server, maxTokens: maxTokens)
        try stream.waitForFirstChunk()
        Glibc.kill(server.process.processIdentifier, SIGTERM)

        // The listener closes at once (Hummingbird's graceful shutdown) while the stream runs on.
        let refusedAt = Date().addingTimeInterval(10)
        var probe = try Curl.run(["--max-time", "2", server.base + "/health"])
        while probe.exitCode != Curl.couldNotConnect && Date() < refusedAt {
            usleep(50_000)
            probe = try Curl.run(["--max-time", "2", server.base + "/health"])
        }
        let streamRunning = stream.isRunning, serverRunning = server.isRunning
        #expect(probe.exitCode == Curl.couldNotConnect, "a request after SIGTERM was not refused: \(probe)\n\(server.log())")
        #expect(streamRunning && serverRunning, "the drain was over before the refusal could be seen; make the stream longer")

        let result = try stream.finish()
        #expect(result.finishReason == "length", "\(result.body)\n\(server.log())")
        #expect(result.completionTokens == maxTokens, "\(result.body)")
        #expect(result.endsWithDone, "\(result.body)")
        #expect(server.waitForExit(timeout: 30), "the server did not exit after the stream ended:\n\(server.log())")
        #expect(server.process.terminationStatus == 0, "exit status \(server.process.terminationStatus):\n\(server.log())")
    }

    /// A one-second timeout on a stream that would take far longer: it ends with finish_reason
    /// "abort" and [DONE], and the process exits 0 soon after the timeout. SIGINT as SIGTERM; the
    /// log level decides which lines appear.
    @Test(arguments: zip([SIGTERM, SIGINT], ["debug", "warning"]))
    func shutdownTimeoutAbortsWhatIsLeft(signal: Int32, logLevel: String) throws {
        let server = try ServerProcess(arguments: ["--shutdown-timeout", "1", "--log-level", logLevel])
        defer { server.kill() }
        let maxTokens = 4000
        let stream = try BackgroundStream(server, maxTokens: maxTokens)
        try stream.waitForFirstChunk()
        let signalled = Date()
        Glibc.kill(server.process.processIdentifier, signal)

        let result = try stream.finish()
        #expect(result.finishReason == "abort", "\(result.body.suffix(2000))\n\(server.log())")
        #expect((1..<maxTokens).contains(result.completionTokens ?? -1), "\(result.body.suffix(2000))")
        #expect(result.endsWithDone, "\(result.body.suffix(2000))")
        #expect(server.waitForExit(timeout: 15), "the server did not exit:\n\(server.log())")
        let elapsed = Date().timeIntervalSince(signalled)
        #expect(elapsed < 1 + 5, "exit took \(elapsed) s after the signal with --shutdown-timeout 1")
        #expect(server.process.terminationStatus == 0, "exit status \(server.process.terminationStatus):\n\(server.log())")

        let log = server.log()
        let aborted = log.contains("finish_reason=abort")
        let probes = log.contains("\"GET /health\" 200 OK")
        if logLevel == "debug" {
            #expect(aborted && probes, "a debug log has the abort and the /health probes:\n\(log)")
        } else {
            #expect(!aborted && !probes, "a warning log has no info or debug lines:\n\(log)")
        }
    }


    /// The default timeout (0, as vLLM's) stops the engine at once; a request whose body was still
    /// arriving then is answered 503 in OpenAI's error shape, and the process still exits 0.
    @Test func requestStillArrivingAtShutdownGets503() throws {
        let server = try ServerProcess(arguments: [])
        defer { server.kill() }
        let body = Array(#"{"prompt": "Hello", "max_tokens": 2}"#.utf8)
        let connection = try RawConnection(port: server.port)
        try connection.send(Array("POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n".utf8)
                            + Array("Content-Length: \(body.count)\r\n\r\n".utf8) + body.prefix(10))
        usleep(500_000)
        Glibc.kill(server.process.processIdentifier, SIGTERM)
        usleep(1_000_000)
        try connection.send(Array(body.dropFirst(10)))
        let response = connection.receiveAll()
        #expect(response.hasPrefix("HTTP/1.1 503"), "\(response)\n\(server.log())")
        let json = response.range(of: "\r\n\r\n").map { String(response[$0.upperBound...]) } ?? ""
        let error = try ServerProcess.object(json)["error"] as? [String: Any]
        #expect(error?["type"] as? String == "server_error", "\(response)")
        #expect((error?["message"] as? String)?.contains("shutting down") == true, "\(response)")
        #expect(server.waitForExit(timeout: 15), "the server did not exit:\n\(server.log())")
        #expect(server.process.terminationStatus == 0, "exit status \(server.process.terminationStatus):\n\(server.log())")
    }
}

/// A plain TCP connection to the server, for a request sent in pieces.
final class RawConnection {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, rc == 0 else { throw TestFailure("connect to port \(port) failed: errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) throws {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard sent == bytes.count else { throw TestFailure("send failed: \(sent), errno \(errno)") }
    }

    /// Everything the server sends until it closes the connection.
    func receiveAll() -> String {
        var data: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            data += buffer[..<count]
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// A streaming completion run by curl in the background, its body collected in a file.
final class BackgroundStream {
    let process = Process()
    let output: URL

    init(_ server: ServerProcess, maxTokens: Int) throws {
        output = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-stream-\(UUID().uuidString).txt")
        let body = """
            {"prompt": "Once upon a time", "max_tokens": \(maxTokens), "ignore_eos": true, "temperature": 0,
             "stream": true, "stream_options": {"include_usage": true}}
            """
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "-N", "--max-time", "300", "-o", output.path, "-H", "Content-Type: application/json",
                             "--data-binary", body, server.base + "/v1/completions"]
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: output)
    }

    var isRunning: Bool { process.isRunning }
    var body: String { (try? String(contentsOf: output, encoding: .utf8)) ?? "" }

    /// Waits until a generated token has arrived, so the request is in the engine.
    func waitForFirstChunk(timeout: TimeInterval = 60) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while !body.contains("\"text\"") {
            guard process.isRunning, Date() < deadline else { throw TestFailure("no chunk arrived: \(body)") }
            usleep(20_000)
        }
    }

    /// Waits for curl to end; the stream's last finish reason, its usage, and whether [DONE] closed it.
    func finish(timeout: TimeInterval = 120) throws -> (finishReason: String?, completionTokens: Int?, endsWithDone: Bool, body: String) {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        if process.isRunning { throw TestFailure("the stream did not end in \(timeout) s: \(body.suffix(2000))") }
        let events = body.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        let objects = events.filter { $0 != "data: [DONE]" }.compactMap { event -> [String: Any]? in
            guard event.hasPrefix("data: ") else { return nil }
            return try? ServerProcess.object(String(event.dropFirst(6)))
        }
        let reasons = objects.compactMap { ($0["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }
        let usage = objects.compactMap { $0["usage"] as? [String: Any] }.last
        return (reasons.last, usage?["completion_tokens"] as? Int, events.last == "data: [DONE]", body)
    }
}

extension ServerProcess {
    /// Waits up to `timeout` seconds for the process to exit on its own; true if it did.
    func waitForExit(timeout: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(20_000) }
        return !process.isRunning
    }
}

/// curl with its exit code and the response's headers, for what ServerProcess.curl does not show.
enum Curl {
    /// curl's exit code for "Failed to connect to host".
    static let couldNotConnect: Int32 = 7

    /// Runs `curl -sS -i <arguments>`: the status, the headers (names lowercased), the body, and curl's exit code.
    static func run(_ arguments: [String]) throws -> (status: Int, headers: [String: String], body: String, exitCode: Int32) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        process.arguments = ["-sS", "-N", "-i", "--max-time", "60"] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: data, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else { return (0, [:], text, process.terminationStatus) }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let status = lines.first.flatMap { Int($0.split(separator: " ").dropFirst().first ?? "") } ?? 0
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        return (status, headers, String(text[split.upperBound...]), process.terminationStatus)
    }
}
