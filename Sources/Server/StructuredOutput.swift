import Foundation
import Jinja
import Structured
import Synchronization
import Tokenizers

/// A forced tool call (`tool_choice`): the answer is generated under a grammar of the call and
/// returned as `tool_calls`.
enum ForcedToolCall: Equatable, Sendable {
    /// `{"type": "function", "function": {"name": NAME}}`: the answer is that function's
    /// arguments, under its `parameters` schema.
    case named(String)
    /// `"required"`: the answer is a JSON list of one or more `{"name", "parameters"}` calls of
    /// the given tools, each under its own schema (vLLM's shape).
    case required
}

extension OpenAIServer {
    /// The request's output constraint, from whichever one field gives it (two are a 400).
    /// `ordered` is the body parsed with key order kept, so a schema's properties are
    /// generated in the order the client wrote them.
    func outputConstraint(_ object: [String: Any], _ ordered: JSON) throws -> (OutputConstraint, field: String)? {
        var found: [(OutputConstraint, String)] = []
        if Self.isGiven(object, "response_format") {
            if let c = try responseFormat(ordered["response_format"] ?? .null) { found.append((c, "response_format")) }
        }
        if Self.isGiven(object, "structured_outputs") {
            found.append((try structuredOutputs(ordered["structured_outputs"] ?? .null), "structured_outputs"))
        }
        for (field, make) in [("guided_json", Self.jsonConstraint), ("guided_regex", Self.regexConstraint),
                              ("guided_choice", Self.choiceConstraint), ("guided_grammar", Self.grammarConstraint)] as [(String, (JSON, String) throws -> OutputConstraint)] {
            if Self.isGiven(object, field) { found.append((try make(ordered[field] ?? .null, field), field)) }
        }
        if Self.isGiven(object, "guided_whitespace_pattern") {
            throw APIError("'guided_whitespace_pattern' is not supported (JSON output allows a little whitespace at each place JSON does)",
                           param: "guided_whitespace_pattern")
        }
        guard found.count <= 1 else {
            throw APIError("the request constrains its output in \(found.count) ways (\(found.map { "'\($0.1)'" }.joined(separator: ", "))); give one",
                           param: found[1].1)
        }
        return found.first.map { ($0.0, field: $0.1) }
    }

    /// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}`, or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
    private func responseFormat(_ value: JSON) throws -> OutputConstraint? {
        guard value.members != nil, let type = value["type"]?.string else {
            throw APIError("'response_format' must be an object with a 'type' (\"text\", \"json_object\" or \"json_schema\")", param: "response_format")
        }
        switch type {
        case "text": return nil
        case "json_object": return .jsonObject
        case "json_schema":
            guard let spec = value["json_schema"], spec.members != nil else {
                throw APIError("'response_format.json_schema' must be an object with a 'schema'", param: "response_format")
            }
            guard let schema = spec["schema"] else {
                throw APIError("'response_format.json_schema.schema' is required", param: "response_format")
            }
            return try Self.jsonConstraint(schema, "response_format.json_schema.schema")
        default:
            throw APIError("'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", got \"\(type)\"", param: "response_format")
        }
    }

    /// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`, `json_object`.
    private func structuredOutputs(_ value: JSON) throws -> OutputConstraint {
        guard let members = value.members else {
            throw APIError("'structured_outputs' must be an object with one of json, regex, choice, grammar, json_object", param: "structured_outputs")
        }
        let ignored: Set<String> = ["backend", "disable_fallback", "disable_additional_properties", "disable_any_whitespace"]
        var found: [OutputConstraint] = []
        for (key, v) in members {
            let field = "structured_outputs.\(key)"
            switch key {
            case "json": if !v.isNull { found.append(try Self.jsonConstraint(v, field)) }
            case "regex": if !v.isNull { found.append(try Self.regexConstraint(v, field)) }
            case "choice": if !v.isNull { found.append(try Self.choiceConstraint(v, field)) }
            case "grammar": if !v.isNull { found.append(try Self.grammarConstraint(v, field)) }
            case "json_object": if v.bool == true { found.append(.jsonObject) }
            default:
                guard ignored.contains(key) else {
                    throw APIError("'\(field)' is not supported (give one of json, regex, choice, grammar, json_object)", param: "structured_outputs")
                }
            }
        }
        guard found.count == 1 else {
            throw APIError("'structured_outputs' must give exactly one of json, regex, choice, grammar, json_object (it gives \(found.count))",
                           param: "structured_outputs")
        }
        return found[0]
    }

    /// A schema: an object or `true`, or a string holding one (vLLM takes both).
    static func jsonConstraint(_ value: JSON, _ field: String) throws -> OutputConstraint {
        let param = String(field.prefix { $0 != "." })
        var schema = value
        if let text = value.string {
            do { schema = try JSON.parse(text, source: field) } catch {
                throw APIError("'\(field)' is not valid JSON: \(error)", param: param)
            }
        }
        guard schema.members != nil || schema.bool == true else {
            throw APIError("'\(field)' must be a JSON Schema object", param: param)
        }
        guard let text = JinjaValue(schema).pythonJSON else { throw APIError("'\(field)' cannot be written back as JSON", param: param) }
        return .jsonSchema(text)
    }

    static func regexConstraint(_ value: JSON, _ field: String) throws -> OutputConstraint {
        let param = String(field.prefix { $0 != "." })
        guard let pattern = value.string, !pattern.isEmpty else { throw APIError("'\(field)' must be a non-empty string", param: param) }
        return .regex(pattern)
    }

    static func choiceConstraint(_ value: JSON, _ field: String) throws -> OutputConstraint {
        let param = String(field.prefix { $0 != "." })
        guard let list = value.array, !list.isEmpty, list.allSatisfy({ $0.string.map { !$0.isEmpty } ?? false }) else {
            throw APIError("'\(field)' must be a non-empty list of non-empty strings", param: param)
        }
        return .choice(list.map { $0.string! })
    }

    static func grammarConstraint(_ value: JSON, _ field: String) throws -> OutputConstraint {
        let param = String(field.prefix { $0 != "." })
        guard let text = value.string, !text.isEmpty else { throw APIError("'\(field)' must be a non-empty GBNF grammar", param: param) }
        return .grammar(text)
    }

    /// The constraint of a forced call: the named function's parameters, or a list of calls of any tool.
    /// With `parallel` false (OpenAI's `parallel_tool_calls`), the list holds one call.
    static func toolConstraint(_ forced: ForcedToolCall, tools: [JSON], parallel: Bool = true) throws -> OutputConstraint {
        func parameters(_ tool: JSON) -> JSON {
            let p = tool["function"]?["parameters"] ?? .null
            return p.isNull ? .object([("type", .string("object"))]) : p
        }
        func name(_ tool: JSON) -> String { tool["function"]?["name"]?.string ?? "" }
        let schema: JSON
        switch forced {
        case .named(let wanted):
            guard let tool = tools.first(where: { name($0) == wanted }) else {
                throw APIError("'tool_choice' names the function \"\(wanted)\", which is not in 'tools'", param: "tool_choice")
            }
            schema = parameters(tool)
        case .required:
            let calls = tools.map { tool -> JSON in
                .object([("type", .string("object")),
                         ("properties", .object([("name", .object([("const", .string(name(tool)))])), ("parameters", parameters(tool))])),
                         ("required", .array([.string("name"), .string("parameters")]))])
            }
            schema = .object([("type", .string("array")), ("minItems", .int(1))] + (parallel ? [] : [("maxItems", .int(1))])
                             + [("items", calls.count == 1 ? calls[0] : .object([("anyOf", .array(calls))]))])
        }
        return try jsonConstraint(schema, "tools")
    }

    /// The compiled grammar of a constraint; a constraint the compiler cannot use is a 400 naming `field`.
    func compiledGrammar(_ constraint: OutputConstraint, field: String) throws -> CompiledGrammar {
        do {
            return try grammars.compiled(constraint)
        } catch let error as GrammarError {
            throw APIError("'\(field)': cannot constrain the output to \(constraint.describes): \(error.message)", param: field)
        } catch {
            throw APIError("'\(field)': \(error)", param: field)
        }
    }
}

extension ForcedToolCall {
    /// The calls in a whole answer: a named function's arguments as they were written, or
    /// (required) the list's calls with their parameters written back compactly. Nil when the
    /// answer is not a whole call (it hit its length): it is returned as content then.
    func calls(in text: String) -> ParsedToolCalls? {
        switch self {
        case .named(let name):
            guard (try? JSON.parse(text, source: "the forced call's arguments")) != nil else { return nil }
            return ParsedToolCalls(content: nil, calls: [ToolCall(name: name, arguments: text)])
        case .required:
            guard let list = (try? JSON.parse(text, source: "the forced calls"))?.array else { return nil }
            var calls: [ToolCall] = []
            for item in list {
                guard let name = item["name"]?.string, let parameters = item["parameters"], let arguments = JinjaValue(parameters).pythonJSON else {
                    return nil
                }
                calls.append(ToolCall(name: name, arguments: arguments))
            }
            return calls.isEmpty ? nil : ParsedToolCalls(content: nil, calls: calls)
        }
    }
}

/// Streams a forced call. A named function's arguments go out as they are written (its id and
/// name with the first piece); a required list goes out at the answer's end, each call whole
/// (or, cut short by its length, as content).
struct ForcedCallStreamer {
    let forced: ForcedToolCall
    private var held = ""
    private var id: String?
    private(set) var callCount = 0

    init(_ forced: ForcedToolCall) { self.forced = forced }

    mutating func step(appending piece: String, final: Bool) -> (content: String, calls: [ToolCallDelta]) {
        switch forced {
        case .named(let name):
            guard !piece.isEmpty || (final && id == nil) else { return ("", []) }
            if id == nil {
                id = ToolCall.newID()
                callCount = 1
                return ("", [ToolCallDelta(index: 0, id: id, name: name, arguments: piece)])
            }
            return ("", [ToolCallDelta(index: 0, id: nil, name: nil, arguments: piece)])
        case .required:
            held += piece
            guard final else { return ("", []) }
            guard let parsed = forced.calls(in: held) else { return (held, []) }
            callCount = parsed.calls.count
            let deltas = parsed.calls.enumerated().map { ToolCallDelta(index: $0, id: ToolCall.newID(), name: $1.name, arguments: $1.arguments) }
            return ("", deltas)
        }
    }
}
