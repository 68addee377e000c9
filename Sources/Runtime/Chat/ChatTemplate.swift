import Jinja
import Tokenizers

/// A conversation that the template cannot render, or a template this engine does not know.
public struct ChatTemplateError: Error, CustomStringConvertible, Equatable, Sendable {
    public let message: String

    public init(_ message: String) { self.message = message }

    public var description: String { message }
}

/// Turns a conversation into the prompt text a chat model was trained on.
///
/// ``init(jinja:toolUse:bosToken:eosToken:)`` takes the model's own Jinja template (and its
/// `tool_use` template, when the model has one) and renders it with our interpreter (the `Jinja`
/// target) as transformers' `apply_chat_template` does (see
/// ``render(_:tools:documents:addGenerationPrompt:variables:)``), `raise_exception` becoming a
/// ``ChatTemplateError`` carrying the template's message. It also recognises which of the common
/// formats the template writes and reads the fixed strings it inserts; those formats are written
/// directly when there is no template to run (``init(format:defaultSystemPrompt:bosToken:eosToken:)``)
/// or when a template does not parse. The formats:
/// - ChatML (SmolLM2, Qwen2/2.5, many fine-tunes): `<|im_start|>role\ncontent<|im_end|>\n` per
///   message, `<|im_start|>assistant\n` as the generation prompt, and the default system
///   prompt some templates insert when the conversation has none. Qwen2.5's grouping of `tool`
///   messages into one user turn of `<tool_response>` blocks too.
/// - Llama 3 headers: `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` with
///   trimmed content after the BOS text; Llama 3.1's system turn with its knowledge-cutoff and
///   date lines.
/// - Llama 2 chat: `[INST] <<SYS>>\nsystem\n<</SYS>>\n\nuser [/INST] assistant </s>`.
/// - Mistral v0.1 instruct: `[INST] user [/INST]assistant</s>`, no system role.
public struct ChatTemplate: Sendable, Equatable {
    /// A parsed template, compared by its source.
    final class CompiledTemplate: @unchecked Sendable, Equatable {
        let source: String
        let template: JinjaTemplate
        init(source: String, template: JinjaTemplate) {
            self.source = source
            self.template = template
        }
        static func == (a: CompiledTemplate, b: CompiledTemplate) -> Bool { a.source == b.source }
    }

    public enum Format: String, Sendable, Equatable, CaseIterable {
        case chatML = "ChatML"
        case llama3 = "Llama 3"
        case llama2 = "Llama 2 [INST] <<SYS>>"
        case mistral = "Mistral [INST]"
    }

    /// The common format the template writes, if it is one of them.
    public var format: Format?
    /// The model's template, parsed; rendering runs it when present.
    private var compiled: CompiledTemplate?
    /// The model's `tool_use` template, when it names one: rendering takes it when tools are given.
    private var toolUse: CompiledTemplate?
    /// ChatML: inserted as the first system turn when the conversation does not start with one.
    public var defaultSystemPrompt: String?
    /// ChatML: whether an empty conversation also gets the default system turn (Qwen2.5's
    /// template writes it before its message loop, SmolLM2's inside it).
    public var defaultSystemPromptWhenEmpty = false
    /// ChatML: `tool` messages become one user turn of `<tool_response>` blocks (Qwen2.5).
    public var toolResponsesInUserTurn = false
    /// Llama 3.1 and later: the first line of the system turn, e.g. "Cutting Knowledge Date:
    /// December 2023\n"; nil for Llama 3.0, which has no forced system turn.
    public var knowledgeCutoffLine: String?
    /// Llama 3.1 and later: the date written after "Today Date: " (the template's default, or
    /// today's date where the serving layer sets one). Setting it also passes it to the model's
    /// template as `date_string` (otherwise the template picks: today through `strftime_now`,
    /// or its own default).
    public var dateString: String = "26 Jul 2024" {
        didSet { dateOverride = dateString }
    }
    private var dateOverride: String?
    /// The text of the BOS and EOS tokens, for formats whose templates write them (Llama 3,
    /// Llama 2, Mistral). Templates for ChatML write neither.
    public var bosToken: String
    public var eosToken: String

    public init(format: Format, defaultSystemPrompt: String? = nil, bosToken: String = "", eosToken: String = "") {
        self.format = format
        self.defaultSystemPrompt = defaultSystemPrompt
        self.bosToken = bosToken
        self.eosToken = eosToken
    }

    /// The formats ``init(jinja:toolUse:bosToken:eosToken:)`` recognises, for error messages.
    public static var supportedFormats: String { Format.allCases.map(\.rawValue).joined(separator: ", ") }

    /// Parses a Jinja chat template (a GGUF's `tokenizer.chat_template`, `chat_template` of
    /// tokenizer_config.json, or chat_template.jinja), recognises its format and reads its fixed
    /// strings. `toolUse` is the model's template named `tool_use`, if any.
    /// - Throws: ``ChatTemplateError`` when the template is empty, or neither parses nor writes
    ///   a known format; when `toolUse` does not parse.
    public init(jinja source: String, toolUse toolUseSource: String? = nil, bosToken: String = "", eosToken: String = "") throws {
        guard !source.allSatisfy(\.isWhitespace) else { throw ChatTemplateError("the chat template is empty") }
        var parsed: CompiledTemplate?
        var parseError: Error?
        do { parsed = CompiledTemplate(source: source, template: try JinjaTemplate(source)) } catch { parseError = error }
        do {
            try self.init(detecting: source, bosToken: bosToken, eosToken: eosToken)
        } catch {
            guard parsed != nil else {
                throw ChatTemplateError("\(error); the template does not parse either: \(parseError.map { "\($0)" } ?? "")")
            }
            self.init(format: .chatML, bosToken: bosToken, eosToken: eosToken)
            format = nil
        }
        compiled = parsed
        if let toolUseSource {
            do {
                toolUse = CompiledTemplate(source: toolUseSource, template: try JinjaTemplate(toolUseSource))
            } catch {
                throw ChatTemplateError("the tool_use chat template does not parse: \(error)")
            }
        }
    }

    /// The same template written by its format's own renderer, without running the Jinja
    /// source (what a template that does not parse falls back to); nil when no format was
    /// recognised.
    public var formatOnly: ChatTemplate? {
        guard format != nil else { return nil }
        var copy = self
        copy.compiled = nil
        copy.toolUse = nil
        return copy
    }

    /// Whether rendering runs the model's own Jinja template.
    public var runsJinja: Bool { compiled != nil }

    /// Recognises the format of a template and reads its fixed strings; throws when it writes none.
    private init(detecting source: String, bosToken: String, eosToken: String) throws {
        let literals = JinjaScanner.literals(in: source)
        let text = literals.map(\.text)
        func mentions(_ marker: String) -> Bool { text.contains { $0.contains(marker) } }
        self.bosToken = bosToken
        self.eosToken = eosToken
        if mentions("<|im_start|>") && mentions("<|im_end|>") {
            format = .chatML
            // The default system prompt is a literal "<|im_start|>system\n" + text + "<|im_end|>".
            let opening = "<|im_start|>system\n", closing = "<|im_end|>"
            for literal in literals {
                guard let open = literal.text.firstRange(of: opening),
                      let close = literal.text[open.upperBound...].firstRange(of: closing),
                      open.upperBound < close.lowerBound else { continue }
                defaultSystemPrompt = String(literal.text[open.upperBound..<close.lowerBound])
                // Written before the template's first loop: also for an empty conversation.
                let firstLoop = Self.firstLoopOffset(in: source)
                defaultSystemPromptWhenEmpty = firstLoop.map { literal.offset < $0 } ?? true
                break
            }
            toolResponsesInUserTurn = mentions("<tool_response>")
        } else if mentions("<|start_header_id|>") && mentions("<|end_header_id|>") {
            format = .llama3
            if let cutoff = literals.first(where: { $0.text.hasPrefix("Cutting Knowledge Date:") }) {
                knowledgeCutoffLine = cutoff.text
                if let date = Self.assignedString("date_string", in: source) { dateString = date }
            }
        } else if mentions("[INST]") {
            format = mentions("<<SYS>>") ? .llama2 : .mistral
        } else {
            throw ChatTemplateError(
                "unsupported chat template: it writes none of the formats this engine renders (\(Self.supportedFormats)); "
                    + "general Jinja templates are not supported yet")
        }
    }

    /// Renders the conversation; with `addGenerationPrompt`, ends with the opening of an
    /// assistant turn so the model writes the reply.
    ///
    /// The model's template runs as transformers' `apply_chat_template` runs it: with `messages`
    /// (see ``ChatMessage``), `tools` and `documents` (None when not given), `add_generation_prompt`,
    /// `bos_token` and `eos_token`, and `variables` (extra keyword arguments such as `date_string`
    /// or `tools_in_user_message`; they may override the tokens). Given tools, the model's
    /// `tool_use` template is taken when it has one.
    /// - Throws: ``ChatTemplateError``: the template's own `raise_exception` message, a
    ///   rendering error, a variable that names one of the fixed ones; without a template, a
    ///   conversation the format cannot express (Llama 2 and Mistral need alternating user and
    ///   assistant turns; none of the formats takes tools).
    public func render(_ messages: [ChatMessage], tools: [JSON]? = nil, documents: [JSON]? = nil,
                       addGenerationPrompt: Bool, variables: [String: JSON] = [:]) throws -> String {
        if let compiled {
            let template = tools != nil ? (toolUse ?? compiled) : compiled
            var context: [String: JinjaValue] = ["bos_token": .string(bosToken), "eos_token": .string(eosToken)]
            if let dateOverride { context["date_string"] = .string(dateOverride) }
            for (name, value) in variables {
                guard !Self.requestVariables.contains(name) else {
                    throw ChatTemplateError("'\(name)' cannot be passed as a chat template variable: it comes from the request")
                }
                context[name] = JinjaValue(value)
            }
            context["messages"] = .list(messages.map(JinjaValue.init))
            context["tools"] = tools.map { .list($0.map(JinjaValue.init)) } ?? JinjaValue.none
            context["documents"] = documents.map { .list($0.map(JinjaValue.init)) } ?? JinjaValue.none
            context["add_generation_prompt"] = .bool(addGenerationPrompt)
            do {
                return try template.template.render(context)
            } catch let error as JinjaError {
                throw ChatTemplateError(error.kind == .raised ? error.message : "chat template: \(error)")
            }
        }
        if tools != nil || messages.contains(where: { $0.toolCalls != nil }) {
            throw ChatTemplateError("the \(format?.rawValue ?? "") chat format written without the model's template has no tools or tool calls")
        }
        switch format {
        case .chatML: return renderChatML(messages, addGenerationPrompt: addGenerationPrompt)
        case .llama3: return renderLlama3(messages, addGenerationPrompt: addGenerationPrompt)
        case .llama2: return try renderInstruct(messages, systemBlock: true)
        case .mistral: return try renderInstruct(messages, systemBlock: false)
        case nil: throw ChatTemplateError("no chat template to render")
        }
    }

    /// What transformers passes itself; a caller's variables may not replace them.
    private static let requestVariables: Set<String> = ["messages", "tools", "documents", "add_generation_prompt"]

    // MARK: - Formats

    private func renderChatML(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        var out = ""
        if let defaultSystemPrompt, messages.first?.role != "system",
           !messages.isEmpty || defaultSystemPromptWhenEmpty {
            out += "<|im_start|>system\n\(defaultSystemPrompt)<|im_end|>\n"
        }
        for (index, message) in messages.enumerated() {
            if toolResponsesInUserTurn && message.role == "tool" {
                // A run of tool messages shares one user turn.
                if index == 0 || messages[index - 1].role != "tool" { out += "<|im_start|>user" }
                out += "\n<tool_response>\n\(message.content ?? "")\n</tool_response>"
                if index == messages.count - 1 || messages[index + 1].role != "tool" { out += "<|im_end|>\n" }
            } else {
                out += "<|im_start|>\(message.role)\n\(message.content ?? "")<|im_end|>\n"
            }
        }
        if addGenerationPrompt { out += "<|im_start|>assistant\n" }
        return out
    }

    private func renderLlama3(_ messages: [ChatMessage], addGenerationPrompt: Bool) -> String {
        func turn(_ role: String, _ content: String) -> String {
            "<|start_header_id|>\(role)<|end_header_id|>\n\n\(content)<|eot_id|>"
        }
        var out = ""
        var rest = messages[...]
        if let knowledgeCutoffLine {
            // Llama 3.1: the system turn is always written, with the date lines first.
            var system = ""
            if let first = rest.first, first.role == "system" {
                system = Self.jinjaTrim(first.content ?? "")
                rest = rest.dropFirst()
            }
            out += bosToken
            out += turn("system", knowledgeCutoffLine + "Today Date: " + dateString + "\n\n" + system)
        } else if !messages.isEmpty {
            out += bosToken
        }
        for message in rest { out += turn(message.role, Self.jinjaTrim(message.content ?? "")) }
        if addGenerationPrompt { out += "<|start_header_id|>assistant<|end_header_id|>\n\n" }
        return out
    }

    /// Llama 2 (`systemBlock`) and Mistral v0.1. Their templates write no generation prompt:
    /// a conversation ending in a user turn already ends with `[/INST]`.
    private func renderInstruct(_ messages: [ChatMessage], systemBlock: Bool) throws -> String {
        var rest = messages[...]
        var system: String?
        if let first = rest.first, first.role == "system" {
            guard systemBlock else {
                throw ChatTemplateError("the \(format?.rawValue ?? "") chat format has no system role")
            }
            system = first.content ?? ""
            rest = rest.dropFirst()
        }
        var out = systemBlock ? "" : bosToken
        for (index, message) in rest.enumerated() {
            let expected = index % 2 == 0 ? "user" : "assistant"
            guard message.role == "user" || message.role == "assistant" else {
                throw ChatTemplateError("the \(format?.rawValue ?? "") chat format supports only user and assistant roles "
                                            + "(and a leading system message for Llama 2), got '\(message.role)'")
            }
            guard message.role == expected else {
                throw ChatTemplateError("the \(format?.rawValue ?? "") chat format needs alternating user/assistant turns "
                                            + "starting with user; message \(index + 1) is '\(message.role)'")
            }
            if systemBlock {
                var content = message.content ?? ""
                if index == 0, let system { content = "<<SYS>>\n\(system)\n<</SYS>>\n\n" + content }
                out += message.role == "user"
                    ? bosToken + "[INST] " + Self.pythonStrip(content) + " [/INST]"
                    : " " + Self.pythonStrip(content) + " " + eosToken
            } else {
                out += message.role == "user" ? "[INST] " + (message.content ?? "") + " [/INST]" : (message.content ?? "") + eosToken
            }
        }
        return out
    }

    // MARK: - Helpers

    /// Where the template's first `{% for` tag starts (its message loop), if it has one.
    private static func firstLoopOffset(in source: String) -> Int? {
        let bytes = Array(source.utf8)
        var i = 0
        while i + 1 < bytes.count {
            if bytes[i] == UInt8(ascii: "{") && bytes[i + 1] == UInt8(ascii: "%") {
                var j = i + 2
                while j < bytes.count && (bytes[j] == UInt8(ascii: "-") || bytes[j] == UInt8(ascii: "+") || bytes[j] == 32
                                          || bytes[j] == 10 || bytes[j] == 9) { j += 1 }
                if bytes[j...].starts(with: "for ".utf8) { return i }
            }
            i += 1
        }
        return nil
    }

    /// The string literal assigned by `set NAME = "..."`, if the template has one.
    private static func assignedString(_ name: String, in source: String) -> String? {
        let literals = JinjaScanner.literals(in: source)
        var search = source.startIndex
        while let found = source[search...].firstRange(of: "set \(name)") {
            let afterName = source.utf8.distance(from: source.startIndex, to: found.upperBound)
            // The first quoted literal after the name, if only "=" and spaces lie between.
            if let literal = literals.first(where: { $0.quoted && $0.offset >= afterName }) {
                let between = source.utf8.dropFirst(afterName).prefix(literal.offset - afterName)
                if between.allSatisfy({ $0 == 32 || $0 == UInt8(ascii: "=") }) { return literal.text }
            }
            search = found.upperBound
        }
        return nil
    }

    /// Jinja's `trim` filter and Python's `str.strip()`: leading and trailing whitespace.
    static func jinjaTrim(_ s: String) -> String { pythonStrip(s) }

    static func pythonStrip(_ s: String) -> String {
        let scalars = s.unicodeScalars
        // Python's whitespace: Unicode's White_Space and U+001C...U+001F.
        func space(_ u: Unicode.Scalar) -> Bool { u.properties.isWhitespace || (0x1C...0x1F).contains(u.value) }
        guard let first = scalars.firstIndex(where: { !space($0) }) else { return "" }
        let last = scalars.lastIndex(where: { !space($0) })!
        return String(scalars[first...last])
    }
}
