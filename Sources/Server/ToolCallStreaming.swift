import Foundation

/// A piece of a streamed tool call (OpenAI's `delta.tool_calls[]`): the first piece of a call
/// carries its id and name, the rest add to its arguments' JSON text.
struct ToolCallDelta: Equatable, Sendable {
    var index: Int
    var id: String?
    var name: String?
    var arguments: String

    /// `deltas` with each run of entries for one call folded into one entry (its id and name, if
    /// any, and the arguments' pieces joined): a chunk then carries at most one entry per call,
    /// as OpenAI's and vLLM's streams do.
    static func merged(_ deltas: [ToolCallDelta]) -> [ToolCallDelta] {
        var out: [ToolCallDelta] = []
        for delta in deltas {
            if let last = out.last, last.index == delta.index, delta.id == nil {
                out[out.count - 1].arguments += delta.arguments
            } else {
                out.append(delta)
            }
        }
        return out
    }

    /// The `delta.tool_calls` entry.
    var object: [String: Any] {
        var function: [String: Any] = ["arguments": arguments]
        var object: [String: Any] = ["index": index]
        if let id, let name {
            object["id"] = id
            object["type"] = "function"
            function["name"] = name
        }
        object["function"] = function
        return object
    }
}

/// Streams a chat answer under the `hermes` tool-call parser as it is written, as vLLM does:
/// content up to a `<tool_call>` goes out as it comes; then the call's name, as soon as it is
/// whole, and its arguments' JSON text piece by piece; after `</tool_call>`, content again. A
/// block that does not begin `{"name": "...", "arguments": {` (other key order, arguments as a
/// string, no JSON) waits for the answer's end and goes out whole: as calls if it parses as
/// calls, else as content. The arguments go out as the model wrote them (the whole answer's
/// parse writes them again in a canonical form; both are the same JSON).
struct HermesCallStreamer {
    enum Phase: Equatable {
        case content
        /// Inside a block: its call streams through `body`.
        case call
        /// The arguments are whole; what is left of the block is skipped.
        case afterArguments
        /// A block that does not stream: everything from `blockStart` waits for the end.
        case holding
    }

    private(set) var phase = Phase.content
    /// The answer so far, as Unicode scalars (pieces never split a scalar).
    private var s: [Unicode.Scalar] = []
    /// Unicode scalars of the answer dealt with (sent, or skipped as markup).
    private var consumed = 0
    /// Where the current block's `<tool_call>` begins.
    private var blockStart = 0
    private var body = CallBodyStream(argumentKeys: ["arguments"])
    /// Calls opened so far.
    var callCount: Int { body.callCount }
    /// Whether any content went out (text after a call then starts on a line of its own).
    private var sentContent = false
    /// After a block: whitespace before the next content is dropped.
    private var afterBlock = false

    static let open = Array(ToolCallFormat.hermesOpen.unicodeScalars), close = Array(ToolCallFormat.hermesClose.unicodeScalars)

    /// The content and call pieces that `piece`, the answer's next text, brings.
    mutating func step(appending piece: String, final: Bool) -> (content: String, calls: [ToolCallDelta]) {
        s.append(contentsOf: piece.unicodeScalars)
        let s = self.s
        var content = String.UnicodeScalarView(), calls: [ToolCallDelta] = []
        func emit(_ range: Range<Int>) {
            var range = range
            if afterBlock {
                while range.lowerBound < range.upperBound, s[range.lowerBound].properties.isWhitespace { range = (range.lowerBound + 1)..<range.upperBound }
                guard !range.isEmpty else { return }
                afterBlock = false
                if sentContent { content.append("\n") }
            }
            guard !range.isEmpty else { return }
            content.append(contentsOf: s[range])
            sentContent = true
        }
        loop: while true {
            switch phase {
            case .content:
                if let at = Self.find(Self.open, in: s, from: consumed) {
                    emit(consumed..<at)
                    blockStart = at
                    consumed = at + Self.open.count
                    phase = .call
                    continue loop
                }
                // Hold back a tail that may be the marker's beginning.
                var keep = 0
                if !final {
                    for k in stride(from: min(Self.open.count - 1, s.count - consumed), to: 0, by: -1)
                    where s[(s.count - k)...].elementsEqual(Self.open.prefix(k)) {
                        keep = k
                        break
                    }
                }
                emit(consumed..<(s.count - keep))
                consumed = s.count - keep
                break loop
            case .call:
                switch body.advance(s, consumed: &consumed, final: final, into: &calls) {
                case .waiting: break loop
                case .notStreamable: phase = .holding
                case .argumentsEnded: phase = .afterArguments
                }
            case .afterArguments:
                if let at = Self.find(Self.close, in: s, from: consumed) {
                    consumed = at + Self.close.count
                    afterBlock = true
                    phase = .content
                    continue loop
                }
                if final { consumed = s.count }
                break loop
            case .holding:
                guard final else { break loop }
                let held = String(String.UnicodeScalarView(s[blockStart...]))
                consumed = s.count
                if let parsed = ToolCallFormat.hermes.parse(held) {
                    body.whole(parsed.calls, into: &calls)
                    if let text = parsed.content {
                        afterBlock = true
                        let scalars = Array(text.unicodeScalars)
                        if sentContent { content.append("\n") }
                        content.append(contentsOf: scalars)
                    }
                } else {
                    emit(blockStart..<s.count)
                }
                break loop
            }
        }
        return (String(content), calls)
    }

    static func find(_ needle: [Unicode.Scalar], in s: [Unicode.Scalar], from start: Int) -> Int? {
        guard s.count - start >= needle.count else { return nil }
        for i in start...(s.count - needle.count) where s[i] == needle[0] && s[i..<(i + needle.count)].elementsEqual(needle) { return i }
        return nil
    }
}

/// One call as the model writes it, `{"name": "NAME", KEY: {...}}`, shared by both parsers: the
/// call's opening piece (id and name) once the name is whole and the arguments object has begun,
/// then the arguments' text as it comes.
struct CallBodyStream {
    enum Progress: Equatable {
        /// More text is needed.
        case waiting
        /// Not a call in the shape that streams (nothing went out for it).
        case notStreamable
        /// The arguments object is whole.
        case argumentsEnded
    }

    let argumentKeys: [String]
    /// Calls opened so far: the next call's index.
    private(set) var callCount = 0
    /// The arguments being scanned, once the call's opening piece went out.
    private var scan: ArgumentScan?

    init(argumentKeys: [String]) { self.argumentKeys = argumentKeys }

    /// Goes on with the call that begins (or went on) at `consumed`, adding its pieces to `calls`.
    mutating func advance(_ s: [Unicode.Scalar], consumed: inout Int, final: Bool, into calls: inout [ToolCallDelta]) -> Progress {
        if scan == nil {
            switch Self.scanPrefix(s, from: consumed, argumentKeys: argumentKeys) {
            case .needMore: return final ? .notStreamable : .waiting
            case .mismatch: return .notStreamable
            case .matched(let name, let valueStart):
                calls.append(ToolCallDelta(index: callCount, id: ToolCall.newID(), name: name, arguments: ""))
                callCount += 1
                consumed = valueStart
                scan = ArgumentScan()
            }
        }
        let end = scan!.advance(s, from: consumed)
        if end > consumed {
            calls.append(ToolCallDelta(index: callCount - 1, arguments: String(String.UnicodeScalarView(s[consumed..<end]))))
            consumed = end
        }
        guard scan!.ended else { return .waiting }
        scan = nil
        return .argumentsEnded
    }

    /// Calls parsed from a whole answer (ones that did not stream), each in one piece.
    mutating func whole(_ parsed: [ToolCall], into calls: inout [ToolCallDelta]) {
        for call in parsed {
            calls.append(ToolCallDelta(index: callCount, id: ToolCall.newID(), name: call.name, arguments: call.arguments))
            callCount += 1
        }
    }

    enum PrefixScan: Equatable { case needMore, mismatch, matched(name: String, valueStart: Int) }

    /// Whether the block body from `start` begins `{"name": "NAME", "KEY": {` (KEY one of
    /// `argumentKeys`; any whitespace between), may still, or cannot.
    static func scanPrefix(_ s: [Unicode.Scalar], from start: Int, argumentKeys: [String]) -> PrefixScan {
        var i = start
        func skipSpace() { while i < s.count, s[i].properties.isWhitespace { i += 1 } }
        func expect(_ literal: String) -> PrefixScan? {
            for c in literal.unicodeScalars {
                guard i < s.count else { return .needMore }
                guard s[i] == c else { return .mismatch }
                i += 1
            }
            return nil
        }
        skipSpace()
        if let r = expect("{") { return r }
        skipSpace()
        if let r = expect("\"name\"") { return r }
        skipSpace()
        if let r = expect(":") { return r }
        skipSpace()
        if let r = expect("\"") { return r }
        let nameStart = i
        var escaped = false
        while true {
            guard i < s.count else { return .needMore }
            let c = s[i]
            i += 1
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { break }
        }
        let raw = String(String.UnicodeScalarView(s[nameStart..<(i - 1)]))
        guard let name = try? JSONSerialization.jsonObject(with: Data(("\"" + raw + "\"").utf8), options: .fragmentsAllowed) as? String,
              !name.isEmpty else { return .mismatch }
        skipSpace()
        if let r = expect(",") { return r }
        skipSpace()
        // One of the keys: the first that the text so far is consistent with.
        let keyStart = i
        var keyResult: PrefixScan? = .mismatch
        for key in argumentKeys {
            i = keyStart
            keyResult = expect("\"\(key)\"")
            if keyResult == nil || keyResult == .needMore { break }
        }
        if let keyResult { return keyResult }
        skipSpace()
        if let r = expect(":") { return r }
        skipSpace()
        guard i < s.count else { return .needMore }
        return s[i] == "{" ? .matched(name: name, valueStart: i) : .mismatch
    }
}

/// Where JSON text stands in its nesting: brackets open and whether inside a string. The
/// streamers find where a call's arguments end with it; the whole-answer parse splits calls at
/// top-level separators with it.
struct JSONNesting {
    var depth = 0, inString = false, escaped = false
    /// Outside every string and bracket.
    var atTopLevel: Bool { depth == 0 && !inString }

    mutating func take(_ c: Unicode.Scalar) {
        if inString {
            if escaped { escaped = false } else if c == "\\" { escaped = true } else if c == "\"" { inString = false }
        } else if c == "\"" {
            inString = true
        } else if c == "{" || c == "[" {
            depth += 1
        } else if c == "}" || c == "]" {
            depth -= 1
        }
    }
}

/// Where a call's arguments object ends.
struct ArgumentScan {
    private var nesting = JSONNesting()
    private(set) var ended = false

    /// Scans from `start` up to the end of the object (the scalar after its closing brace) or
    /// of what there is; returns where it stopped.
    mutating func advance(_ s: [Unicode.Scalar], from start: Int) -> Int {
        var i = start
        while i < s.count && !ended {
            let nested = nesting.depth > 0
            nesting.take(s[i])
            i += 1
            if nested && nesting.depth == 0 { ended = true }
        }
        return i
    }
}

/// Streams a chat answer under the `llama3_json` parser as it is written. The answer is calls
/// only when it begins (after whitespace and an optional `<|python_tag|>`) with `{`: then each
/// call's name goes out once whole and its arguments (`parameters` or `arguments`) piece by
/// piece, calls separated by `;`. Any other answer is content from its first scalar on. A call
/// in another shape waits for the end and the whole answer is parsed then, as without streaming.
struct Llama3CallStreamer {
    enum Phase: Equatable { case start, content, call, afterArguments, holding }

    private(set) var phase = Phase.start
    private var s: [Unicode.Scalar] = []
    private var consumed = 0
    /// Where the held part begins (the answer's start, or the call that does not stream).
    private var holdFrom = 0
    private var body = CallBodyStream(argumentKeys: ["parameters", "arguments"])
    /// Calls opened so far.
    var callCount: Int { body.callCount }
    static let tag = Array(ToolCallFormat.pythonTag.unicodeScalars)

    mutating func step(appending piece: String, final: Bool) -> (content: String, calls: [ToolCallDelta]) {
        s.append(contentsOf: piece.unicodeScalars)
        let s = self.s
        var content = String.UnicodeScalarView(), calls: [ToolCallDelta] = []
        loop: while true {
            switch phase {
            case .start:
                var i = 0
                while i < s.count, s[i].properties.isWhitespace { i += 1 }
                if i == s.count { if final { phase = .content; continue loop } else { break loop } }
                // The tag, whole or a beginning of it, or a call's brace: calls; anything else: content.
                let rest = s[i...]
                if rest.starts(with: Self.tag) {
                    i += Self.tag.count
                    while i < s.count, s[i].properties.isWhitespace { i += 1 }
                    if i == s.count && !final { break loop }
                } else if Self.tag.starts(with: rest) && !final {
                    break loop
                }
                if i < s.count && s[i] == "{" {
                    holdFrom = 0
                    consumed = i
                    phase = .call
                } else {
                    phase = .content
                }
                continue loop
            case .content:
                content.append(contentsOf: s[consumed...])
                consumed = s.count
                break loop
            case .call:
                switch body.advance(s, consumed: &consumed, final: final, into: &calls) {
                case .waiting: break loop
                case .notStreamable: phase = .holding
                case .argumentsEnded: phase = .afterArguments
                }
            case .afterArguments:
                // The call's closing brace, then `;` and the next call's `{`, or the end. (Looked
                // at again from the arguments' end until the next call begins.)
                var i = consumed
                while i < s.count, s[i].properties.isWhitespace || s[i] == "}" { i += 1 }
                if i < s.count, s[i] == ";" {
                    i += 1
                    while i < s.count, s[i].properties.isWhitespace { i += 1 }
                    if i < s.count {
                        holdFrom = i
                        consumed = i
                        phase = .call
                        continue loop
                    }
                } else if i < s.count {
                    // Something else after a call: the rest waits for the end, then goes out as
                    // calls if it parses as calls, else as content (nothing is dropped).
                    holdFrom = i
                    phase = .holding
                    continue loop
                }
                if final { consumed = s.count }
                break loop
            case .holding:
                guard final else { break loop }
                let held = String(String.UnicodeScalarView(s[holdFrom...]))
                consumed = s.count
                if let parsed = ToolCallFormat.llama3JSON.parse(held) {
                    body.whole(parsed.calls, into: &calls)
                } else {
                    content.append(contentsOf: s[holdFrom...])
                }
                break loop
            }
        }
        return (String(content), calls)
    }
}
