import Tokenizers

/// One turn of a conversation, as OpenAI's chat API and Hugging Face chat templates shape it.
///
/// A chat template sees it as a dict with the keys that are set, in this order: `role`,
/// `content` (None when nil), `tool_calls`, `tool_call_id`, `name`. Absent keys stay absent,
/// because templates test for them (`'tool_calls' in message`, `message.name is defined`).
public struct ChatMessage: Sendable, Equatable {
    /// "system", "user", "assistant", or "tool" (templates decide what else they accept).
    public var role: String
    /// The text; nil for an assistant turn that only calls tools.
    public var content: String?
    /// The assistant's tool calls; nil when it made none.
    public var toolCalls: [ChatToolCall]?
    /// A tool message: the id of the call it answers.
    public var toolCallID: String?
    /// A tool message: the tool's name (some templates print it).
    public var name: String?

    public init(role: String, content: String?, toolCalls: [ChatToolCall]? = nil, toolCallID: String? = nil, name: String? = nil) {
        self.role = role
        self.content = content
        self.toolCalls = toolCalls
        self.toolCallID = toolCallID
        self.name = name
    }

    public static func system(_ content: String) -> ChatMessage { ChatMessage(role: "system", content: content) }
    public static func user(_ content: String) -> ChatMessage { ChatMessage(role: "user", content: content) }
    public static func assistant(_ content: String) -> ChatMessage { ChatMessage(role: "assistant", content: content) }
}

/// A function call that an assistant turn made.
public struct ChatToolCall: Sendable, Equatable {
    public var id: String?
    public var name: String
    /// The arguments as a JSON object (templates write them with `tojson`, in this key order).
    public var arguments: JSON

    public init(id: String?, name: String, arguments: JSON) {
        self.id = id
        self.name = name
        self.arguments = arguments
    }
}

// MARK: - Reading OpenAI-shaped messages

extension ChatMessage {
    /// The messages of an OpenAI chat request (`messages`), read from JSON that keeps key order.
    /// - Throws: ``ChatTemplateError`` naming the field at fault, e.g. `messages[2].tool_calls[0].function.arguments`.
    public static func messages(fromJSON json: JSON) throws -> [ChatMessage] {
        guard let list = json.array else { throw ChatTemplateError("messages must be a list of message objects") }
        return try list.enumerated().map { try ChatMessage(json: $1, path: "messages[\($0)]") }
    }

    /// One message object: `role`, `content` (a string, null, or a list of text parts),
    /// `tool_calls` (`[{id, type: "function", function: {name, arguments}}]`, arguments as an
    /// object or as a string holding one, as OpenAI sends it), `tool_call_id`, `name`.
    public init(json: JSON, path: String = "message") throws {
        guard json.members != nil else { throw ChatTemplateError("\(path) must be an object") }
        func string(_ key: String) throws -> String? {
            guard let value = json[key], !value.isNull else { return nil }
            guard let text = value.string else { throw ChatTemplateError("\(path).\(key) must be a string") }
            return text
        }
        guard let role = try string("role") else { throw ChatTemplateError("\(path).role is required") }
        self.init(role: role, content: try Self.content(json["content"], path: "\(path).content"),
                  toolCallID: try string("tool_call_id"), name: try string("name"))
        if let calls = json["tool_calls"], !calls.isNull {
            guard let list = calls.array else { throw ChatTemplateError("\(path).tool_calls must be a list") }
            toolCalls = try list.enumerated().map { try ChatToolCall(json: $1, path: "\(path).tool_calls[\($0)]") }
        }
    }

    /// A string, null, or OpenAI's list of parts of which only text parts are supported (joined
    /// by newlines, as vLLM joins them for templates that take string content).
    private static func content(_ value: JSON?, path: String) throws -> String? {
        guard let value, !value.isNull else { return nil }
        if let text = value.string { return text }
        guard let parts = value.array else { throw ChatTemplateError("\(path) must be a string, null, or a list of text parts") }
        return try parts.enumerated().map { index, part in
            guard part["type"]?.string == "text", let text = part["text"]?.string else {
                throw ChatTemplateError("\(path)[\(index)]: only {\"type\": \"text\", \"text\": ...} parts are supported")
            }
            return text
        }.joined(separator: "\n")
    }
}

extension ChatToolCall {
    public init(json: JSON, path: String = "tool_call") throws {
        guard json.members != nil else { throw ChatTemplateError("\(path) must be an object") }
        if let type = json["type"], !type.isNull, type.string != "function" {
            throw ChatTemplateError("\(path).type must be \"function\"")
        }
        guard let function = json["function"], function.members != nil else {
            throw ChatTemplateError("\(path).function must be an object with name and arguments")
        }
        guard let name = function["name"]?.string else { throw ChatTemplateError("\(path).function.name must be a string") }
        if let id = json["id"], !id.isNull, id.string == nil { throw ChatTemplateError("\(path).id must be a string") }
        self.init(id: json["id"]?.string, name: name,
                  arguments: try Self.arguments(function["arguments"], path: "\(path).function.arguments"))
    }

    /// An object, or a string holding one (OpenAI's wire form); absent means no arguments.
    static func arguments(_ value: JSON?, path: String) throws -> JSON {
        guard let value, !value.isNull else { return .object([]) }
        if value.members != nil { return value }
        guard let text = value.string else { throw ChatTemplateError("\(path) must be a JSON object or a string holding one") }
        let parsed: JSON
        do {
            parsed = try JSON.parse(text, source: path)
        } catch {
            throw ChatTemplateError("\(path) is not valid JSON: \(error)")
        }
        guard parsed.members != nil else { throw ChatTemplateError("\(path) must hold a JSON object") }
        return parsed
    }
}

// MARK: - Codable (OpenAI's field names)

extension ChatMessage: Codable {
    private enum Keys: String, CodingKey {
        case role, content, name
        case toolCalls = "tool_calls"
        case toolCallID = "tool_call_id"
    }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        self.init(role: try c.decode(String.self, forKey: .role), content: try c.decodeIfPresent(String.self, forKey: .content),
                  toolCalls: try c.decodeIfPresent([ChatToolCall].self, forKey: .toolCalls),
                  toolCallID: try c.decodeIfPresent(String.self, forKey: .toolCallID),
                  name: try c.decodeIfPresent(String.self, forKey: .name))
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encode(role, forKey: .role)
        try c.encode(content, forKey: .content)
        try c.encodeIfPresent(toolCalls, forKey: .toolCalls)
        try c.encodeIfPresent(toolCallID, forKey: .toolCallID)
        try c.encodeIfPresent(name, forKey: .name)
    }
}

extension ChatToolCall: Codable {
    private enum Keys: String, CodingKey { case id, type, function }
    private enum FunctionKeys: String, CodingKey { case name, arguments }

    public init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: Keys.self)
        let f = try c.nestedContainer(keyedBy: FunctionKeys.self, forKey: .function)
        // A string of JSON (OpenAI's form) is parsed here, which keeps its key order.
        let arguments: JSON?
        if let text = try? f.decode(String.self, forKey: .arguments) {
            arguments = .string(text)
        } else {
            arguments = try f.decodeIfPresent(JSON.self, forKey: .arguments)
        }
        do {
            self.init(id: try c.decodeIfPresent(String.self, forKey: .id), name: try f.decode(String.self, forKey: .name),
                      arguments: try Self.arguments(arguments, path: "function.arguments"))
        } catch let error as ChatTemplateError {
            throw DecodingError.dataCorruptedError(forKey: .arguments, in: f, debugDescription: error.message)
        }
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Keys.self)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encode("function", forKey: .type)
        var f = c.nestedContainer(keyedBy: FunctionKeys.self, forKey: .function)
        try f.encode(name, forKey: .name)
        try f.encode(arguments, forKey: .arguments)
    }
}
