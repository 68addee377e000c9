import Tokenizers

/// A problem with a request's structured-output fields: what is wrong, and the top-level field
/// it is about (a server's 400 names it as the error's `param`).
public struct ConstraintFieldError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public var field: String
    public init(_ message: String, field: String) {
        self.message = message
        self.field = field
    }
    public var description: String { message }
}

extension OutputConstraint {
    /// The fields a request may constrain its answer with.
    public static let requestFields = ["response_format", "structured_outputs", "guided_json", "guided_regex", "guided_choice",
                                       "guided_grammar", "guided_whitespace_pattern"]

    /// The constraint a request body asks for (OpenAI's `response_format`, vLLM's
    /// `structured_outputs` and its older `guided_*` fields), and the field that gave it; nil
    /// when none does. More than one is an error. `body` keeps the key order it was sent in, so
    /// a schema's properties are generated in the order the client wrote them.
    public static func fromRequest(_ body: JSON) throws -> (constraint: OutputConstraint, field: String)? {
        func given(_ field: String) -> JSON? { body[field].flatMap { $0.isNull ? nil : $0 } }
        var found: [(OutputConstraint, String)] = []
        if let value = given("response_format"), let c = try responseFormat(value) { found.append((c, "response_format")) }
        if let value = given("structured_outputs") { found.append((try structuredOutputs(value), "structured_outputs")) }
        for (field, make) in [("guided_json", json), ("guided_regex", regex), ("guided_choice", choice),
                              ("guided_grammar", grammarText)] as [(String, (JSON, String) throws -> OutputConstraint)] {
            if let value = given(field) { found.append((try make(value, field), field)) }
        }
        if given("guided_whitespace_pattern") != nil {
            throw ConstraintFieldError("'guided_whitespace_pattern' is not supported (JSON output allows nothing, a space, or a newline and an indent at each place JSON allows whitespace)",
                                       field: "guided_whitespace_pattern")
        }
        guard found.count <= 1 else {
            throw ConstraintFieldError("the request constrains its output in \(found.count) ways (\(found.map { "'\($0.1)'" }.joined(separator: ", "))); give one",
                                       field: found[1].1)
        }
        return found.first.map { (constraint: $0.0, field: $0.1) }
    }

    /// OpenAI's `response_format`: `{"type": "text"}` (nil), `{"type": "json_object"}`, or
    /// `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`.
    static func responseFormat(_ value: JSON) throws -> OutputConstraint? {
        let field = "response_format"
        guard value.members != nil, let type = value["type"]?.string else {
            throw ConstraintFieldError("'response_format' must be an object with a 'type' (\"text\", \"json_object\" or \"json_schema\")", field: field)
        }
        switch type {
        case "text": return nil
        case "json_object": return .jsonObject
        case "json_schema":
            guard let spec = value["json_schema"], spec.members != nil else {
                throw ConstraintFieldError("'response_format.json_schema' must be an object with a 'schema'", field: field)
            }
            guard let schema = spec["schema"] else {
                throw ConstraintFieldError("'response_format.json_schema.schema' is required", field: field)
            }
            return try json(schema, "response_format.json_schema.schema")
        default:
            throw ConstraintFieldError("'response_format.type' must be \"text\", \"json_object\" or \"json_schema\", got \"\(type)\"", field: field)
        }
    }

    /// vLLM's `structured_outputs`: exactly one of `json`, `regex`, `choice`, `grammar`, `json_object`.
    static func structuredOutputs(_ value: JSON) throws -> OutputConstraint {
        let field = "structured_outputs"
        guard let members = value.members else {
            throw ConstraintFieldError("'structured_outputs' must be an object with one of json, regex, choice, grammar, json_object", field: field)
        }
        let ignored: Set<String> = ["backend", "disable_fallback", "disable_additional_properties", "disable_any_whitespace"]
        var found: [OutputConstraint] = []
        for (key, v) in members {
            let path = "structured_outputs.\(key)"
            switch key {
            case "json": if !v.isNull { found.append(try json(v, path)) }
            case "regex": if !v.isNull { found.append(try regex(v, path)) }
            case "choice": if !v.isNull { found.append(try choice(v, path)) }
            case "grammar": if !v.isNull { found.append(try grammarText(v, path)) }
            case "json_object": if v.bool == true { found.append(.jsonObject) }
            default:
                guard ignored.contains(key) else {
                    throw ConstraintFieldError("'\(path)' is not supported (give one of json, regex, choice, grammar, json_object)", field: field)
                }
            }
        }
        guard found.count == 1 else {
            throw ConstraintFieldError("'structured_outputs' must give exactly one of json, regex, choice, grammar, json_object (it gives \(found.count))",
                                       field: field)
        }
        return found[0]
    }

    /// The top-level field of a path such as `structured_outputs.json`.
    private static func topLevel(_ path: String) -> String { String(path.prefix { $0 != "." }) }

    /// A schema: an object or `true`, or a string holding one (vLLM takes both); `path` names it in errors.
    public static func json(_ value: JSON, _ path: String) throws -> OutputConstraint {
        var schema = value
        if let text = value.string {
            do { schema = try JSON.parse(text, source: path) } catch {
                throw ConstraintFieldError("'\(path)' is not valid JSON: \(error)", field: topLevel(path))
            }
        }
        guard schema.members != nil || schema.bool == true else {
            throw ConstraintFieldError("'\(path)' must be a JSON Schema object", field: topLevel(path))
        }
        return .jsonSchema(schema.compactText)
    }

    static func regex(_ value: JSON, _ path: String) throws -> OutputConstraint {
        guard let pattern = value.string, !pattern.isEmpty else { throw ConstraintFieldError("'\(path)' must be a non-empty string", field: topLevel(path)) }
        return .regex(pattern)
    }

    static func choice(_ value: JSON, _ path: String) throws -> OutputConstraint {
        guard let list = value.array, !list.isEmpty, list.allSatisfy({ $0.string.map { !$0.isEmpty } ?? false }) else {
            throw ConstraintFieldError("'\(path)' must be a non-empty list of non-empty strings", field: topLevel(path))
        }
        return .choice(list.map { $0.string! })
    }

    static func grammarText(_ value: JSON, _ path: String) throws -> OutputConstraint {
        guard let text = value.string, !text.isEmpty else { throw ConstraintFieldError("'\(path)' must be a non-empty GBNF grammar", field: topLevel(path)) }
        return .grammar(text)
    }
}
