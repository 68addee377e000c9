import Foundation
import Hummingbird

extension OpenAIServer {
    // MARK: /tokenize and /detokenize (vLLM's shapes)

    /// `{"prompt": "..."}` or `{"messages": [...]}` -> `{"tokens", "count", "max_model_len"}`.
    /// Defaults follow what the completion endpoints would feed the engine for the same input
    /// (vLLM's defaults): a prompt gets the tokenizer's special tokens; messages get the
    /// generation prompt and no added special tokens, since the template writes its own.
    func tokenize(_ request: Request) async throws -> Response {
        let (data, object) = try await jsonBody(request)
        try checkModel(object)
        let given = { (key: String) in Self.isGiven(object, key) }
        let addSpecialTokens = try optionalBool(object, "add_special_tokens")
        let tokens: [Int]
        switch (given("prompt"), given("messages")) {
        case (true, false):
            guard let text = object["prompt"] as? String else { throw APIError("'prompt' must be a string", param: "prompt") }
            if given("add_generation_prompt") {
                throw APIError("'add_generation_prompt' goes with 'messages', not 'prompt'", param: "add_generation_prompt")
            }
            tokens = tokenizer.encode(text, addSpecialTokens: addSpecialTokens ?? true)
        case (false, true):
            let addGenerationPrompt = try optionalBool(object, "add_generation_prompt") ?? true
            tokens = try chatPrompt(object, body: data, addGenerationPrompt: addGenerationPrompt, addSpecialTokens: addSpecialTokens ?? false)
        case (true, true):
            throw APIError("send either 'prompt' or 'messages', not both", param: "prompt")
        case (false, false):
            throw APIError("'prompt' (a string) or 'messages' (a list) is required", param: "prompt")
        }
        return json(.ok, ["tokens": tokens, "count": tokens.count, "max_model_len": loop.engine.maxSequenceLength])
    }

    /// `{"tokens": [...]}` -> `{"prompt": "..."}`; an id outside the tokenizer's vocabulary is a 400 naming it.
    func detokenize(_ request: Request) async throws -> Response {
        let (_, object) = try await jsonBody(request)
        try checkModel(object)
        guard let value = object["tokens"], !(value is NSNull) else { throw APIError("'tokens' is required", param: "tokens") }
        guard let list = value as? [Any] else { throw APIError("'tokens' must be a list of token ids", param: "tokens") }
        let vocabulary = tokenizer.vocabularySize
        let ids = try list.enumerated().map { index, item -> Int in
            guard let id = jsonInt(item) else { throw APIError("tokens[\(index)] must be an integer token id", param: "tokens") }
            guard (0..<vocabulary).contains(id) else {
                throw APIError("token id \(id) (tokens[\(index)]) is outside the vocabulary (0..<\(vocabulary))", param: "tokens")
            }
            return id
        }
        return json(.ok, ["prompt": tokenizer.decode(ids)])
    }
}
