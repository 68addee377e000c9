import Foundation
import Runtime
import Tokenizers

/// One completions prompt: its ids, and its text when it came as text (what `echo` shows).
struct PromptInput {
    var ids: [Int]
    var text: String?
}

extension OpenAIServer {
    /// `prompt`: a string, a list of strings, a list of token ids, or a list of token-id lists.
    /// Text gets the tokenizer's special tokens (a BOS) unless `add_special_tokens` is false
    /// (vLLM's field and default); ids go as they are.
    func completionPrompts(_ object: [String: Any]) throws -> [PromptInput] {
        let shapes = "a string, a list of strings, a list of token ids, or a list of token-id lists"
        guard let value = object["prompt"], !(value is NSNull) else { throw APIError("'prompt' is required", param: "prompt") }
        let addSpecialTokens = try optionalBool(object, "add_special_tokens") ?? true
        func text(_ text: String, _ name: String) throws -> PromptInput {
            guard !text.isEmpty else { throw APIError("\(name) is empty", param: "prompt") }
            return PromptInput(ids: tokenizer.encode(text, addSpecialTokens: addSpecialTokens), text: text)
        }
        func ids(_ list: [Any], _ name: String) throws -> PromptInput {
            guard !list.isEmpty else { throw APIError("\(name) is an empty list of token ids", param: "prompt") }
            let ids = list.compactMap(jsonInt)
            guard ids.count == list.count else { throw APIError("\(name) must hold only integer token ids", param: "prompt") }
            return PromptInput(ids: ids, text: nil)
        }
        if let string = value as? String { return [try text(string, "'prompt'")] }
        guard let list = value as? [Any] else { throw APIError("'prompt' must be \(shapes)", param: "prompt") }
        guard !list.isEmpty else { throw APIError("'prompt' is an empty list", param: "prompt") }
        if list.allSatisfy({ $0 is String }) {
            return try list.enumerated().map { try text($0.element as! String, "prompt[\($0.offset)]") }
        }
        if list.allSatisfy({ $0 is [Any] }) {
            return try list.enumerated().map { try ids($0.element as! [Any], "prompt[\($0.offset)]") }
        }
        if list.allSatisfy({ !($0 is String) && !($0 is [Any]) && !($0 is [String: Any]) }) { return [try ids(list, "'prompt'")] }
        throw APIError("'prompt' must be \(shapes), not a mix", param: "prompt")
    }

    /// The roles a message may have. `developer` (OpenAI's newer name for `system`) is read as `system`.
    static let chatRoles = ["system", "developer", "user", "assistant", "tool"]

    /// `messages` rendered by the model's chat template, as ids, the way vLLM feeds
    /// transformers' `apply_chat_template`: with the request's `tools` and `documents`, its
    /// `chat_template_kwargs` as extra template variables, and the generation prompt unless
    /// `add_generation_prompt` is false. Special tokens are not added by default (vLLM's
    /// default too): the template writes the BOS token itself. A template's `raise_exception`
    /// is a 400 carrying its message.
    ///
    /// The messages and tools are read again from `data` by a parser that keeps key order:
    /// a tool's JSON schema or a call's arguments reach the template (`tojson`) in the order
    /// the client wrote them, as they do in Python.
    /// `ordered`: the body already parsed that way (else it is parsed here).
    func chatPrompt(_ object: [String: Any], body data: Data, ordered given: JSON? = nil, addGenerationPrompt defaultGenerationPrompt: Bool = true,
                    addSpecialTokens: Bool = false) throws -> [Int] {
        guard let value = object["messages"], !(value is NSNull) else { throw APIError("'messages' is required", param: "messages") }
        guard let list = value as? [Any], !list.isEmpty else {
            throw APIError("'messages' must be a non-empty list of {role, content} objects", param: "messages")
        }
        for (index, item) in list.enumerated() { try checkChatMessage(item, index: index) }
        let ordered = try given ?? Self.orderedBody(data)
        var messages: [ChatMessage]
        do { messages = try ChatMessage.messages(fromJSON: ordered["messages"] ?? .null) } catch {
            throw APIError("\(error)", param: "messages")
        }
        for index in messages.indices where messages[index].role == "developer" { messages[index].role = "system" }
        let tools = try chatTools(object, ordered)
        let documents = try chatDocuments(object, ordered)
        let variables = try chatTemplateVariables(object, ordered)
        let addGenerationPrompt = try optionalBool(object, "add_generation_prompt") ?? defaultGenerationPrompt
        guard let chatTemplate else {
            throw APIError("this model has no usable chat template (\(chatTemplateProblem ?? "none")); use /v1/completions", param: "messages")
        }
        let text: String
        do {
            text = try chatTemplate.render(messages, tools: tools, documents: documents, addGenerationPrompt: addGenerationPrompt,
                                           variables: variables)
        } catch let error as ChatTemplateError {
            throw APIError("the chat template refused these messages: \(error.message)", param: "messages")
        } catch {
            throw APIError("the chat template cannot render these messages: \(error)", param: "messages")
        }
        return tokenizer.encode(text, addSpecialTokens: addSpecialTokens)
    }

    /// The body parsed with its key order kept (schemas and tool arguments are written back in it).
    static func orderedBody(_ data: Data) throws -> JSON {
        do { return try JSON.parse(Array(data), source: "the request body") } catch {
            throw APIError("malformed JSON in the request body: \(error)")
        }
    }

    /// `tools`: a list of `{"type": "function", "function": {"name", "description", "parameters"}}`,
    /// passed to the template as sent. `tool_choice` may be "auto", "none" (the template still
    /// sees the tools, as in vLLM), "required" or a named function (forced by a grammar: see
    /// `ForcedToolCall`).
    func chatTools(_ object: [String: Any], _ ordered: JSON) throws -> [JSON]? {
        if let choice = object["tool_choice"], !(choice is NSNull) {
            if let mode = choice as? String {
                guard ["auto", "none", "required"].contains(mode) else {
                    throw APIError("'tool_choice' must be \"auto\", \"none\", \"required\" or a named function, got \"\(mode)\"", param: "tool_choice")
                }
            } else {
                guard let named = choice as? [String: Any], (named["type"] as? String) == "function",
                      let function = named["function"] as? [String: Any], let name = function["name"] as? String, !name.isEmpty else {
                    throw APIError("'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", \"function\": {\"name\": ...}}",
                                   param: "tool_choice")
                }
            }
        }
        guard Self.isGiven(object, "tools") else { return nil }
        guard let list = ordered["tools"]?.array else { throw APIError("'tools' must be a list of tool objects", param: "tools") }
        for (index, tool) in list.enumerated() {
            let name = "tools[\(index)]"
            guard tool.members != nil else { throw APIError("\(name) must be an object", param: "tools") }
            if let type = tool["type"], type.string != "function" {
                throw APIError("\(name).type must be \"function\"", param: "tools")
            }
            guard let function = tool["function"], function.members != nil else {
                throw APIError("\(name).function must be an object with a 'name'", param: "tools")
            }
            guard let functionName = function["name"]?.string, !functionName.isEmpty else {
                throw APIError("\(name).function.name must be a non-empty string", param: "tools")
            }
            if let parameters = function["parameters"], !parameters.isNull, parameters.members == nil {
                throw APIError("\(name).function.parameters must be a JSON Schema object", param: "tools")
            }
        }
        return list
    }

    /// `documents` (vLLM's extra field, for retrieval templates): a list of objects.
    func chatDocuments(_ object: [String: Any], _ ordered: JSON) throws -> [JSON]? {
        guard Self.isGiven(object, "documents") else { return nil }
        guard let list = ordered["documents"]?.array, list.allSatisfy({ $0.members != nil }) else {
            throw APIError("'documents' must be a list of objects", param: "documents")
        }
        return list
    }

    /// `chat_template_kwargs` (vLLM's extra field): variables the template reads, such as
    /// `enable_thinking` or `date_string`.
    func chatTemplateVariables(_ object: [String: Any], _ ordered: JSON) throws -> [String: JSON] {
        guard Self.isGiven(object, "chat_template_kwargs") else { return [:] }
        guard let members = ordered["chat_template_kwargs"]?.members else {
            throw APIError("'chat_template_kwargs' must be an object", param: "chat_template_kwargs")
        }
        return Dictionary(members, uniquingKeysWith: { _, last in last })
    }

    /// One message: a known role, and content as a string or a list of text parts; an assistant
    /// message that carries `tool_calls` may have null content. (The template gets the message
    /// from `ChatMessage(json:)`; this check gives the OpenAI-shaped errors first.)
    func checkChatMessage(_ item: Any, index: Int) throws {
        let name = "messages[\(index)]"
        guard let message = item as? [String: Any] else { throw APIError("\(name) must be an object with 'role' and 'content'", param: "messages") }
        guard let role = message["role"] as? String else { throw APIError("\(name) must have a string 'role'", param: "messages") }
        guard Self.chatRoles.contains(role) else {
            throw APIError("\(name).role must be one of \(Self.chatRoles.joined(separator: ", ")), got \"\(role)\"", param: "messages")
        }
        switch message["content"] {
        case is String:
            break
        case let parts as [Any]:
            try parts.enumerated().forEach { offset, part in
                guard let part = part as? [String: Any], part["type"] as? String == "text", part["text"] is String else {
                    throw APIError("\(name).content[\(offset)] must be a text part ({\"type\": \"text\", \"text\": ...}); only text is supported",
                                   param: "messages")
                }
            }
        case nil, is NSNull:
            let toolCalls = message["tool_calls"].map { !($0 is NSNull) } ?? false
            guard role == "assistant" && toolCalls else {
                throw APIError("\(name).content is required (only an assistant message with tool_calls may leave it out)", param: "messages")
            }
        default:
            throw APIError("\(name).content must be a string or a list of text parts", param: "messages")
        }
        if role == "tool", !Self.isGiven(message, "tool_call_id") {
            // Templates that pair results with calls read it; vLLM requires it as OpenAI does.
            throw APIError("\(name).tool_call_id is required for a tool message", param: "messages")
        }
    }
}
