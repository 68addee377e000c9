import Foundation
import Testing

/// `return_token_ids` (vLLM's) on the shared server: the generated ids are those the usage
/// counts and decode to the text, the prompt's are what /tokenize gives, and a stream carries
/// its ids chunk by chunk (the prompt's with the first); without the flag neither appears.
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

        // Streamed: the chunks' ids add up to the answer and spell its text. (Not compared with the
        // whole response's: other suites' requests share this server's steps, and a batch of
        // another size may round a near tie the other way.)
        let streamed = try Self.chunks(try server.post("/v1/completions", #"{\#(fields), "return_token_ids": true, "stream": true}"#))
        let choices = streamed.compactMap(Self.firstChoice)
        let streamedIds = choices.flatMap { $0["token_ids"] as? [Int] ?? [] }
        #expect(streamedIds.count == 6, "\(streamed)")
        let streamedText = choices.map { $0["text"] as? String ?? "" }.joined()
        #expect(try Self.json(try server.post("/detokenize", #"{"tokens": \#(streamedIds)}"#))["prompt"] as? String == streamedText)
        #expect(choices.first?["prompt_token_ids"] as? [Int] == tokenized["tokens"] as? [Int])
        #expect(choices.dropFirst().allSatisfy { $0["prompt_token_ids"] == nil }, "the prompt's ids go with the first chunk only")

        let plain = try Self.json(try server.post("/v1/completions", #"{\#(fields)}"#))
        #expect(Self.firstChoice(plain)?["token_ids"] == nil && Self.firstChoice(plain)?["prompt_token_ids"] == nil)
        let bad = try server.post("/v1/completions", #"{\#(fields), "return_token_ids": "yes"}"#)
        #expect(bad.status == 400 && bad.body.contains("return_token_ids"), "\(bad.body)")
    }

    /// `skip_special_tokens` (vLLM's, default true): a special token the model generates stays
    /// out of the text unless the request says false; its id is there either way.
    @Test func specialTokensInTheTextOnlyWhenAsked() throws {
        let server = try ServerProcess.sharedServer()
        let special = try #require(try Self.json(try server.post("/tokenize", #"{"prompt": "<|im_start|>", "add_special_tokens": false}"#))["tokens"] as? [Int])
        try #require(special.count == 1, "<|im_start|> should be one token: \(special)")
        // logit_bias all but forces it; ignore_eos lets the answer run its two tokens.
        let fields = #""prompt": "Hi", "max_tokens": 2, "temperature": 0, "ignore_eos": true, "logit_bias": {"\#(special[0])": 100}, "return_token_ids": true"#
        let skipped = try #require(Self.firstChoice(try Self.json(try server.post("/v1/completions", #"{\#(fields)}"#))))
        #expect(skipped["token_ids"] as? [Int] == special + special && skipped["text"] as? String == "", "\(skipped)")
        let kept = try #require(Self.firstChoice(try Self.json(try server.post("/v1/completions", #"{\#(fields), "skip_special_tokens": false}"#))))
        #expect(kept["token_ids"] as? [Int] == special + special && kept["text"] as? String == "<|im_start|><|im_start|>", "\(kept)")
    }

    /// A body field the server does not read is logged by name (as vLLM does), and the request
    /// still runs; fields the document lists are not.
    @Test func ignoredFieldsAreLogged() throws {
        let server = try ServerProcess.sharedServer()
        let marker = "quokka_\(UInt32.random(in: 0...UInt32.max))"
        let answer = try server.post("/v1/completions", #"{"prompt": "Hi", "max_tokens": 1, "best_of": 2, "\#(marker)": true, "return_token_ids": true}"#)
        #expect(answer.status == 200, "\(answer.body)")
        let lines = server.log().split(separator: "\n").filter { $0.contains("request fields ignored") }
        #expect(lines.contains { $0.contains("best_of, \(marker)") }, "\(lines.suffix(3))")
        #expect(!lines.contains { $0.contains("return_token_ids") || $0.contains("max_tokens") }, "\(lines.suffix(3))")
    }

    /// `stream_options.continuous_usage_stats` (vLLM's, with `include_usage`): every chunk of the
    /// answer carries the usage so far, growing to the final usage chunk's.
    @Test func continuousUsageInEveryChunk() throws {
        let server = try ServerProcess.sharedServer()
        let body = #"{"prompt": "Count:", "max_tokens": 4, "temperature": 0, "ignore_eos": true, "stream": true, "return_token_ids": true, "stream_options": {"include_usage": true, "continuous_usage_stats": true}}"#
        let chunks = try Self.chunks(try server.post("/v1/completions", body))
        let answer = chunks.filter { Self.firstChoice($0) != nil }
        let usages = answer.compactMap { $0["usage"] as? [String: Int] }
        #expect(usages.count == answer.count && !answer.isEmpty, "\(chunks)")
        // Each chunk's count is the ids streamed so far.
        var streamed = 0
        for (chunk, usage) in zip(answer, usages) {
            streamed += (Self.firstChoice(chunk)?["token_ids"] as? [Int])?.count ?? 0
            #expect(usage["completion_tokens"] == streamed && usage["total_tokens"] == (usage["prompt_tokens"] ?? 0) + streamed, "\(usage)")
        }
        let final = chunks.last?["usage"] as? [String: Int]
        #expect(final?["completion_tokens"] == 4 && usages.last?["prompt_tokens"] == final?["prompt_tokens"], "\(chunks.suffix(2))")
        // Without include_usage it means nothing (vLLM's rule).
        let plain = try Self.chunks(try server.post("/v1/completions", #"{"prompt": "Count:", "max_tokens": 2, "stream": true, "stream_options": {"continuous_usage_stats": true}}"#))
        #expect(plain.allSatisfy { $0["usage"] == nil }, "\(plain)")
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
        let streamedIds = streamed.compactMap(Self.firstChoice).flatMap { $0["token_ids"] as? [Int] ?? [] }
        let streamedText = streamed.compactMap { (Self.firstChoice($0)?["delta"] as? [String: Any])?["content"] as? String }.joined()
        #expect(streamedIds.count == 5)
        #expect(try Self.json(try server.post("/detokenize", #"{"tokens": \#(streamedIds)}"#))["prompt"] as? String == streamedText)
    }
}
