import Foundation
import Glibc
import Testing

/// Launches the built `vtensor serve` (the embedded model, on the CPU without a GPU) on a free
/// loopback port and talks to it with curl, as a client would.
@Suite(.serialized) struct ServerTests {
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
        process.arguments = ["-sS", "-N", "--max-time", "40", "-w", "\n%{http_code}"] + arguments
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

    static func post(_ url: String, _ body: String) throws -> (body: String, status: Int) {
        try curl(["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", body, url])
    }

    static func object(_ text: String) throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw TestFailure("not a JSON object: \(text)")
        }
        return object
    }

    @Test func serveAnswersOpenAIRequests() throws {
        let binary = try Self.executable()
        let port = try Self.freePort()
        let base = "http://127.0.0.1:\(port)"
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-serve-\(port).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let logHandle = try FileHandle(forWritingTo: log)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: binary)
        server.arguments = ["serve", "--port", "\(port)", "--served-model-name", "smol"]
        server.standardOutput = logHandle
        server.standardError = logHandle
        try server.run()
        defer {
            if server.isRunning {
                kill(server.processIdentifier, SIGKILL)
                server.waitUntilExit()
            }
            try? FileManager.default.removeItem(at: log)
        }
        func serverLog() -> String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

        // Up to 40 s for the model to load (a first run may fetch it).
        let deadline = Date().addingTimeInterval(40)
        var healthy = false
        while Date() < deadline && server.isRunning {
            if let (_, status) = try? Self.curl(["--max-time", "2", base + "/health"], quiet: true), status == 200 { healthy = true; break }
            usleep(200_000)
        }
        try #require(healthy, "the server never answered /health:\n\(serverLog())")

        let models = try Self.curl([base + "/v1/models"])
        #expect(models.status == 200)
        let ids = (try Self.object(models.body)["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids == ["smol"], "\(models.body)")

        let completion = try Self.post(base + "/v1/completions",
                                       #"{"model": "smol", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}"#)
        #expect(completion.status == 200, "\(completion.body)")
        let result = try Self.object(completion.body)
        #expect(result["object"] as? String == "text_completion")
        let choice = (result["choices"] as? [[String: Any]])?.first
        let finish = choice?["finish_reason"] as? String
        let usage = result["usage"] as? [String: Int] ?? [:]
        let prompt = usage["prompt_tokens"] ?? 0, generated = usage["completion_tokens"] ?? -1
        #expect(prompt > 0)
        #expect(usage["total_tokens"] == prompt + generated)
        #expect((finish == "length" && generated == 8) || (finish == "stop" && (1...8).contains(generated)), "\(completion.body)")
        let text = choice?["text"] as? String ?? ""
        #expect(text.isEmpty == false)

        let chat = try Self.post(base + "/v1/chat/completions", #"""
            {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0, "stream": true}
            """#)
        #expect(chat.status == 200)
        let events = chat.body.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(events.allSatisfy { $0.hasPrefix("data: ") }, "\(chat.body)")
        #expect(events.last == "data: [DONE]", "\(chat.body)")
        let chunks = try events.dropLast().map { try Self.object(String($0.dropFirst(6))) }
        let deltas = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first }
        #expect((deltas.first?["delta"] as? [String: Any])?["role"] as? String == "assistant")
        #expect(deltas.last?["finish_reason"] is String, "\(chat.body)")
        let contents = deltas.dropFirst().map { (($0["delta"] as? [String: Any])?["content"] as? String) ?? "" }
        #expect(contents.joined().isEmpty == false, "\(chat.body)")

        let malformed = try Self.post(base + "/v1/completions", #"{"prompt": "x", "#)
        #expect(malformed.status == 400)
        let error = try Self.object(malformed.body)["error"] as? [String: Any]
        #expect(error?["type"] as? String == "invalid_request_error")
        #expect((error?["message"] as? String)?.contains("JSON") == true, "\(malformed.body)")
        #expect(try Self.post(base + "/v1/completions", #"{"prompt": "x", "max_tokens": -1}"#).status == 400)
        #expect(try Self.post(base + "/v1/chat/completions", #"{"model": "smol"}"#).status == 400)
        #expect(try Self.post(base + "/v1/completions", #"{"model": "other", "prompt": "x"}"#).status == 404)

        kill(server.processIdentifier, SIGTERM)
        let stopBy = Date().addingTimeInterval(10)
        while server.isRunning && Date() < stopBy { usleep(100_000) }
        #expect(!server.isRunning, "the server did not stop on SIGTERM:\n\(serverLog())")
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
