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
    func completionPrompts(_ object: [String: Any]) throws -> [PromptInput] {
        let shapes = "a string, a list of strings, a list of token ids, or a list of token-id lists"
        guard let value = object["prompt"], !(value is NSNull) else { throw APIError("'prompt' is required", param: "prompt") }
        func text(_ text: String, _ name: String) throws -> PromptInput {
            guard !text.isEmpty else { throw APIError("\(name) is empty", param: "prompt") }
            return PromptInput(ids: tokenizer.encode(text, addSpecialTokens: true), text: text)
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

    /// `messages` rendered by the model's chat template, as ids (/v1/chat/completions with the
    /// generation prompt; /tokenize with its own `add_generation_prompt` and `add_special_tokens`).
    func chatPrompt(_ object: [String: Any], addGenerationPrompt: Bool = true, addSpecialTokens: Bool = true) throws -> [Int] {
        guard let value = object["messages"], !(value is NSNull) else { throw APIError("'messages' is required", param: "messages") }
        guard let list = value as? [Any], !list.isEmpty else {
            throw APIError("'messages' must be a non-empty list of {role, content} objects", param: "messages")
        }
        let messages = try list.enumerated().map { try chatMessage($0.element, index: $0.offset) }
        guard let chatTemplate else {
            throw APIError("this model has no usable chat template (\(chatTemplateProblem ?? "none")); use /v1/completions", param: "messages")
        }
        do {
            return tokenizer.encode(try chatTemplate.render(messages, addGenerationPrompt: addGenerationPrompt), addSpecialTokens: addSpecialTokens)
        } catch {
            throw APIError("the chat template cannot render these messages: \(error)", param: "messages")
        }
    }

    /// One message: a known role, and content as a string or a list of text parts; an assistant
    /// message that carries `tool_calls` may have null content. (`ChatMessage` holds the role and
    /// the text; the tool calls themselves are not passed to the template yet.)
    func chatMessage(_ item: Any, index: Int) throws -> ChatMessage {
        let name = "messages[\(index)]"
        guard let message = item as? [String: Any] else { throw APIError("\(name) must be an object with 'role' and 'content'", param: "messages") }
        guard let role = message["role"] as? String else { throw APIError("\(name) must have a string 'role'", param: "messages") }
        guard Self.chatRoles.contains(role) else {
            throw APIError("\(name).role must be one of \(Self.chatRoles.joined(separator: ", ")), got \"\(role)\"", param: "messages")
        }
        let content: String
        switch message["content"] {
        case let text as String:
            content = text
        case let parts as [Any]:
            content = try parts.enumerated().map { offset, part -> String in
                guard let part = part as? [String: Any], part["type"] as? String == "text", let text = part["text"] as? String else {
                    throw APIError("\(name).content[\(offset)] must be a text part ({\"type\": \"text\", \"text\": ...}); only text is supported",
                                   param: "messages")
                }
                return text
            }.joined()
        case nil, is NSNull:
            let toolCalls = message["tool_calls"].map { !($0 is NSNull) } ?? false
            guard role == "assistant" && toolCalls else {
                throw APIError("\(name).content is required (only an assistant message with tool_calls may leave it out)", param: "messages")
            }
            content = ""
        default:
            throw APIError("\(name).content must be a string or a list of text parts", param: "messages")
        }
        return ChatMessage(role: role == "developer" ? "system" : role, content: content)
    }
}
