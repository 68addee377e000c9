import Foundation
import Testing
@testable import VTensorBench

/// `bench serve`'s reading of a response stream: SSE events split anywhere, what counts as the
/// first token, usage, and the stream's malformed or incomplete endings.
@Suite struct ServeStreamParsingTests {
    /// All events of `text` fed in pieces of `size` bytes, and the first problem.
    func events(_ text: String, pieceSize size: Int) -> (events: [String], problem: String?) {
        var parser = SSEParser()
        var out: [String] = []
        let bytes = Array(text.utf8)
        var offset = 0
        while offset < bytes.count {
            let piece = Array(bytes[offset..<min(bytes.count, offset + size)])
            offset += size
            let problem = piece.withUnsafeBytes { parser.feed($0) { out.append(String(decoding: $0, as: UTF8.self)) } }
            if let problem { return (out, problem) }
        }
        let problem = parser.finish { out.append(String(decoding: $0, as: UTF8.self)) }
        return (out, problem)
    }

    @Test func eventsAreTheSameHoweverTheBytesArrive() {
        let stream = ": ping\r\n\r\ndata: {\"a\": 1}\r\n\r\nevent: message\nid: 7\ndata: line one\ndata:line two\n\nretry: 100\ndata: [DONE]\n\n"
        let expected = ["{\"a\": 1}", "line one\nline two", "[DONE]"]
        for size in [1, 2, 3, 7, 64, 10_000] {
            let (got, problem) = events(stream, pieceSize: size)
            #expect(problem == nil)
            #expect(got == expected, "pieces of \(size) bytes")
        }
        // A last event without its blank line still counts.
        #expect(events("data: x\n\ndata: [DONE]", pieceSize: 5).events == ["x", "[DONE]"])
    }

    @Test func aLineThatIsNoSSEFieldIsMalformed() {
        let (got, problem) = events("data: {}\n\nthis is not sse\n\ndata: {}\n\n", pieceSize: 4)
        #expect(got == ["{}"])
        #expect(problem?.contains("malformed SSE line: \"this is not sse\"") == true, "\(problem ?? "nil")")
    }

    func state(_ events: [(String, UInt64)]) -> StreamState {
        var state = StreamState(start: 1_000_000_000)
        let decoder = JSONDecoder()
        for (data, at) in events { state.event(Array(data.utf8), at: at, decoder: decoder) }
        state.ended()
        return state
    }

    @Test func theFirstTokenIsTheFirstChunkWithText() {
        let ms: UInt64 = 1_000_000
        let s = state([
            (#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#, 1_000_000_000 + 2 * ms),
            (#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#, 1_000_000_000 + 50 * ms),
            (#"{"choices":[{"index":0,"delta":{"content":"lo"}}]}"#, 1_000_000_000 + 60 * ms),
            (#"{"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}]}"#, 1_000_000_000 + 75 * ms),
            (#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#, 1_000_000_000 + 76 * ms),
            (#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#, 1_000_000_000 + 77 * ms),
            ("[DONE]", 1_000_000_000 + 78 * ms),
        ])
        #expect(s.failure == nil)
        #expect(s.firstToken == 1_000_000_000 + 50 * ms, "the role chunk is not a token")
        #expect(s.lastToken == 1_000_000_000 + 75 * ms, "finish and usage chunks carry no token")
        #expect(s.gaps.map { ($0 * 1000).rounded() } == [10, 15])
        #expect(s.text == "Hello!")
        #expect(s.usagePromptTokens == 9 && s.usageCompletionTokens == 3)
    }

    /// An answer that is only an end-of-sequence token: no text, but the server did answer.
    @Test func anEmptyAnswerHasItsFirstTokenAtTheFinish() {
        let s = state([
            (#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#, 1_010_000_000),
            (#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#, 1_300_000_000),
            (#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":1}}"#, 1_301_000_000),
            ("[DONE]", 1_302_000_000),
        ])
        #expect(s.failure == nil)
        #expect(s.firstToken == 1_300_000_000 && s.lastToken == 1_300_000_000 && s.gaps.isEmpty && s.text.isEmpty)
    }

    @Test func streamsThatEndBadlyFail() {
        let token = (#"{"choices":[{"text":"a"}]}"#, UInt64(1_100_000_000))
        #expect(state([token]).failure?.reason == "stream ended without data: [DONE]")
        // A finish chunk then the end, no [DONE] (transformers serve's completions): complete.
        let finish = (#"{"choices":[{"text":"","finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#, UInt64(1_150_000_000))
        let unterminated = state([token, finish])
        #expect(unterminated.failure == nil && unterminated.endedWithoutDone && unterminated.usageCompletionTokens == 1)
        #expect(!state([token, finish, ("[DONE]", 1_160_000_000)]).endedWithoutDone)
        // A finish chunk with no token before it is still an answer (an end-of-sequence first).
        #expect(state([finish]).failure == nil)
        #expect(state([("[DONE]", 1_100_000_000)]).failure?.reason == "no token in the stream")
        let error = state([token, (#"{"error":{"message":"out of memory","type":"server_error"}}"#, 1_200_000_000)]).failure
        #expect(error?.reason == "error event in the stream" && error?.detail == "out of memory")
        let broken = state([token, (#"{"choices": [{"text": "b""#, 1_200_000_000)]).failure
        #expect(broken?.reason == "malformed SSE line" && broken?.detail.contains("not a JSON chunk") == true)
    }

    @Test func requestBodiesAreValidJSON() throws {
        let text = "say \"hi\"\n\tback\\slash \u{01} é 漢"
        let completion = RequestBody.encode(BenchRequest(prompt: .text(text), promptTokens: 5, maxTokens: 7), endpoint: .completions,
                                            model: "m", ignoreEOS: true)
        let c = try #require(try JSONSerialization.jsonObject(with: Data(completion)) as? [String: Any])
        #expect(c["prompt"] as? String == text)
        #expect(c["max_tokens"] as? Int == 7 && c["model"] as? String == "m" && c["ignore_eos"] as? Bool == true && c["stream"] as? Bool == true)
        #expect((c["stream_options"] as? [String: Any])?["include_usage"] as? Bool == true)

        let ids = RequestBody.encode(BenchRequest(prompt: .tokens([5, 17, 300]), promptTokens: 3, maxTokens: 2), endpoint: .completions,
                                     model: nil, ignoreEOS: false)
        let i = try #require(try JSONSerialization.jsonObject(with: Data(ids)) as? [String: Any])
        #expect(i["prompt"] as? [Int] == [5, 17, 300])
        #expect(i["model"] == nil && i["ignore_eos"] == nil)

        let messages: [BenchMessage] = [.init(role: "user", content: text), .init(role: "assistant", content: "ok"), .init(role: "user", content: "more")]
        let chat = RequestBody.encode(BenchRequest(prompt: .messages(messages), promptTokens: 9, maxTokens: 4), endpoint: .chat,
                                      model: "m", ignoreEOS: false)
        let m = try #require(try JSONSerialization.jsonObject(with: Data(chat)) as? [String: Any])
        let sent = (m["messages"] as? [[String: String]])?.map { BenchMessage(role: $0["role"]!, content: $0["content"]!) }
        #expect(sent == messages)
        #expect(m["max_completion_tokens"] as? Int == 4 && m["max_tokens"] as? Int == 4 && m["temperature"] == nil)
        let greedy = RequestBody.encode(BenchRequest(prompt: .text("x"), promptTokens: 1, maxTokens: 1), endpoint: .completions,
                                        model: nil, ignoreEOS: false, temperature: 0)
        let g = try #require(try JSONSerialization.jsonObject(with: Data(greedy)) as? [String: Any])
        #expect(g["temperature"] as? Double == 0 && g["max_completion_tokens"] == nil)
    }

    /// `--extra-body`: the object's members go into the body as written (key order kept, as a
    /// schema's property order matters), to a stable share of the requests.
    @Test func extraBodyFieldsGoToAStableShare() throws {
        let members = try RequestBody.members(ofObject: #" {"response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"b": {}, "a": {}}}}}} "#)
        let body = String(decoding: RequestBody.encode(BenchRequest(prompt: .text("x"), promptTokens: 1, maxTokens: 1), endpoint: .chat,
                                                       model: nil, ignoreEOS: false, extra: members), as: UTF8.self)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any])
        #expect((object["response_format"] as? [String: Any])?["type"] as? String == "json_schema")
        #expect(body.range(of: #""b""#)!.lowerBound < body.range(of: #""a""#)!.lowerBound)
        for bad in ["[1]", "{", "\"x\"", "{} {}"] { #expect(throws: (any Error).self, "\(bad)") { try RequestBody.members(ofObject: bad) } }

        let requests = (0..<2000).map { BenchRequest(prompt: .tokens([$0, $0 * 7 + 1]), promptTokens: 2, maxTokens: 1) }
        let taken = requests.filter { RequestBody.takesExtra($0, share: 0.25) }
        #expect((400...600).contains(taken.count), "about a quarter: \(taken.count)")
        #expect(requests.filter { RequestBody.takesExtra($0, share: 0.25) } == taken, "the same requests every time")
        #expect(requests.allSatisfy { RequestBody.takesExtra($0, share: 1) } && !requests.contains { RequestBody.takesExtra($0, share: 0) })
    }

    @Test func baseURLs() throws {
        #expect(try ServerAddress(baseURL: "http://127.0.0.1:8000") == ServerAddress(host: "127.0.0.1", port: 8000))
        #expect(try ServerAddress(baseURL: "http://example.test/api/") == ServerAddress(host: "example.test", port: 80, pathPrefix: "/api"))
        #expect(try ServerAddress(baseURL: "http://[::1]:9000").hostHeader == "[::1]:9000")
        for bad in ["https://x:1", "127.0.0.1:8000", "http://:80", "http://h:0", "http://h:port"] {
            #expect(throws: RequestFailure.self, "\(bad)") { try ServerAddress(baseURL: bad) }
        }
    }
}
