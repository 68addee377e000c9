import Foundation
import Testing
@testable import Server

/// Streaming under a tool-call parser: calls go out piece by piece (name first, then the
/// arguments' text as written), content around them as it comes; however the answer is split,
/// the pieces add up to the same content and calls as the whole answer.
@Suite struct ToolCallStreamingTests {
    /// Feeds `answer` cut at `cuts` (scalar offsets); returns the content and each call's name,
    /// id and arguments text as a client would assemble them.
    func stream(_ answer: String, cuts: [Int], format: ToolCallFormat = .hermes) -> (content: String, calls: [(id: String, name: String, arguments: String)]) {
        let scalars = Array(answer.unicodeScalars)
        var hermes = HermesCallStreamer(), llama3 = Llama3CallStreamer()
        var content = "", calls: [(id: String, name: String, arguments: String)] = []
        let ends = (cuts.filter { $0 > 0 && $0 < scalars.count } + [scalars.count]).sorted()
        var start = 0
        for (k, end) in ends.enumerated() {
            let piece = String(String.UnicodeScalarView(scalars[start..<end]))
            start = end
            let final = k == ends.count - 1
            let step = format == .hermes ? hermes.step(appending: piece, final: final) : llama3.step(appending: piece, final: final)
            content += step.content
            for delta in step.calls {
                if let id = delta.id, let name = delta.name {
                    #expect(delta.index == calls.count, "calls open in order")
                    calls.append((id, name, delta.arguments))
                } else {
                    #expect(delta.index == calls.count - 1, "pieces add to the call last opened")
                    calls[delta.index].arguments += delta.arguments
                }
            }
        }
        return (content, calls)
    }

    func json(_ text: String) -> NSDictionary? {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? NSDictionary
    }

    static let answer = """
        Let me check. <tool_call>
        {"name": "get_weather", "arguments": {"city": "Paris", "units": ["c", "f"], "note": "a } in a string \\" and \\\\"}}
        </tool_call>
        <tool_call>{"name":"f2","arguments":{}}</tool_call> Done.
        """

    @Test func anyCutAddsUpToTheWholeAnswer() throws {
        let whole = stream(Self.answer, cuts: [])
        #expect(whole.content == "Let me check. \nDone.")
        #expect(whole.calls.map(\.name) == ["get_weather", "f2"])
        #expect(json(whole.calls[0].arguments) == ["city": "Paris", "units": ["c", "f"], "note": "a } in a string \" and \\"])
        #expect(json(whole.calls[1].arguments) == [:])
        #expect(Set(whole.calls.map(\.id)).count == 2 && whole.calls.allSatisfy { $0.id.hasPrefix("call_") })
        var rng = SystemRandomNumberGenerator()
        let length = Self.answer.unicodeScalars.count
        for trial in 0..<200 {
            let cuts = trial == 0 ? Array(1..<length) : (0..<Int.random(in: 1...12, using: &rng)).map { _ in Int.random(in: 1..<length, using: &rng) }
            let got = stream(Self.answer, cuts: cuts)
            #expect(got.content == whole.content, "cuts \(cuts.sorted())")
            #expect(got.calls.map(\.name) == whole.calls.map(\.name) && got.calls.map(\.arguments) == whole.calls.map(\.arguments),
                    "cuts \(cuts.sorted())")
        }
    }

    /// The name goes out only once it is whole and the arguments object has begun.
    @Test func theNameWaitsUntilItIsWhole() {
        var streamer = HermesCallStreamer()
        var step = streamer.step(appending: "Hi <tool_call>{\"name\": \"get_we", final: false)
        #expect(step.content == "Hi " && step.calls.isEmpty)
        step = streamer.step(appending: "ather\", \"arguments\": ", final: false)
        #expect(step.calls.isEmpty)
        step = streamer.step(appending: "{\"ci", final: false)
        #expect(step.calls.map(\.name) == ["get_weather", nil] && step.calls.last?.arguments == "{\"ci")
        #expect(streamer.callCount == 1)
    }

    /// A block in another shape waits for the end and goes out whole (arguments written again in
    /// the canonical form); a block that is no call is content.
    @Test func otherShapesWaitForTheEnd() {
        let reordered = "<tool_call>{\"arguments\": {\"x\": 1}, \"name\": \"f\"}</tool_call>"
        let got = stream(reordered, cuts: [5, 20, 40])
        #expect(got.calls.map(\.name) == ["f"] && json(got.calls[0].arguments) == ["x": 1] && got.content.isEmpty)
        let notACall = "Use <tool_call>maybe</tool_call> later"
        #expect(stream(notACall, cuts: [7, 18]).content == notACall && stream(notACall, cuts: [7, 18]).calls.isEmpty)
        // Cut short inside the arguments (the length limit): what was written went out, nothing more.
        let cut = stream("<tool_call>{\"name\": \"f\", \"arguments\": {\"a\": [1, 2", cuts: [30])
        #expect(cut.calls.map(\.name) == ["f"] && cut.calls[0].arguments == "{\"a\": [1, 2")
    }

    /// Content that only looks like a marker's beginning waits, then goes out; a combining accent
    /// in the next piece loses nothing.
    @Test func contentAroundAndWithoutCalls() {
        var streamer = HermesCallStreamer()
        #expect(streamer.step(appending: "Use <to", final: false).content == "Use ", "a tail that may begin the marker waits")
        #expect(streamer.step(appending: "ols wisely", final: true).content == "<tools wisely")
        let accented = stream("Cafe\u{301} ok", cuts: [4])
        #expect(accented.content.unicodeScalars.elementsEqual("Cafe\u{301} ok".unicodeScalars) && accented.calls.isEmpty)
    }

    /// llama3_json: an answer that begins with `{` (after an optional python tag) is calls,
    /// `;`-separated, each streamed as it is written; any other answer is content at once.
    @Test func llama3JSONStreamsTheCallsOfAWholeAnswer() throws {
        let answer = #"<|python_tag|>{"name": "search", "parameters": {"q": "a;b}", "n": 3}}; {"name": "b", "arguments": {"x": null}}"#
        let whole = stream(answer, cuts: [], format: .llama3JSON)
        #expect(whole.content.isEmpty && whole.calls.map(\.name) == ["search", "b"])
        #expect(json(whole.calls[0].arguments) == ["q": "a;b}", "n": 3] && json(whole.calls[1].arguments) == ["x": NSNull()])
        var rng = SystemRandomNumberGenerator()
        let length = answer.unicodeScalars.count
        for trial in 0..<200 {
            let cuts = trial == 0 ? Array(1..<length) : (0..<Int.random(in: 1...10, using: &rng)).map { _ in Int.random(in: 1..<length, using: &rng) }
            let got = stream(answer, cuts: cuts, format: .llama3JSON)
            #expect(got.content.isEmpty && got.calls.map(\.name) == ["search", "b"] && got.calls.map(\.arguments) == whole.calls.map(\.arguments),
                    "cuts \(cuts.sorted())")
        }
        // Plain text streams at once, from the first piece.
        var plain = Llama3CallStreamer()
        #expect(plain.step(appending: "It is ", final: false).content == "It is ")
        #expect(plain.step(appending: "sunny {x}", final: true).content == "sunny {x}")
        // A tag's beginning waits; a brace that is no call goes out whole at the end.
        var tagged = Llama3CallStreamer()
        #expect(tagged.step(appending: "<|pyt", final: false).content.isEmpty)
        #expect(stream("{broken", cuts: [3], format: .llama3JSON).content == "{broken")
        #expect(stream(#"{"parameters": {}, "name": "f"}"#, cuts: [9], format: .llama3JSON).calls.map(\.name) == ["f"])
    }

    @Test func deltasGoOutInOpenAIsShape() throws {
        let shape = ResponseShape(id: "chatcmpl-1", created: 0, model: "m", chat: true)
        let opener = ToolCallDelta(index: 0, id: "call_1", name: "f", arguments: "")
        var chunk = shape.chunk(index: 0, text: "", toolCallDeltas: [opener])
        var choice = try #require((chunk["choices"] as? [[String: Any]])?.first)
        var delta = try #require(choice["delta"] as? [String: Any])
        #expect(delta["content"] == nil, "a call's piece carries no content")
        let call = try #require((delta["tool_calls"] as? [[String: Any]])?.first)
        #expect(call["index"] as? Int == 0 && call["id"] as? String == "call_1" && call["type"] as? String == "function")
        #expect((call["function"] as? [String: String]) == ["name": "f", "arguments": ""])
        chunk = shape.chunk(index: 0, text: "", toolCallDeltas: [ToolCallDelta(index: 0, arguments: "{\"a\"")])
        delta = try #require(((chunk["choices"] as? [[String: Any]])?.first)?["delta"] as? [String: Any])
        let piece = try #require((delta["tool_calls"] as? [[String: Any]])?.first)
        #expect(piece["id"] == nil && (piece["function"] as? [String: String]) == ["arguments": "{\"a\""])
        chunk = shape.chunk(index: 0, text: "", finish: .stop, calledTools: true)
        choice = try #require((chunk["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
    }
}

/// `tool_choice` "required": the list the grammar writes streams call by call, its parameters
/// piece by piece; however it is cut, the pieces add up to the whole answer's calls.
@Suite struct RequiredCallStreamingTests {
    static func stream(_ answer: String, cuts: [Int]) -> (content: String, calls: [(name: String, arguments: String)]) {
        let scalars = Array(answer.unicodeScalars)
        var streamer = ForcedCallStreamer(.required)
        var content = "", calls: [(name: String, arguments: String)] = []
        let ends = (cuts.filter { $0 > 0 && $0 < scalars.count } + [scalars.count]).sorted()
        var start = 0
        for (k, end) in ends.enumerated() {
            let step = streamer.step(appending: String(String.UnicodeScalarView(scalars[start..<end])), final: k == ends.count - 1)
            start = end
            content += step.content
            for delta in step.calls {
                if let name = delta.name {
                    #expect(delta.index == calls.count && delta.id?.hasPrefix("call_") == true)
                    calls.append((name, delta.arguments))
                } else {
                    #expect(delta.index == calls.count - 1)
                    calls[delta.index].arguments += delta.arguments
                }
            }
        }
        #expect(streamer.callCount == calls.count)
        return (content, calls)
    }

    static func object(_ text: String) -> NSDictionary? { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? NSDictionary }

    @Test func aListStreamsCallByCall() {
        let answer = "[\n  {\"name\": \"get_weather\", \"parameters\": {\"city\": \"Pa]ris\", \"days\": [3, {\"x\": \"}\"}]}},\n {\"name\":\"get_time\",\"parameters\":{}}\n]"
        let length = answer.unicodeScalars.count
        var rng = SystemRandomNumberGenerator()
        for trial in 0..<150 {
            let cuts = trial == 0 ? [] : trial == 1 ? Array(1..<length) : (0..<Int.random(in: 1...10, using: &rng)).map { _ in Int.random(in: 1..<length, using: &rng) }
            let got = Self.stream(answer, cuts: cuts)
            #expect(got.content.isEmpty, "cuts \(cuts.sorted())")
            #expect(got.calls.map(\.name) == ["get_weather", "get_time"], "cuts \(cuts.sorted())")
            if got.calls.count == 2 {
                #expect(Self.object(got.calls[0].arguments) == ["city": "Pa]ris", "days": [3, ["x": "}"]]], "\(got.calls[0].arguments)")
                #expect(Self.object(got.calls[1].arguments) == [:])
            }
        }
    }

    @Test func otherShapesAndCutsFallBack() {
        // Keys in another order do not stream; the whole answer's parse gives the call at the end.
        let reordered = Self.stream(#"[{"parameters": {"a": 1}, "name": "f"}]"#, cuts: [5, 20])
        #expect(reordered.content.isEmpty && reordered.calls.map(\.name) == ["f"] && Self.object(reordered.calls[0].arguments) == ["a": 1])
        // Cut by max_tokens inside a call: what streamed stays a call, nothing becomes content.
        let cut = Self.stream(#"[{"name": "f", "parameters": {"a": [1, 2"#, cuts: [12, 30])
        #expect(cut.content.isEmpty && cut.calls.map(\.name) == ["f"] && cut.calls[0].arguments == #"{"a": [1, 2"#)
        // Not a list at all: content.
        let text = Self.stream("no calls here", cuts: [3])
        #expect(text.content == "no calls here" && text.calls.isEmpty)
    }
}

@Suite struct ToolCallDeltaMergeTests {
    @Test func piecesOfOneCallFoldIntoOneEntry() {
        let deltas = [ToolCallDelta(index: 0, id: "call_a", name: "f", arguments: ""), ToolCallDelta(index: 0, arguments: "{\"x\""),
                      ToolCallDelta(index: 0, arguments: ": 1}"), ToolCallDelta(index: 1, id: "call_b", name: "g", arguments: "{"),
                      ToolCallDelta(index: 1, arguments: "}")]
        let merged = ToolCallDelta.merged(deltas)
        #expect(merged == [ToolCallDelta(index: 0, id: "call_a", name: "f", arguments: "{\"x\": 1}"),
                           ToolCallDelta(index: 1, id: "call_b", name: "g", arguments: "{}")])
        #expect(ToolCallDelta.merged([]) == [])
    }
}
