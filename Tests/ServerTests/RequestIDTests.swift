import Foundation
import Testing

/// X-Request-Id: a sane id from the client is kept, returned, used for the completion id and on
/// every log line about the request; a missing or invalid one is replaced by a generated one.
@Suite struct RequestIDTests {
    @Test func givenIDComesBackAndTagsTheLogLines() throws {
        let server = try ServerProcess.sharedServer()
        let id = "client-\(UUID().uuidString)"
        let completion = try post(server, "/v1/completions", #"{"prompt": "Hello", "max_tokens": 2, "temperature": 0}"#, id: id)
        #expect(completion.status == 200, "\(completion.body)")
        #expect(completion.headers["x-request-id"] == id, "\(completion.headers)")
        #expect(try ServerProcess.object(completion.body)["id"] as? String == "cmpl-" + id, "\(completion.body)")
        let lines = try logLines(server, id: id, until: "\"POST /v1/completions\" 200 OK")
        #expect(lines.contains { $0.contains("received: prompt_tokens=") }, "\(lines)")
        #expect(lines.contains { $0.contains("finished: finish_reason=length prompt_tokens=") && $0.contains("completion_tokens=2") },
                "\(lines)")

        // A stream returns the id in its header and in every chunk's id.
        let streamID = "stream.\(UUID().uuidString)"
        let stream = try post(server, "/v1/chat/completions", #"""
            {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "temperature": 0, "stream": true}
            """#, id: streamID)
        #expect(stream.status == 200)
        #expect(stream.headers["x-request-id"] == streamID, "\(stream.headers)")
        let chunks = stream.body.split(separator: "\n").filter { $0.hasPrefix("data: {") }
        #expect(!chunks.isEmpty && chunks.allSatisfy { $0.contains("\"id\":\"chatcmpl-\(streamID)\"") }, "\(stream.body)")
        _ = try logLines(server, id: streamID, until: "\"POST /v1/chat/completions\" 200 OK")

        // An error carries the id in its header and its log line.
        let errorID = "error-\(UUID().uuidString)"
        let error = try post(server, "/v1/completions", #"{"prompt": "x", "max_tokens": -1}"#, id: errorID)
        #expect(error.status == 400)
        #expect(error.headers["x-request-id"] == errorID)
        let errorLines = try logLines(server, id: errorID, until: "\"POST /v1/completions\" 400 Bad Request")
        #expect(errorLines.contains { $0.contains("error: 400 invalid_request_error: 'max_tokens'") }, "\(errorLines)")
    }

    @Test(arguments: [nil, "", "has spaces in it", String(repeating: "a", count: 129), "caf\u{E9}"])
    func missingOrInvalidIDIsReplaced(given: String?) throws {
        let server = try ServerProcess.sharedServer()
        let response = try post(server, "/v1/completions", #"{"prompt": "Hello", "max_tokens": 1}"#, id: given)
        #expect(response.status == 200, "\(response.body)")
        let id = try #require(response.headers["x-request-id"], "\(response.headers)")
        #expect(id.count == 32 && id.allSatisfy { $0.isHexDigit && !$0.isUppercase }, "not a generated id: \(id)")
        #expect(id != given)
        #expect(try ServerProcess.object(response.body)["id"] as? String == "cmpl-" + id)
        _ = try logLines(server, id: id, until: "\"POST /v1/completions\" 200 OK")
    }

    /// Sends `body` with `X-Request-Id: id` (none when nil).
    func post(_ server: ServerProcess, _ path: String, _ body: String, id: String?) throws
        -> (status: Int, headers: [String: String], body: String) {
        // curl drops "Name: " with an empty value; "Name;" sends it empty.
        let header = id.map { ["-H", $0.isEmpty ? "X-Request-Id;" : "X-Request-Id: \($0)"] } ?? []
        let result = try Curl.run(["-X", "POST", "-H", "Content-Type: application/json"] + header
                                  + ["--data-binary", body, server.base + path])
        return (result.status, result.headers, result.body)
    }

    /// The server's log lines tagged with `id`, once one of them contains `last` (the access line,
    /// written after the response body, so possibly after curl has returned).
    func logLines(_ server: ServerProcess, id: String, until last: String) throws -> [String] {
        let deadline = Date().addingTimeInterval(10)
        while true {
            let lines = server.log().split(separator: "\n").map(String.init).filter { $0.contains("hb.request.id=\(id) ") }
            if lines.contains(where: { $0.contains(last) }) { return lines }
            if Date() > deadline { throw TestFailure("no log line with \(id) and \(last):\n\(server.log().suffix(4000))") }
            usleep(50_000)
        }
    }
}
