import Foundation
import Testing

/// `return_token_ids` (vLLM's) on the shared server: the generated ids are those the usage
/// counts and decode to the text, the prompt's are what /tokenize gives, and a stream carries
/// the same ids chunk by chunk (the prompt's with the first); without the flag neither appears.
@Suite struct TokenIdsTests {
    static func json(_ answer: (body: String, status: Int)) throws -> [String: Any] {
        #expect(answer.status == 200, "\(answer.body)")
        return try ServerProcess.object(answer.body)
    }

    /// A stream's chunks (the JSON of every `data:` event but `[DONE]`).
    static func chunks(_ answer: (body: String, status: Int)) throws -> [[String: Any]] {
        #expect(answer.status == 200, "\(answer.body)")
        let events = answer.body.split(separator: "\n", omittingEmptySubsequences: true).map(String.init)
        #expect(events.last == "data: [DONE]", "\(answer.body)")
        return try events.dropLast().map { try ServerProcess.object(String($0.dropFirst(6))) }
    }

    static func firstChoice(_ object: [String: Any]) -> [String: Any]? { (object["choices"] as? [[String: Any]])?.first }

    @Test func completionsListTheIdsWholeAndStreamed() throws {
        let server = try ServerProcess.sharedServer()
        let prompt = "The ids of a completion:"
        let fields = #""prompt": "\#(prompt)", "max_tokens": 6, "temperature": 0, "ignore_eos": true"#
        let whole = try Self.json(try server.post("/v1/completions", #"{\#(fields), "return_token_ids": true}"#))
        let choice = try #require(Self.firstChoice(whole))
        let ids = try #require(choice["token_ids"] as? [Int], "\(whole)")
        #expect(ids.count == 6 && (whole["usage"] as? [String: Int])?["completion_tokens"] == 6)
        let tokenized = try Self.json(try server.post("/tokenize", #"{"prompt": "\#(prompt)"}"#))
        #expect(choice["prompt_token_ids"] as? [Int] == tokenized["tokens"] as? [Int])
        let decoded = try Self.json(try server.post("/detokenize", #"{"tokens": \#(ids)}"#))["prompt"] as? String
        #expect(decoded == choice["text"] as? String)

        let streamed = try Self.chunks(try server.post("/v1/completions", #"{\#(fields), "return_token_ids": true, "stream": true}"#))
        let choices = streamed.compactMap(Self.firstChoice)
        #expect(choices.flatMap { $0["token_ids"] as? [Int] ?? [] } == ids, "greedy: the stream's ids are the whole response's")
        #expect(choices.first?["prompt_token_ids"] as? [Int] == tokenized["tokens"] as? [Int])
        #expect(choices.dropFirst().allSatisfy { $0["prompt_token_ids"] == nil }, "the prompt's ids go with the first chunk only")

        let plain = try Self.json(try server.post("/v1/completions", #"{\#(fields)}"#))
        #expect(Self.firstChoice(plain)?["token_ids"] == nil && Self.firstChoice(plain)?["prompt_token_ids"] == nil)
        let bad = try server.post("/v1/completions", #"{\#(fields), "return_token_ids": "yes"}"#)
        #expect(bad.status == 400 && bad.body.contains("return_token_ids"), "\(bad.body)")
    }

    @Test func chatListsThePromptOnTheResponse() throws {
        let server = try ServerProcess.sharedServer()
        let messages = #"[{"role": "user", "content": "Count to three."}]"#
        let fields = #""messages": \#(messages), "max_tokens": 5, "temperature": 0, "ignore_eos": true, "return_token_ids": true"#
        let whole = try Self.json(try server.post("/v1/chat/completions", #"{\#(fields)}"#))
        let tokenized = try Self.json(try server.post("/tokenize", #"{"messages": \#(messages)}"#))
        #expect(whole["prompt_token_ids"] as? [Int] == tokenized["tokens"] as? [Int], "\(whole)")
        let ids = try #require(Self.firstChoice(whole)?["token_ids"] as? [Int], "\(whole)")
        #expect(ids.count == 5)

        let streamed = try Self.chunks(try server.post("/v1/chat/completions", #"{\#(fields), "stream": true}"#))
        #expect(streamed.first?["prompt_token_ids"] as? [Int] == tokenized["tokens"] as? [Int], "the role chunk carries the prompt's ids")
        #expect(streamed.compactMap(Self.firstChoice).flatMap { $0["token_ids"] as? [Int] ?? [] } == ids)
    }
}
