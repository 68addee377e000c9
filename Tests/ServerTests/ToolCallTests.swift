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
    }
}
