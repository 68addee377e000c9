import Foundation
import Jinja
import Runtime
import Tokenizers

/// vLLM's tool-call parsers (`serve --enable-auto-tool-choice --tool-call-parser NAME`): a
/// model answering a chat request that carries `tools` writes its calls in its chat template's
/// format; the server returns them as OpenAI's `tool_calls` (finish_reason "tool_calls"), with
/// any other text as the message's content. Text that only looks like a call (not valid JSON,
/// no name) stays content.
public enum ToolCallFormat: String, Sendable, CaseIterable {
    /// `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, one block per call, anywhere
    /// in the answer (Hermes 2 Pro, Qwen2.5).
    case hermes
    /// The whole answer is `{"name": ..., "parameters": {...}}` (or "arguments"), after an
    /// optional `<|python_tag|>`; several calls are separated by ";" (Llama 3.1, 3.2).
    case llama3JSON = "llama3_json"
}

/// One call: the function's name and its arguments as JSON text (what OpenAI's `arguments` holds).
struct ToolCall: Equatable, Sendable {
    let name: String
    let arguments: String

    /// A new call id, in OpenAI's style.
    static func newID() -> String { "call_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased().prefix(24) }

    /// OpenAI's `message.tool_calls` entries (streamed calls go out as `ToolCallDelta`s).
    static func objects(_ calls: [ToolCall]) -> [[String: Any]] {
        calls.map { call in ["id": newID(), "type": "function", "function": ["name": call.name, "arguments": call.arguments]] }
    }
}

/// An answer split into what it said and what it called.
struct ParsedToolCalls: Equatable, Sendable {
    /// The text outside the calls, trimmed; nil when there is none.
    var content: String?
    var calls: [ToolCall]
}

extension ToolCallFormat {
    static let hermesOpen = "<tool_call>", hermesClose = "</tool_call>", pythonTag = "<|python_tag|>"

    /// The calls in a whole answer, or nil when it holds none (then it is all content).
    func parse(_ text: String) -> ParsedToolCalls? {
        switch self {
        case .hermes: return Self.parseHermes(text)
        case .llama3JSON: return Self.parseLlama3(text)
        }
    }

    private static func parseHermes(_ text: String) -> ParsedToolCalls? {
        var calls: [ToolCall] = []
        var content = ""
        var rest = Substring(text)
        while let open = rest.range(of: hermesOpen) {
            content += rest[..<open.lowerBound]
            let body = rest[open.upperBound...]
            // An unclosed last block (the answer hit its length) is parsed if its JSON is whole.
            let close = body.range(of: hermesClose)
            guard let call = call(from: String(body[..<(close?.lowerBound ?? body.endIndex)]), argumentKeys: ["arguments"]) else {
                return nil
            }
            calls.append(call)
            rest = close.map { body[$0.upperBound...] } ?? ""
        }
        guard !calls.isEmpty else { return nil }
        content += rest
        let trimmed = content.trimmingCharacters(in: .whitespacesAndNewlines)
        return ParsedToolCalls(content: trimmed.isEmpty ? nil : trimmed, calls: calls)
    }

    private static func parseLlama3(_ text: String) -> ParsedToolCalls? {
        var body = text.trimmingCharacters(in: .whitespacesAndNewlines)
        if body.hasPrefix(pythonTag) { body = String(body.dropFirst(pythonTag.count)).trimmingCharacters(in: .whitespacesAndNewlines) }
        guard body.hasPrefix("{") else { return nil }
        var calls: [ToolCall] = []
        for piece in splitTopLevel(body, on: ";") {
            guard let call = call(from: piece, argumentKeys: ["parameters", "arguments"]) else { return nil }
            calls.append(call)
        }
        return calls.isEmpty ? nil : ParsedToolCalls(content: nil, calls: calls)
    }

    /// `{"name": "...", KEY: {...}}` as a call; nil when it is not one.
    private static func call(from json: String, argumentKeys: [String]) -> ToolCall? {
        guard let object = try? JSON.parse(json.trimmingCharacters(in: .whitespacesAndNewlines), source: "a tool call"),
              let name = object["name"]?.string, !name.isEmpty else { return nil }
        var arguments = argumentKeys.lazy.compactMap { object[$0] }.first ?? .object([])
        // Some models write the arguments as a string of JSON.
        if let text = arguments.string, let inner = try? JSON.parse(text, source: "tool call arguments") { arguments = inner }
        guard arguments.members != nil, let text = JinjaValue(arguments).pythonJSON else { return nil }
        return ToolCall(name: name, arguments: text)
    }

    /// `text` cut at `separator`s that are outside strings and brackets.
    private static func splitTopLevel(_ text: String, on separator: Unicode.Scalar) -> [String] {
        var pieces: [String] = [], current = String.UnicodeScalarView(), nesting = JSONNesting()
        for c in text.unicodeScalars {
            if c == separator && nesting.atTopLevel {
                pieces.append(String(current))
                current = String.UnicodeScalarView()
                continue
            }
            nesting.take(c)
            current.append(c)
        }
        if !String(current).trimmingCharacters(in: .whitespaces).isEmpty { pieces.append(String(current)) }
        return pieces
    }
}
