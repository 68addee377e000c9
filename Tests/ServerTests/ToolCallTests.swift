import Foundation
@testable import Server
import Testing

/// Tool-call parsing (`--enable-auto-tool-choice --tool-call-parser`): the formats, what counts
/// as a call, what streams before a call, and the OpenAI shapes the calls go out in.
@Suite struct ToolCallTests {
    @Test func hermesBlocksAreCalls() throws {
        let text = #"Let me look. <tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "days": [1, 2], "unit": "°C"}}</tool_call>"#
            + "\n" + #"<tool_call>{"name": "get_time", "arguments": "{\"zone\": \"CET\"}"}</tool_call>"#
        let parsed = try #require(ToolCallFormat.hermes.parse(text))
        #expect(parsed.content == "Let me look.")
        #expect(parsed.calls == [ToolCall(name: "get_weather", arguments: #"{"city": "Paris", "days": [1, 2], "unit": "°C"}"#),
                                 ToolCall(name: "get_time", arguments: #"{"zone": "CET"}"#)])
        // Arguments keep their key order and parse back as JSON.
        let arguments = try JSONSerialization.jsonObject(with: Data(parsed.calls[0].arguments.utf8)) as? [String: Any]
        #expect(arguments?["city"] as? String == "Paris" && (arguments?["days"] as? [Int]) == [1, 2])
        // A block cut off by max_tokens after its JSON is whole still counts; one cut inside does not.
        #expect(ToolCallFormat.hermes.parse(#"<tool_call>{"name": "f", "arguments": {}}"#)?.calls == [ToolCall(name: "f", arguments: "{}")])
        #expect(ToolCallFormat.hermes.parse(#"<tool_call>{"name": "f", "argum"#) == nil)
    }

    @Test func textThatOnlyLooksLikeACallIsContent() {
        for text in ["Plain answer.", "<tool_call>not json</tool_call>", #"<tool_call>{"arguments": {}}</tool_call>"#,
                     #"<tool_call>{"name": "", "arguments": {}}</tool_call>"#, #"<tool_call>{"name": "f", "arguments": [1]}</tool_call>"#] {
            #expect(ToolCallFormat.hermes.parse(text) == nil, "\(text)")
        }
        for text in ["The answer is {x}.", #"Sure: {"name": "f", "parameters": {}}"#, "{broken"] {
            #expect(ToolCallFormat.llama3JSON.parse(text) == nil, "\(text)")
        }
    }

    @Test func llama3JSONIsTheWholeAnswer() throws {
        let one = try #require(ToolCallFormat.llama3JSON.parse(#"  {"name": "search", "parameters": {"q": "a;b", "n": 3}}"#))
        #expect(one.content == nil && one.calls == [ToolCall(name: "search", arguments: #"{"q": "a;b", "n": 3}"#)])
        let tagged = try #require(ToolCallFormat.llama3JSON.parse(#"<|python_tag|>{"name": "a", "arguments": {}}; {"name": "b", "parameters": {"x": null}}"#))
        #expect(tagged.calls.map(\.name) == ["a", "b"] && tagged.calls[1].arguments == #"{"x": null}"#)
    }

    @Test func streamingHoldsBackWhatMayBeACall() {
        #expect(ToolCallFormat.hermes.streamableCount("Hello there") == 11)
        #expect(ToolCallFormat.hermes.streamableCount("Hello <tool") == 6, "a tail that may start the marker waits")
        #expect(ToolCallFormat.hermes.streamableCount("Hello <tool_call>{\"na") == 6)
        #expect(ToolCallFormat.hermes.streamableCount("a < b") == 5)
        #expect(ToolCallFormat.llama3JSON.streamableCount("  {\"name\"") == 0)
        #expect(ToolCallFormat.llama3JSON.streamableCount("<|pyth") == 0)
        #expect(ToolCallFormat.llama3JSON.streamableCount("It is sunny") == 11)
    }

    /// The streamed pieces of an answer, output by output, add up to the whole answer's content,
    /// and the calls come with the last.
    @Test func aStreamedAnswerSplitsAsTheWholeOneDoes() {
        let pieces = ["Checking", " now. <to", "ol_call>{\"name\": \"f\",", " \"arguments\": {\"k\": 1}}</tool_call>", " Done."]
        var state = ChoiceState(), sent = "", calls: [ToolCall] = []
        for (i, piece) in pieces.enumerated() {
            state.text += piece
            let step = OpenAIServer.toolCallStep(.hermes, state: &state, final: i == pieces.count - 1)
            sent += step.text
            calls += step.calls
            if i == 1 { #expect(sent == "Checking now. ", "the marker's first letters wait") }
        }
        #expect(sent == "Checking now. \nDone." && calls == [ToolCall(name: "f", arguments: #"{"k": 1}"#)])
        // No call after all: the held text goes out at the end.
        var plain = ChoiceState(), out = ""
        for (i, piece) in ["Use <to", "ols wisely"].enumerated() {
            plain.text += piece
            out += OpenAIServer.toolCallStep(.hermes, state: &plain, final: i == 1).text
        }
        #expect(out == "Use <tools wisely")
        // A piece that joins the character before it (a combining accent): nothing is lost or sent twice.
        var joined = ChoiceState(), whole = ""
        for (i, piece) in ["Cafe", "\u{301} ok"].enumerated() {
            joined.text += piece
            whole += OpenAIServer.toolCallStep(.hermes, state: &joined, final: i == 1).text
        }
        #expect(whole.unicodeScalars.elementsEqual("Cafe\u{301} ok".unicodeScalars), "\(whole.unicodeScalars.map(\.value))")
    }

    @Test func callsGoOutInOpenAIsShapes() throws {
        let shape = ResponseShape(id: "chatcmpl-1", created: 0, model: "m", chat: true)
        let parsed = ParsedToolCalls(content: nil, calls: [ToolCall(name: "f", arguments: "{}")])
        let whole = shape.choice(index: 0, text: "raw", logprobs: NSNull(), finish: .stop, toolCalls: parsed)
        #expect(whole["finish_reason"] as? String == "tool_calls")
        let message = try #require(whole["message"] as? [String: Any])
        #expect(message["content"] is NSNull && message["role"] as? String == "assistant")
        let call = try #require((message["tool_calls"] as? [[String: Any]])?.first)
        #expect(call["type"] as? String == "function" && (call["id"] as? String)?.hasPrefix("call_") == true && call["index"] == nil)
        #expect((call["function"] as? [String: String]) == ["name": "f", "arguments": "{}"])
        let chunk = shape.chunk(index: 0, text: "", finish: .stop, toolCalls: parsed.calls)
        let choice = try #require((chunk["choices"] as? [[String: Any]])?.first)
        #expect(choice["finish_reason"] as? String == "tool_calls")
        let delta = try #require(choice["delta"] as? [String: Any])
        #expect((delta["tool_calls"] as? [[String: Any]])?.first?["index"] as? Int == 0)
    }
}
