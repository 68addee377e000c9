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
    func outputConstraint(_ ordered: JSON) throws -> (OutputConstraint, field: String)? {
        do {
            return try OutputConstraint.fromRequest(ordered).map { ($0.constraint, field: $0.field) }
        } catch let error as ConstraintFieldError {
            throw APIError(error.message, param: error.field)
        }
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
        do { return try OutputConstraint.json(schema, "tools") } catch let error as ConstraintFieldError {
            throw APIError(error.message, param: error.field)
        }
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
