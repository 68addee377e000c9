import Engine
import Foundation
import Hummingbird
import Runtime
import Tokenizers

extension OpenAIServer {
    // MARK: Request fields

    func samplingParameters(_ data: Data) throws -> SamplingParameters {
        let decoder = JSONDecoder()
        decoder.userInfo[SamplingParameters.defaultsKey] = defaults
        do {
            return try decoder.decode(SamplingParameters.self, from: data)
        } catch let DecodingError.typeMismatch(type, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)' has the wrong type (expected \(Self.typeName(type, field: field)))", param: field)
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)': \(context.debugDescription)", param: field.isEmpty ? nil : field)
        } catch {
            throw APIError("invalid sampling fields: \(error)")
        }
    }

    static func typeName(_ type: Any.Type, field: String) -> String {
        if field == "stop" { return "a string or a list of strings" }
        if type == Double.self { return "a number" }
        if type == Int.self { return "an integer" }
        if type == Bool.self { return "a boolean" }
        if type == String.self { return "a string" }
        return "\(type)"
    }

    func optionalBool(_ object: [String: Any], _ key: String) throws -> Bool? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        // JSONSerialization gives NSNumber for both numbers and booleans.
        guard isJSONBool(value), let flag = value as? Bool else { throw APIError("'\(key)' must be a boolean", param: key) }
        return flag
    }

    func streamIncludesUsage(_ object: [String: Any]) throws -> Bool {
        guard let options = object["stream_options"], !(options is NSNull) else { return false }
        guard let dict = options as? [String: Any] else { throw APIError("'stream_options' must be an object", param: "stream_options") }
        return try optionalBool(dict, "include_usage") ?? false
    }

    func completionPrompt(_ object: [String: Any]) throws -> [Int] {
        guard let value = object["prompt"], !(value is NSNull) else { throw APIError("'prompt' is required", param: "prompt") }
        if let text = value as? String { return tokenizer.encode(text, addSpecialTokens: true) }
        if let list = value as? [Any] {
            if list.count == 1, let text = list[0] as? String { return tokenizer.encode(text, addSpecialTokens: true) }
            if list.allSatisfy({ $0 is String }) {
                throw APIError("a list of several prompts is not supported yet; send one prompt a request", param: "prompt")
            }
            let ids = list.compactMap(jsonInt)
            if !list.isEmpty, ids.count == list.count { return ids }
        }
        throw APIError("'prompt' must be a string (or a list of token ids)", param: "prompt")
    }

    /// The token ids of `messages` rendered by the chat template (/v1/chat/completions, and
    /// /tokenize with its own `add_generation_prompt` and `add_special_tokens`).
    func chatPrompt(_ object: [String: Any], addGenerationPrompt: Bool = true, addSpecialTokens: Bool = true) throws -> [Int] {
        guard let value = object["messages"], !(value is NSNull) else { throw APIError("'messages' is required", param: "messages") }
        guard let list = value as? [Any], !list.isEmpty else {
            throw APIError("'messages' must be a non-empty list of {role, content} objects", param: "messages")
        }
        var messages: [ChatMessage] = []
        for (index, item) in list.enumerated() {
            guard let message = item as? [String: Any], let role = message["role"] as? String else {
                throw APIError("messages[\(index)] must be an object with a string 'role'", param: "messages")
            }
            let content: String
            if let text = message["content"] as? String {
                content = text
            } else if let parts = message["content"] as? [Any] {
                // The list form: only text parts.
                content = try parts.map { part -> String in
                    guard let part = part as? [String: Any], part["type"] as? String == "text", let text = part["text"] as? String else {
                        throw APIError("messages[\(index)].content: only text parts are supported", param: "messages")
                    }
                    return text
                }.joined()
            } else {
                throw APIError("messages[\(index)].content must be a string", param: "messages")
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        guard let chatTemplate else {
            throw APIError("this model has no usable chat template (\(chatTemplateProblem ?? "none")); use /v1/completions", param: "messages")
        }
        do {
            return tokenizer.encode(try chatTemplate.render(messages, addGenerationPrompt: addGenerationPrompt),
                                    addSpecialTokens: addSpecialTokens)
        } catch {
            throw APIError("the chat template cannot render these messages: \(error)", param: "messages")
        }
    }

}

/// True when JSONSerialization decoded the value from `true` or `false` (an NSNumber of type "c").
func isJSONBool(_ value: Any) -> Bool {
    if let number = value as? NSNumber { return String(cString: number.objCType) == "c" }
    return value is Bool
}

/// An integer that was not written as a boolean.
func jsonInt(_ value: Any) -> Int? {
    isJSONBool(value) ? nil : value as? Int
}
