import Foundation
import Glibc
import Testing

/// Launches the built `vtensor serve` (the embedded model, on the CPU without a GPU) on a free
/// loopback port and talks to it with curl, as a client would.
@Suite(.serialized) struct ServerTests {
    @Test func serveAnswersOpenAIRequests() throws {
        let server = try ServerProcess.sharedServer()
        let base = server.base

        let models = try ServerProcess.curl([base + "/v1/models"])
        #expect(models.status == 200)
        let ids = (try ServerProcess.object(models.body)["data"] as? [[String: Any]])?.compactMap { $0["id"] as? String }
        #expect(ids == ["smol"], "\(models.body)")

        let completion = try server.post("/v1/completions",
                                       #"{"model": "smol", "prompt": "The capital of France is", "max_tokens": 8, "temperature": 0}"#)
        #expect(completion.status == 200, "\(completion.body)")
        let result = try ServerProcess.object(completion.body)
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

        let chat = try server.post("/v1/chat/completions", #"""
            {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 6, "temperature": 0, "stream": true}
            """#)
        #expect(chat.status == 200)
        let events = chat.body.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(events.allSatisfy { $0.hasPrefix("data: ") }, "\(chat.body)")
        #expect(events.last == "data: [DONE]", "\(chat.body)")
        let chunks = try events.dropLast().map { try ServerProcess.object(String($0.dropFirst(6))) }
        let deltas = chunks.compactMap { ($0["choices"] as? [[String: Any]])?.first }
        #expect((deltas.first?["delta"] as? [String: Any])?["role"] as? String == "assistant")
        #expect(deltas.last?["finish_reason"] is String, "\(chat.body)")
        let contents = deltas.dropFirst().map { (($0["delta"] as? [String: Any])?["content"] as? String) ?? "" }
        #expect(contents.joined().isEmpty == false, "\(chat.body)")

        let malformed = try server.post("/v1/completions", #"{"prompt": "x", "#)
        #expect(malformed.status == 400)
        let error = try ServerProcess.object(malformed.body)["error"] as? [String: Any]
        #expect(error?["type"] as? String == "invalid_request_error")
        #expect((error?["message"] as? String)?.contains("JSON") == true, "\(malformed.body)")
        #expect(try server.post("/v1/completions", #"{"prompt": "x", "max_tokens": -1}"#).status == 400)
        #expect(try server.post("/v1/chat/completions", #"{"model": "smol"}"#).status == 400)
        #expect(try server.post("/v1/completions", #"{"model": "other", "prompt": "x"}"#).status == 404)

        #expect(server.isRunning)
    }

    @Test func stopsOnSIGTERM() throws {
        let server = try ServerProcess(arguments: [])
        #expect(server.stop(signal: SIGTERM), "the server did not stop on SIGTERM:\n\(server.log())")
        #expect(server.process.terminationStatus == 0, "exit status \(server.process.terminationStatus):\n\(server.log())")
    }
}
