#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Models

extension ChatTemplate {
    /// The template of a GGUF model: `tokenizer.chat_template` (and `tokenizer.chat_template.tool_use`,
    /// llama.cpp's key for a named template), with the BOS and EOS token text looked up in
    /// `tokenizer.ggml.tokens`.
    /// - Throws: ``ModelFileError`` when the file has no chat template, ``ChatTemplateError``
    ///   when its format is not supported.
    public init(gguf: GGUFFile) throws {
        guard let source = gguf.string("tokenizer.chat_template") else {
            throw ModelFileError(path: gguf.path, "no tokenizer.chat_template in the GGUF metadata")
        }
        let tokens = gguf.stringArray("tokenizer.ggml.tokens") ?? []
        func text(_ key: String) -> String {
            guard let id = gguf.int(key), tokens.indices.contains(id) else { return "" }
            return tokens[id]
        }
        try self.init(jinja: source, toolUse: gguf.string("tokenizer.chat_template.tool_use"),
                      bosToken: text("tokenizer.ggml.bos_token_id"),
                      eosToken: text("tokenizer.ggml.eos_token_id"))
    }

    /// The template of a Hugging Face `tokenizer_config.json`: `chat_template` (a string, or a
    /// list of `{name, template}` of which "default" is the template and "tool_use", if present,
    /// the one for requests with tools, as transformers chooses), with `bos_token` and
    /// `eos_token` (strings or added-token objects). `path` names the file in errors.
    public init(tokenizerConfig data: Data, path: String = "tokenizer_config.json") throws {
        let config: TokenizerConfigTemplate
        do {
            config = try JSONDecoder().decode(TokenizerConfigTemplate.self, from: data)
        } catch let error as DecodingError {
            throw ModelFileError(path: path, "tokenizer config: cannot read chat_template, bos_token or eos_token (\(error))")
        }
        guard let source = config.chatTemplate else {
            throw ModelFileError(path: path, "no chat_template in the tokenizer config")
        }
        try self.init(jinja: source, toolUse: config.toolUseTemplate, bosToken: config.bosToken ?? "", eosToken: config.eosToken ?? "")
    }
}

extension ChatTemplate {
    /// The template of a Hugging Face model directory: `chat_template.jinja` when present (newer
    /// checkpoints keep it there, with named ones as `additional_chat_templates/NAME.jinja`, of
    /// which `tool_use` is read), else `chat_template` of `tokenizer_config.json`; BOS and EOS
    /// text from `tokenizer_config.json` either way.
    /// - Throws: ``ModelFileError`` when neither file has a template or a file is malformed,
    ///   ``ChatTemplateError`` when the format is not supported.
    public init(modelDirectory directory: String) throws {
        let base = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let jinjaPath = base + "/chat_template.jinja", configPath = base + "/tokenizer_config.json"
        func read(_ path: String) throws -> Data? {
            guard FileManager.default.fileExists(atPath: path) else { return nil }
            do {
                return try Data(contentsOf: URL(fileURLWithPath: path))
            } catch {
                throw ModelFileError(path: path, "cannot read: \(error)")
            }
        }
        let config = try read(configPath)
        guard let jinja = try read(jinjaPath) else {
            guard let config else {
                throw ModelFileError(path: base, "no chat_template.jinja or tokenizer_config.json with a chat template")
            }
            try self.init(tokenizerConfig: config, path: configPath)
            return
        }
        var tokens = TokenizerConfigTemplate()
        if let config {
            do {
                tokens = try JSONDecoder().decode(TokenizerConfigTemplate.self, from: config)
            } catch {
                throw ModelFileError(path: configPath, "tokenizer config: cannot read bos_token or eos_token (\(error))")
            }
        }
        let toolUse = try read(base + "/additional_chat_templates/tool_use.jinja").map { String(decoding: $0, as: UTF8.self) }
        try self.init(jinja: String(decoding: jinja, as: UTF8.self), toolUse: toolUse, bosToken: tokens.bosToken ?? "",
                      eosToken: tokens.eosToken ?? "")
    }
}

/// The chat-template fields of tokenizer_config.json.
private struct TokenizerConfigTemplate: Decodable {
    var chatTemplate: String?
    var toolUseTemplate: String?
    var bosToken: String?
    var eosToken: String?

    init() {}

    enum CodingKeys: String, CodingKey {
        case chatTemplate = "chat_template"
        case bosToken = "bos_token"
        case eosToken = "eos_token"
    }

    struct Named: Decodable {
        var name: String
        var template: String
    }

    /// A special token as a plain string or as `{"content": "...", ...}`.
    struct TokenText: Decodable {
        var content: String
        enum CodingKeys: String, CodingKey { case content }
        init(from decoder: Decoder) throws {
            if let plain = try? decoder.singleValueContainer().decode(String.self) {
                content = plain
            } else {
                content = try decoder.container(keyedBy: CodingKeys.self).decode(String.self, forKey: .content)
            }
        }
    }

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        if (try? c.decodeNil(forKey: .chatTemplate)) ?? true {
            chatTemplate = nil
        } else if let one = try? c.decode(String.self, forKey: .chatTemplate) {
            chatTemplate = one
        } else {
            let named = try c.decode([Named].self, forKey: .chatTemplate)
            guard let main = named.first(where: { $0.name == "default" }) else {
                // transformers refuses such a list too (unless the caller names a template).
                throw DecodingError.dataCorruptedError(
                    forKey: .chatTemplate, in: c,
                    debugDescription: "the list of chat templates has none named \"default\" (it has: \(named.map(\.name).joined(separator: ", ")))")
            }
            chatTemplate = main.template
            toolUseTemplate = named.first { $0.name == "tool_use" }?.template
        }
        bosToken = try c.decodeIfPresent(TokenText.self, forKey: .bosToken)?.content
        eosToken = try c.decodeIfPresent(TokenText.self, forKey: .eosToken)?.content
    }
}
