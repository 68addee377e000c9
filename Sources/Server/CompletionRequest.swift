import Engine
import Foundation
import Runtime
import Structured
import Tokenizers

/// A /v1/completions or /v1/chat/completions body, checked: its prompts as token ids and how
/// many samples of each it wants. Choice `prompt * n + sample` of the response is the engine
/// request ``engineRequest(choice:)`` (OpenAI's and vLLM's numbering).
struct CompletionRequest {
    /// The most choices one request may ask for (`n` times the number of prompts): each one is an
    /// engine request, and the rest of the server's clients share the engine with them.
    static let maxChoices = 128

    let chat: Bool
    /// Each prompt's ids; completions only may carry several.
    var prompts: [[Int]]
    /// What `echo` puts before each prompt's choices (completions; nil without echo).
    var echoTexts: [String]?
    var n: Int
    /// Shared by every choice but for `maxTokens` (filled per prompt when absent) and `seed`.
    var parameters: SamplingParameters
    var stream: Bool
    var includeUsage: Bool
    /// `cache_salt` (vLLM's): only requests with the same salt share cached prompt K/V.
    var cacheSalt: String? = nil
    /// `priority` (vLLM's): lower values are scheduled sooner, under `--schedule-policy priority`.
    var priority = 0
    /// Chat with `tools` (tool_choice not "none") on a server with a tool-call parser: answers
    /// are parsed for calls.
    var toolCallFormat: ToolCallFormat? = nil
    /// `return_token_ids` (vLLM's): each choice also lists its generated ids (`token_ids`) and
    /// the prompt's (`prompt_token_ids`), so a client can send a conversation on as the very ids
    /// the model produced (re-encoding the text need not give them back).
    var returnTokenIds = false
    /// `stream_options.continuous_usage_stats` with `include_usage` (vLLM's): every streamed chunk
    /// of a choice carries the usage so far (its prompt's tokens, the choice's tokens generated).
    var continuousUsage = false
    /// Structured output: the grammar every choice's answer is generated under.
    var grammar: CompiledGrammar? = nil
    /// `tool_choice` "required" or a named function: the answer is the call, returned as `tool_calls`.
    var forcedTool: ForcedToolCall? = nil

    var echo: Bool { echoTexts != nil }
    var choiceCount: Int { prompts.count * n }
    /// Alternatives per token, when logprobs were asked for.
    var logprobs: Int? { parameters.logprobs }

    /// The engine request behind choice `choice`: sample `choice % n` of prompt `choice / n`.
    /// With a seed, sample i draws with seed + i (vLLM's choice), so the samples differ and the
    /// whole response is reproducible.
    func engineRequest(choice: Int, maxSequenceLength: Int) -> GenerationRequest {
        let prompt = prompts[choice / n], sample = choice % n
        var parameters = self.parameters
        if let seed = parameters.seed { parameters.seed = seed &+ sample }
        // vLLM's default: up to the context.
        if parameters.maxTokens == nil { parameters.maxTokens = max(1, maxSequenceLength - prompt.count) }
        return GenerationRequest(prompt: prompt, parameters: parameters, cacheSalt: cacheSalt, promptLogprobs: echo ? logprobs : nil,
                                 priority: priority, grammar: grammar)
    }
}

extension OpenAIServer {
    /// Parses and checks a request body; every problem is an `APIError` naming the field.
    func completionRequest(_ object: [String: Any], body data: Data, chat: Bool) throws -> CompletionRequest {
        try checkModel(object)
        warnAboutIgnoredFields(object, chat: chat)
        try checkIntegerFields(object, ["max_tokens", "max_completion_tokens", "min_tokens", "n", "seed", "top_k", "logprobs",
                                        "top_logprobs", "stop_token_ids", "priority"])
        let stream = try optionalBool(object, "stream") ?? false
        let includeUsage = try streamIncludesUsage(object)
        let n = try choicesPerPrompt(object)
        try checkLogprobFields(object, chat: chat)
        var parameters = try samplingParameters(data, object: object)
        if chat, let value = object["max_completion_tokens"], !(value is NSNull) {
            guard let count = jsonInt(value) else {
                throw APIError("'max_completion_tokens' must be an integer, got \(Self.describe(value))", param: "max_completion_tokens")
            }
            parameters.maxTokens = count
        }
        do { try parameters.validate() } catch let error as SamplingParameterError {
            throw APIError("'\(error.field)' \(error.problem)", param: error.field)
        }

        // The body with its key order kept, parsed once: for chat's messages and tools, and for
        // structured output's schemas (generated in the order the client wrote them).
        let constrained = OutputConstraint.requestFields.contains(where: { Self.isGiven(object, $0) }) || (chat && Self.isGiven(object, "tool_choice"))
        let ordered = chat || constrained ? try Self.orderedBody(data) : nil
        let prompts: [[Int]]
        var echoTexts: [String]?
        if chat {
            // Chat adds no special tokens unless asked (vLLM's default): the template writes its own.
            prompts = [try chatPrompt(object, body: data, ordered: ordered, addSpecialTokens: try optionalBool(object, "add_special_tokens") ?? false)]
        } else {
            let parsed = try completionPrompts(object)
            prompts = parsed.map(\.ids)
            if try optionalBool(object, "echo") ?? false { echoTexts = parsed.map { $0.text ?? tokenizer.decode($0.ids) } }
        }
        guard prompts.count * n <= CompletionRequest.maxChoices else {
            throw APIError("this request asks for \(prompts.count) prompts x n = \(n), \(prompts.count * n) choices; the limit is \(CompletionRequest.maxChoices)",
                           param: "n")
        }
        let completionTokensGiven = chat && Self.isGiven(object, "max_completion_tokens")
        for prompt in prompts {
            try checkContext(promptTokens: prompt.count, maxTokens: parameters.maxTokens, promptField: chat ? "messages" : "prompt",
                             maxTokensField: completionTokensGiven ? "max_completion_tokens" : "max_tokens")
        }
        // Structured output, and forced tool calls.
        var constraint: (OutputConstraint, field: String)?
        var forcedTool: ForcedToolCall?
        if constrained, let ordered {
            constraint = try outputConstraint(ordered)
            if chat, let forced = try forcedToolCall(object, ordered) {
                if let constraint {
                    throw APIError("'tool_choice' forces a tool call, which cannot be combined with '\(constraint.field)'", param: constraint.field)
                }
                forcedTool = forced
                let parallel = try optionalBool(object, "parallel_tool_calls") ?? true
                constraint = (try Self.toolConstraint(forced, tools: ordered["tools"]?.array ?? [], parallel: parallel), field: "tool_choice")
            }
        }
        let grammar = try constraint.map { try compiledGrammar($0.0, field: $0.field) }
        let usesTools = chat && Self.isGiven(object, "tools") && (object["tool_choice"] as? String) != "none" && forcedTool == nil
        return CompletionRequest(chat: chat, prompts: prompts, echoTexts: echoTexts, n: n, parameters: parameters, stream: stream,
                                 includeUsage: includeUsage, cacheSalt: try cacheSalt(object), priority: try priority(object),
                                 toolCallFormat: usesTools ? configuration.toolCallFormat : nil,
                                 returnTokenIds: try optionalBool(object, "return_token_ids") ?? false,
                                 continuousUsage: try streamHasContinuousUsage(object), grammar: grammar, forcedTool: forcedTool)
    }

    /// `tool_choice` "required" or `{"type": "function", "function": {"name"}}` (with `tools`);
    /// nil for "auto", "none" or none. (Its shape is checked with the tools, in `chatTools`.)
    func forcedToolCall(_ object: [String: Any], _ ordered: JSON) throws -> ForcedToolCall? {
        guard let choice = ordered["tool_choice"], !choice.isNull else { return nil }
        if let mode = choice.string {
            guard mode == "required" else { return nil }
            guard Self.isGiven(object, "tools"), !(ordered["tools"]?.array ?? []).isEmpty else {
                throw APIError("'tool_choice' \"required\" needs a non-empty 'tools' list", param: "tool_choice")
            }
            return .required
        }
        guard let name = choice["function"]?["name"]?.string else {
            throw APIError("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                           param: "tool_choice")
        }
        guard Self.isGiven(object, "tools") else { throw APIError("'tool_choice' names a function but the request has no 'tools'", param: "tool_choice") }
        return .named(name)
    }

    /// `cache_salt`: a non-empty string, or absent.
    func cacheSalt(_ object: [String: Any]) throws -> String? {
        guard let value = object["cache_salt"], !(value is NSNull) else { return nil }
        guard let salt = value as? String else {
            throw APIError("'cache_salt' must be a string, got \(Self.describe(value))", param: "cache_salt")
        }
        guard !salt.isEmpty else { throw APIError("'cache_salt' must not be empty", param: "cache_salt") }
        return salt
    }

    /// `priority`: an integer (0 when absent); whether the engine schedules by it, the engine says.
    func priority(_ object: [String: Any]) throws -> Int {
        guard let value = object["priority"], !(value is NSNull) else { return 0 }
        guard let priority = jsonInt(value) else {
            throw APIError("'priority' must be an integer, got \(Self.describe(value))", param: "priority")
        }
        return priority
    }

    /// `n`: an integer in 1...maxChoices.
    func choicesPerPrompt(_ object: [String: Any]) throws -> Int {
        guard let value = object["n"], !(value is NSNull) else { return 1 }
        guard let n = jsonInt(value), n >= 1 else { throw APIError("'n' must be an integer >= 1, got \(Self.describe(value))", param: "n") }
        guard n <= CompletionRequest.maxChoices else {
            throw APIError("'n' must be at most \(CompletionRequest.maxChoices), got \(n)", param: "n")
        }
        return n
    }

    /// Completions take `logprobs` as a count; chat takes the flag `logprobs` and the count
    /// `top_logprobs`, which needs the flag.
    func checkLogprobFields(_ object: [String: Any], chat: Bool) throws {
        let flag = object["logprobs"].flatMap { $0 is NSNull ? nil : $0 }
        let top = object["top_logprobs"].flatMap { $0 is NSNull ? nil : $0 }
        if chat {
            if let flag, !isJSONBool(flag) {
                throw APIError("'logprobs' must be a boolean in chat completions (the count of alternatives goes in 'top_logprobs')",
                               param: "logprobs")
            }
            if let top {
                guard jsonInt(top) != nil else { throw APIError("'top_logprobs' must be an integer, got \(Self.describe(top))", param: "top_logprobs") }
                guard flag as? Bool == true else { throw APIError("'top_logprobs' needs 'logprobs': true", param: "top_logprobs") }
            }
        } else if let flag, jsonInt(flag) == nil {
            throw APIError("'logprobs' must be an integer (0...\(SamplingParameters.maxLogprobs)) in completions, got \(Self.describe(flag))",
                           param: "logprobs")
        }
    }

    /// A JSON value as it would read in the body, for messages.
    static func describe(_ value: Any) -> String {
        if isJSONBool(value), let flag = value as? Bool { return flag ? "true" : "false" }
        if value is NSNull { return "null" }
        if let text = value as? String { return "\"\(text)\"" }
        if value is [Any] { return "a list" }
        if value is [String: Any] { return "an object" }
        return "\(value)"
    }
}
