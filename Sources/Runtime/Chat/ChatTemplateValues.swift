import Jinja
import Tokenizers

/// What a chat template sees of the request: the Python values transformers would hand jinja2
/// (json.loads of the request, dicts in key order).
extension JinjaValue {
    public init(_ json: JSON) {
        switch json {
        case .null: self = .none
        case .bool(let b): self = .bool(b)
        case .int(let i): self = .int(i)
        case .double(let d): self = .double(d)
        case .string(let s): self = .string(s)
        case .array(let items): self = .list(items.map(JinjaValue.init))
        // A repeated key keeps its first place and its last value, as in a Python dict.
        case .object(let members): self = .dict(JinjaDict(members.map { ($0.0, JinjaValue($0.1)) }))
        }
    }

    /// The message dict: only the keys that are set, in ``ChatMessage``'s order.
    init(_ message: ChatMessage) {
        var pairs: [(String, JinjaValue)] = [("role", .string(message.role)), ("content", JinjaValue(message.content))]
        if let calls = message.toolCalls {
            pairs.append(("tool_calls", .list(calls.map { call in
                var fields: [(String, JinjaValue)] = []
                if let id = call.id { fields.append(("id", .string(id))) }
                fields.append(("type", "function"))
                fields.append(("function", JinjaValue(pairs: [("name", .string(call.name)), ("arguments", JinjaValue(call.arguments))])))
                return JinjaValue(pairs: fields)
            })))
        }
        if let id = message.toolCallID { pairs.append(("tool_call_id", .string(id))) }
        if let name = message.name { pairs.append(("name", .string(name))) }
        self = JinjaValue(pairs: pairs)
    }
}
