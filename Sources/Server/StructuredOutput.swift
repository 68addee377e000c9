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
/// name with the first piece). A required list goes out call by call as it is written: each call's
/// name once it is whole, then its parameters' JSON text piece by piece (the grammar writes the
/// list as `[{"name": ..., "parameters": {...}}, ...]`); a list in another shape (a tool whose
/// parameters are not an object) goes out at the answer's end, each call whole, and a list cut
/// short by its length as content.
struct ForcedCallStreamer {
    let forced: ForcedToolCall
    private var id: String?
    /// Required lists: the answer so far, how far it is read, and where the reading stands.
    private var s: [Unicode.Scalar] = []
    private var consumed = 0
    private var phase = ListPhase.open
    private var body = CallBodyStream(argumentKeys: ["parameters"])
    private var namedCalls = 0

    enum ListPhase: Equatable { case open, call, afterArguments, afterCall, done, holding }

    init(_ forced: ForcedToolCall) { self.forced = forced }

    var callCount: Int {
        switch forced {
        case .named: namedCalls
        case .required: body.callCount
        }
    }

    mutating func step(appending piece: String, final: Bool) -> (content: String, calls: [ToolCallDelta]) {
        switch forced {
        case .named(let name):
            guard !piece.isEmpty || (final && id == nil) else { return ("", []) }
            if id == nil {
                id = ToolCall.newID()
                namedCalls = 1
                return ("", [ToolCallDelta(index: 0, id: id, name: name, arguments: piece)])
            }
            return ("", [ToolCallDelta(index: 0, id: nil, name: nil, arguments: piece)])
        case .required:
            s.append(contentsOf: piece.unicodeScalars)
            var calls: [ToolCallDelta] = []
            readList(final: final, into: &calls)
            guard final, phase != .done else { return ("", calls) }
            // Not whole, or not in the shape that streams: the rest goes out as the whole answer's parse.
            let text = String(String.UnicodeScalarView(s))
            guard let parsed = forced.calls(in: text), parsed.calls.count >= body.callCount else {
                return (body.callCount == 0 ? text : "", calls)
            }
            body.whole(Array(parsed.calls.dropFirst(body.callCount)), into: &calls)
            return ("", calls)
        }
    }

    /// Reads the list as far as it goes: `[`, then calls separated by `,`, then `]`, whitespace
    /// between them. Anything else leaves it holding (the answer goes out whole at its end).
    private mutating func readList(final: Bool, into calls: inout [ToolCallDelta]) {
        while phase != .done && phase != .holding {
            while consumed < s.count, s[consumed].properties.isWhitespace { consumed += 1 }
            guard consumed < s.count else { return }
            let next = s[consumed]
            switch phase {
            case .open:
                guard next == "[" else { phase = .holding; return }
                consumed += 1
                phase = .call
            case .call:
                switch body.advance(s, consumed: &consumed, final: final, into: &calls) {
                case .waiting: return
                case .notStreamable: phase = .holding
                case .argumentsEnded: phase = .afterArguments
                }
            case .afterArguments:
                guard next == "}" else { phase = .holding; return }
                consumed += 1
                phase = .afterCall
            case .afterCall:
                switch next {
                case ",": consumed += 1; phase = .call
                case "]": consumed += 1; phase = .done
                default: phase = .holding
                }
            case .done, .holding:
                return
            }
        }
    }
}
