import Foundation
import Runtime
import Testing
import Tokenizers

/// The richer rendering API (tools, documents, variables, named templates) and the reading of
/// OpenAI-shaped messages, on small templates of our own that print what they are given.
@Suite struct ChatTemplateRequestTests {
    /// Prints every variable a chat template can receive, so a test sees what was passed.
    static let echo = """
        {%- for m in messages %}[{{ m.role }}|{{ m.content }}|{{ 'tool_calls' in m }}|{{ m.tool_call_id }}|{{ m.name }}]{% endfor %}
        {{- ' tools=' ~ (tools | tojson) ~ ' documents=' ~ (documents | tojson) }}
        {{- ' agp=' ~ add_generation_prompt ~ ' bos=' ~ bos_token ~ ' eos=' ~ eos_token ~ ' extra=' ~ extra }}
        """

    static func json(_ text: String) throws -> JSON { try JSON.parse(text) }

    @Test func passesWhatTransformersPasses() throws {
        let template = try ChatTemplate(jinja: Self.echo, bosToken: "<s>", eosToken: "</s>")
        #expect(try template.render([.user("hi")], addGenerationPrompt: true)
                    == "[user|hi|False||] tools=null documents=null agp=True bos=<s> eos=</s> extra=")
        let tools = [try Self.json(#"{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": [true, null, 2.5]}}}"#)]
        let documents = [try Self.json(#"{"title": "T", "text": "été"}"#)]
        let rendered = try template.render([.user("hi")], tools: tools, documents: documents, addGenerationPrompt: false,
                                           variables: ["extra": .int(7), "bos_token": .string("<B>")])
        // Key order as given, ensure_ascii=False, Python's separators; variables override the tokens.
        #expect(rendered == #"[user|hi|False||] tools=[{"type": "function", "function": {"name": "f", "parameters": {"b": 1, "a": [true, null, 2.5]}}}]"#
                    + #" documents=[{"title": "T", "text": "été"}] agp=False bos=<B> eos=</s> extra=7"#)
    }

    @Test func requestVariablesCannotBeReplaced() throws {
        let template = try ChatTemplate(jinja: Self.echo)
        for name in ["messages", "tools", "documents", "add_generation_prompt"] {
            #expect(throws: ChatTemplateError("'\(name)' cannot be passed as a chat template variable: it comes from the request")) {
                try template.render([.user("x")], addGenerationPrompt: true, variables: [name: .null])
            }
        }
    }

    @Test func messageKeysArePresentOnlyWhenSet() throws {
        let template = try ChatTemplate(jinja: Self.echo)
        let call = ChatToolCall(id: "c1", name: "f", arguments: try Self.json(#"{"z": 1, "a": 2}"#))
        let messages = [ChatMessage(role: "assistant", content: nil, toolCalls: [call]),
                        ChatMessage(role: "tool", content: "42", toolCallID: "c1", name: "f")]
        #expect(try template.render(messages, addGenerationPrompt: false).hasPrefix("[assistant|None|True||][tool|42|False|c1|f]"))
        let args = try ChatTemplate(jinja: "{{ messages[0].tool_calls[0] | tojson }}").render(messages, addGenerationPrompt: false)
        #expect(args == #"{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"z": 1, "a": 2}}}"#)
    }

    /// transformers' choice: `tool_use` when tools are given (even an empty list) and it exists.
    @Test func namedTemplatesFromTokenizerConfig() throws {
        let config = #"{"bos_token": {"content": "<s>"}, "eos_token": "</s>", "chat_template": ["#
            + #"{"name": "default", "template": "default {{ messages[0].content }}"},"#
            + #"{"name": "tool_use", "template": "tool_use {{ tools | length }}"},"#
            + #"{"name": "rag", "template": "rag"}]}"#
        let template = try ChatTemplate(tokenizerConfig: Data(config.utf8))
        #expect(try template.render([.user("q")], addGenerationPrompt: true) == "default q")
        #expect(try template.render([.user("q")], tools: [], addGenerationPrompt: true) == "tool_use 0")
        #expect(try template.render([.user("q")], tools: [.object([])], addGenerationPrompt: true) == "tool_use 1")

        let noDefault = #"{"chat_template": [{"name": "tool_use", "template": "x"}]}"#
        let missing = #expect(throws: (any Error).self) { try ChatTemplate(tokenizerConfig: Data(noDefault.utf8)) }
        #expect(missing.map { "\($0)".contains("none named \"default\"") } == true)
        let broken = #"{"chat_template": [{"name": "default", "template": "ok"}, {"name": "tool_use", "template": "{% if %}"}]}"#
        let unparsable = #expect(throws: ChatTemplateError.self) { try ChatTemplate(tokenizerConfig: Data(broken.utf8)) }
        #expect(unparsable?.message.hasPrefix("the tool_use chat template does not parse") == true)
    }

    @Test func namedTemplateFilesInAModelDirectory() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-chat-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("additional_chat_templates"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try Data("plain {{ bos_token }}".utf8).write(to: directory.appendingPathComponent("chat_template.jinja"))
        try Data("tools {{ bos_token }}".utf8).write(to: directory.appendingPathComponent("additional_chat_templates/tool_use.jinja"))
        try Data(#"{"bos_token": "<B>"}"#.utf8).write(to: directory.appendingPathComponent("tokenizer_config.json"))
        let template = try ChatTemplate(modelDirectory: directory.path)
        #expect(try template.render([], addGenerationPrompt: true) == "plain <B>")
        #expect(try template.render([], tools: [], addGenerationPrompt: true) == "tools <B>")
    }

    /// Without the model's template, the built-in formats refuse tools rather than drop them.
    @Test func formatsWithoutTemplateRefuseTools() throws {
        let chatML = ChatTemplate(format: .chatML)
        #expect(throws: ChatTemplateError.self) { try chatML.render([.user("q")], tools: [], addGenerationPrompt: true) }
        let call = ChatToolCall(id: nil, name: "f", arguments: .object([]))
        #expect(throws: ChatTemplateError.self) {
            try chatML.render([ChatMessage(role: "assistant", content: nil, toolCalls: [call])], addGenerationPrompt: true)
        }
        #expect(try chatML.render([ChatMessage(role: "assistant", content: nil)], addGenerationPrompt: false) == "<|im_start|>assistant\n<|im_end|>\n")
    }

    // MARK: - OpenAI-shaped messages

    @Test func readsOpenAIMessages() throws {
        let messages = try ChatMessage.messages(fromJSON: try Self.json("""
            [{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
             {"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\\"q\\": \\"é\\", \\"a\\": [1]}"}},
                {"function": {"name": "g", "arguments": {"y": 1, "x": 2}}}]},
             {"role": "tool", "content": "r", "tool_call_id": "c1", "name": "f"}]
            """))
        // Text parts are joined by newlines, as vLLM joins them.
        #expect(messages[0] == .system("a\nb"))
        // The arguments string is parsed keeping its key order.
        #expect(messages[1].toolCalls == [ChatToolCall(id: "c1", name: "f", arguments: .object([("q", .string("é")), ("a", .array([.int(1)]))])),
                                          ChatToolCall(id: nil, name: "g", arguments: .object([("y", .int(1)), ("x", .int(2))]))])
        #expect(messages[1].content == nil)
        #expect(messages[2] == ChatMessage(role: "tool", content: "r", toolCallID: "c1", name: "f"))
    }

    @Test func badMessagesNameTheField() throws {
        let cases: [(String, String)] = [
            (#"{"role": "user"}"#, "messages must be a list of message objects"),
            (#"[{"content": "x"}]"#, "messages[0].role is required"),
            (#"[{"role": "user", "content": 3}]"#, "messages[0].content must be a string, null, or a list of text parts"),
            (#"[{"role": "user", "content": [{"type": "image_url"}]}]"#, #"messages[0].content[0]: only {"type": "text", "text": ...} parts are supported"#),
            (#"[{"role": "a", "tool_calls": [{"function": {"name": "f", "arguments": "{bad"}}]}]"#, "messages[0].tool_calls[0].function.arguments is not valid JSON"),
            (#"[{"role": "a", "tool_calls": [{"function": {"name": "f", "arguments": "[1]"}}]}]"#, "messages[0].tool_calls[0].function.arguments must hold a JSON object"),
            (#"[{"role": "a", "tool_calls": [{"function": {"arguments": "{}"}}]}]"#, "messages[0].tool_calls[0].function.name must be a string"),
            (#"[{"role": "a", "tool_calls": [{"type": "code", "function": {"name": "f"}}]}]"#, #"messages[0].tool_calls[0].type must be "function""#),
            (#"[{"role": "tool", "content": "x", "tool_call_id": 5}]"#, "messages[0].tool_call_id must be a string"),
        ]
        for (text, message) in cases {
            let error = #expect(throws: ChatTemplateError.self) { try ChatMessage.messages(fromJSON: try Self.json(text)) }
            #expect(error?.message.hasPrefix(message) == true, "\(text): \(error?.message ?? "")")
        }
    }

    /// Codable (the CLI's request files): OpenAI's field names, arguments as a string or an object.
    @Test func codableRoundTrip() throws {
        let text = #"[{"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{\"b\": 1, \"a\": 2}"}}]},"#
            + #"{"role": "tool", "content": "ok", "tool_call_id": "c"}, {"role": "user", "content": "plain"}]"#
        let decoded = try JSONDecoder().decode([ChatMessage].self, from: Data(text.utf8))
        #expect(decoded == (try ChatMessage.messages(fromJSON: try Self.json(text))))
        let again = try JSONDecoder().decode([ChatMessage].self, from: try JSONEncoder().encode(decoded))
        #expect(again.map(\.role) == decoded.map(\.role) && again[1] == decoded[1] && again[2] == decoded[2])
        #expect(again[0].toolCalls?.first?.arguments["b"] == .int(1))
    }
}
