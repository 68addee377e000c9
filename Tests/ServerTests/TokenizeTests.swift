import Foundation
import Testing

/// GET /version, POST /tokenize and /detokenize on the shared server, checked against what the
/// completion endpoints count for the same input.
@Suite struct TokenizeTests {
    static func json(_ answer: (body: String, status: Int), _ status: Int = 200) throws -> [String: Any] {
        #expect(answer.status == status, "\(answer.body)")
        return try ServerProcess.object(answer.body)
    }

    static func usage(_ body: [String: Any]) -> [String: Int] { body["usage"] as? [String: Int] ?? [:] }

    @Test func versionIsAReleaseNumber() throws {
        let version = try Self.json(try ServerProcess.sharedServer().get("/version"))["version"] as? String ?? ""
        #expect(version.wholeMatch(of: /\d+\.\d+\.\d+.*/) != nil, "\(version)")
    }

    @Test func tokenizeCountsWhatTheCompletionEndpointsCount() throws {
        let server = try ServerProcess.sharedServer()
        let prompt = #"Tokenize me: ünïcödé, 数字 42, and an emoji 🙂."#
        let tokenized = try Self.json(try server.post("/tokenize", #"{"model": "smol", "prompt": "\#(prompt)"}"#))
        let tokens = tokenized["tokens"] as? [Int] ?? []
        #expect(tokens.isEmpty == false)
        #expect(tokenized["count"] as? Int == tokens.count)
        let models = try Self.json(try server.get("/v1/models"))
        let contextLength = (models["data"] as? [[String: Any]])?.first?["max_model_len"] as? Int
        #expect(tokenized["max_model_len"] as? Int == contextLength)

        let completion = try Self.json(try server.post("/v1/completions", #"{"prompt": "\#(prompt)", "max_tokens": 1}"#))
        #expect(Self.usage(completion)["prompt_tokens"] == tokens.count)

        // Without special tokens the ids are the text's alone, and they decode back to it.
        let plain = try Self.json(try server.post("/tokenize", #"{"prompt": "\#(prompt)", "add_special_tokens": false}"#))
        let plainTokens = plain["tokens"] as? [Int] ?? []
        let text = try Self.json(try server.post("/detokenize", #"{"tokens": \#(plainTokens)}"#))["prompt"] as? String
        #expect(text == prompt)
    }

    @Test func tokenizeMessagesMatchesChatCompletions() throws {
        let server = try ServerProcess.sharedServer()
        let messages = #"[{"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Name a colour."}]}]"#
        let withPrompt = try Self.json(try server.post("/tokenize", #"{"messages": \#(messages)}"#))
        let count = withPrompt["count"] as? Int ?? -1
        let chat = try Self.json(try server.post("/v1/chat/completions", #"{"messages": \#(messages), "max_tokens": 1}"#))
        #expect(Self.usage(chat)["prompt_tokens"] == count)

        let bare = try Self.json(try server.post("/tokenize", #"{"messages": \#(messages), "add_generation_prompt": false}"#))
        let bareTokens = bare["tokens"] as? [Int] ?? []
        let fullTokens = withPrompt["tokens"] as? [Int] ?? []
        #expect(bareTokens.count < fullTokens.count && Array(fullTokens.prefix(bareTokens.count)) == bareTokens,
                "the generation prompt should extend the rendered conversation")
        let rendered = try Self.json(try server.post("/detokenize", #"{"tokens": \#(fullTokens)}"#))["prompt"] as? String ?? ""
        #expect(rendered.contains("Be brief.") && rendered.contains("Name a colour."), "\(rendered)")
    }

    @Test func badTokenizeRequestsNameTheProblem() throws {
        let server = try ServerProcess.sharedServer()
        func expectError(_ path: String, _ body: String, status: Int = 400, naming words: [String]) throws {
            let answer = try server.post(path, body)
            #expect(answer.status == status, "\(path) \(body): \(answer.body)")
            let message = (try ServerProcess.object(answer.body)["error"] as? [String: Any])?["message"] as? String ?? ""
            for word in words { #expect(message.contains(word), "\(path) \(body): \(message)") }
        }
        let vocabulary = 1 << 24
        try expectError("/detokenize", #"{"tokens": [1, 2, \#(vocabulary)]}"#, naming: ["\(vocabulary)", "tokens[2]", "vocabulary"])
        try expectError("/detokenize", #"{"tokens": [-3]}"#, naming: ["-3", "vocabulary"])
        try expectError("/detokenize", #"{"tokens": [1, "two"]}"#, naming: ["tokens[1]", "integer"])
        try expectError("/detokenize", #"{"tokens": "1 2"}"#, naming: ["'tokens'", "list"])
        try expectError("/detokenize", #"{}"#, naming: ["'tokens'"])
        try expectError("/tokenize", #"{}"#, naming: ["'prompt'", "'messages'"])
        try expectError("/tokenize", #"{"prompt": "a", "messages": [{"role": "user", "content": "b"}]}"#, naming: ["not both"])
        try expectError("/tokenize", #"{"prompt": ["a"]}"#, naming: ["'prompt'", "string"])
        try expectError("/tokenize", #"{"prompt": "a", "add_special_tokens": "yes"}"#, naming: ["'add_special_tokens'", "boolean"])
        try expectError("/tokenize", #"{"model": "other", "prompt": "a"}"#, status: 404, naming: ["other"])
        #expect(try server.get("/health").status == 200)
    }
}
