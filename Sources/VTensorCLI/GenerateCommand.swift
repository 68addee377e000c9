import ArgumentParser
import CLICommon
import Engine
import Foundation
import Glibc
import Jinja
import Models
import Runtime
import Structured
import Tokenizers

/// `vtensor generate`: prompts in, text out. One prompt streams its text; many (repeated
/// arguments or `--input FILE`) run together in continuous batches and come out as JSON lines
/// in input order.
struct GenerateCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract: "Generate text from prompts: one streams its text, many run in continuous batches.",
        discussion: ModelOptions.embeddedModelNote + "\n" + """
            Sampling defaults: the flags given, else the model's generation_config.json, else its authors' recommendation for
            a model we know (SmolLM2-Instruct: temperature 0.2, top-p 0.9), else greedy. --temperature 0 asks for greedy.
            One prompt: its text streams to standard output, then a timing line goes to standard error.
            Several prompts, or --input FILE (one JSON object a line: "prompt" or chat "messages", plus optional
            sampling fields such as "max_tokens", "temperature", "top_p", "stop", "seed", "priority" under
            --schedule-policy priority, and the server's structured-output fields "response_format",
            "structured_outputs" or "guided_json"/"guided_regex"/"guided_choice"/"guided_grammar"): one JSON object a line per
            request, in input order, to standard output or --output; progress on standard error.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var backendOptions: BackendOptions
    @OptionGroup var engineFlags: EngineFlags

    @Argument(help: "Prompts (each one a request); - reads one from standard input.")
    var prompts: [String] = []

    @Option(help: "A JSON-lines file of requests.")
    var input: String?
    @Option(help: "A file whose whole text is one prompt.")
    var promptFile: String?
    @Option(help: "Where the JSON lines of results go (default: standard output).")
    var output: String?

    @Flag(help: "Wrap the prompts in the model's chat template (ChatML, Llama 3, Llama 2, Mistral).")
    var chat = false
    @Option(help: "With --chat: the system message (default: the template's own default, if any).")
    var system: String?

    @Option(parsing: .unconditional, help: "Most tokens to generate.")
    var maxTokens = 128
    @Option(parsing: .unconditional, help: "0 is greedy.") var temperature: Double?
    @Option(parsing: .unconditional, help: "Nucleus sampling mass (0, 1].") var topP: Double?
    @Option(parsing: .unconditional, help: "Sample among the K most likely (0: off).") var topK: Int?
    @Option(parsing: .unconditional, help: "Drop tokens below min-p times the top probability.") var minP: Double?
    @Option(parsing: .unconditional, help: "Repetition penalty over prompt and output (1: off).") var repetitionPenalty: Double?
    @Option(parsing: .unconditional, help: "Presence penalty over the output.") var presencePenalty: Double = 0
    @Option(parsing: .unconditional, help: "Frequency penalty over the output.") var frequencyPenalty: Double = 0
    @Option(parsing: .unconditional, help: "Seed for reproducible sampling.") var seed: Int?
    @Option(help: "Stop string (repeatable).") var stop: [String] = []
    @Option(parsing: .unconditionalSingleValue, help: "Stop token id (repeatable).") var stopTokenId: [Int] = []
    @Flag(help: "Keep going past end-of-sequence tokens.") var ignoreEOS = false
    @Option(parsing: .unconditional, help: "Print the chosen tokens' logprobs and N alternatives each (0-20).") var logprobs: Int?

    // Structured output: every request's answer is generated under one grammar (at most one of these).
    @Option(name: .customLong("json-schema"), help: "Answer JSON valid under this JSON Schema (a file, or the schema's text).")
    var jsonSchema: String?
    @Flag(name: .customLong("json-object"), help: "Answer a JSON object.") var jsonObject = false
    @Option(help: "Answer text that the whole of this regular expression matches.") var regex: String?
    @Option(help: "Answer exactly one of these strings (repeatable).") var choice: [String] = []
    @Option(name: .customLong("grammar-file"), help: "Answer a sentence of this GBNF grammar (rule root).") var grammarFile: String?

    func validate() throws {
        if prompts.isEmpty && input == nil && promptFile == nil {
            throw ValidationError("give a prompt, several prompts, - (standard input), --prompt-file FILE, or --input FILE")
        }
        if prompts.filter({ $0 == "-" }).count > 1 { throw ValidationError("standard input (-) can give one prompt only") }
        if maxTokens < 1 { throw ValidationError("--max-tokens must be at least 1, got \(maxTokens)") }
        let constraints = [jsonSchema != nil, jsonObject, regex != nil, !choice.isEmpty, grammarFile != nil].filter { $0 }.count
        if constraints > 1 { throw ValidationError("give at most one of --json-schema, --json-object, --regex, --choice, --grammar-file") }
    }

    /// The output constraint the flags ask for, if any.
    func outputConstraint() throws -> OutputConstraint? {
        func text(_ value: String, _ flag: String) throws -> String {
            if FileManager.default.fileExists(atPath: value) {
                guard let data = FileManager.default.contents(atPath: value) else { throw ValidationError("\(flag) \(value): cannot read the file") }
                return String(decoding: data, as: UTF8.self)
            }
            return value
        }
        if let jsonSchema {
            let source = try text(jsonSchema, "--json-schema")
            let schema: JSON
            do { schema = try JSON.parse(source, source: "--json-schema") } catch {
                throw ValidationError("--json-schema: neither a readable file nor JSON: \(error)")
            }
            guard schema.members != nil, let written = JinjaValue(schema).pythonJSON else { throw ValidationError("--json-schema must be a JSON object") }
            return .jsonSchema(written)
        }
        if jsonObject { return .jsonObject }
        if let regex { return .regex(regex) }
        if !choice.isEmpty { return .choice(choice) }
        if let grammarFile {
            guard let data = FileManager.default.contents(atPath: grammarFile) else { throw ValidationError("--grammar-file \(grammarFile): cannot read the file") }
            return .grammar(String(decoding: data, as: UTF8.self))
        }
        return nil
    }

    /// One request of the batch: its text (before the chat template) or messages, and sampling.
    struct InputLine: Decodable {
        var prompt: String?
        var messages: [ChatMessage]?
        var sampling: SamplingParameters
        /// Under `--schedule-policy priority`: lower first (vLLM's `priority`).
        var priority: Int

        enum CodingKeys: String, CodingKey { case prompt, messages, priority }
        init(from decoder: Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            prompt = try c.decodeIfPresent(String.self, forKey: .prompt)
            messages = try c.decodeIfPresent([ChatMessage].self, forKey: .messages)
            priority = try c.decodeIfPresent(Int.self, forKey: .priority) ?? 0
            sampling = try SamplingParameters(from: decoder)
        }
    }

    /// One line of results.
    struct OutputLine: Encodable {
        var index: Int
        var text: String
        var prompt_tokens: Int
        var completion_tokens: Int
        var finish_reason: String
        var error: String?
    }

    func run() throws {
        let (kind, unavailable) = backendOptions.resolve()
        if kind == .cuda, let unavailable { throw ValidationError("--backend cuda: \(unavailable)") }
        if kind == .cpu, backendOptions.backend == nil, let unavailable {
            FileHandle.standardError.write(Data("vtensor: \(unavailable.split(separator: ":").first ?? "no CUDA device"); generating on the CPU\n".utf8))
        }
        if modelOptions.loadFormat == "dummy", let name = modelOptions.model, ModelPresets.config(named: name) != nil {
            throw ValidationError("preset \(name) has random weights and no tokenizer: use `vtensor bench throughput`, `bench model` or `logits` with it")
        }
        guard let format = LoadFormat(rawValue: modelOptions.loadFormat) else {
            throw ValidationError("--load-format must be one of \(LoadFormat.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        let loadStart = Date()
        let runtime = try ModelRuntime.open(modelOptions.model, format: format,
                                            options: engineFlags.runtimeOptions(backend: kind, device: backendOptions.device,
                                                                                nativeCPUWeights: modelOptions.nativeCPUWeights))
        let loaded = runtime.loaded!
        let tokenizer = try loaded.tokenizer()
        FileHandle.standardError.write(Data("vtensor: model loaded in \(fixed(Date().timeIntervalSince(loadStart), 2)) s (\(runtime.description))\n".utf8))
        let (generation, defaultsSource) = try loaded.generationDefaults()
        let base = try baseParameters(generation)
        let samplingNote = Self.samplingNote(base, source: defaultsSource, flagsGiven: temperature != nil || topP != nil || topK != nil || minP != nil)
        let grammars = GrammarCache(tokenizer: tokenizer)
        var requests = try makeRequests(loaded: loaded, tokenizer: tokenizer, base: base, grammars: grammars)
        if let constraint = try outputConstraint() {
            let grammar: CompiledGrammar
            do { grammar = try grammars.compiled(constraint) } catch let error as GrammarError {
                throw ValidationError("cannot constrain the answer to \(constraint.describes): \(error.message)")
            }
            // --input lines with a constraint of their own keep it.
            for i in requests.indices where requests[i].grammar == nil { requests[i].grammar = grammar }
        }
        let generator = try Generator(model: runtime.model, tokenizer: tokenizer, extraEOSTokenIds: generation.eosTokenIds,
                                      options: engineFlags.engineOptions(for: runtime.model))
        if requests.count == 1 && input == nil {
            try streamOne(requests[0], generator: generator, tokenizer: tokenizer, runtime: runtime, samplingNote: samplingNote)
        } else {
            try runBatch(requests, generator: generator, runtime: runtime)
        }
    }

    /// A prompt read from a file or a pipe without the newline that ends its last line (`echo`
    /// and editors add one; the model would read it as part of the prompt).
    static func droppingFinalNewline(_ text: String) -> String {
        if text.hasSuffix("\r\n") { return String(text.dropLast(2)) }
        if text.hasSuffix("\n") { return String(text.dropLast()) }
        return text
    }

    /// The sampling in use and where its defaults came from, for the timing line.
    static func samplingNote(_ p: SamplingParameters, source: String?, flagsGiven: Bool) -> String {
        var text = p.isGreedy ? "greedy" : "temperature \(p.temperature), top-p \(p.topP)" + (p.topK > 0 ? ", top-k \(p.topK)" : "")
            + (p.minP > 0 ? ", min-p \(p.minP)" : "")
        if p.repetitionPenalty != 1 { text += ", repetition penalty \(p.repetitionPenalty)" }
        if let source, !flagsGiven { text += " (defaults from \(source))" }
        return "sampling: " + text
    }

    private func baseParameters(_ generation: GenerationConfig) throws -> SamplingParameters {
        var parameters = generation.samplingDefaults(base: SamplingParameters(temperature: 0))
        if let temperature { parameters.temperature = temperature }
        if let topP { parameters.topP = topP }
        if let topK { parameters.topK = topK }
        if let minP { parameters.minP = minP }
        if let repetitionPenalty { parameters.repetitionPenalty = repetitionPenalty }
        parameters.presencePenalty = presencePenalty
        parameters.frequencyPenalty = frequencyPenalty
        parameters.seed = seed
        parameters.maxTokens = maxTokens
        parameters.stopStrings = stop
        parameters.stopTokenIds = stopTokenId
        parameters.ignoreEOS = ignoreEOS
        parameters.logprobs = logprobs
        try parameters.validate()
        return parameters
    }

    private func makeRequests(loaded: LoadedModel, tokenizer: Tokenizer, base: SamplingParameters, grammars: GrammarCache) throws -> [GenerationRequest] {
        func encode(text: String?, messages: [ChatMessage]?, where place: String) throws -> [Int] {
            if let messages {
                return tokenizer.encode(try loaded.chatTemplate().render(messages, addGenerationPrompt: true), addSpecialTokens: true)
            }
            guard let text else { throw ValidationError("\(place): needs \"prompt\" or \"messages\"") }
            if chat {
                var messages: [ChatMessage] = []
                if let system { messages.append(.system(system)) }
                messages.append(.user(text))
                return tokenizer.encode(try loaded.chatTemplate().render(messages, addGenerationPrompt: true), addSpecialTokens: true)
            }
            return tokenizer.encode(text, addSpecialTokens: true)
        }
        var texts = try prompts.map { prompt -> String in
            guard prompt == "-" else { return prompt }
            let data = FileHandle.standardInput.readDataToEndOfFile()
            guard !data.isEmpty else { throw ValidationError("standard input (-) gave no prompt") }
            return Self.droppingFinalNewline(String(decoding: data, as: UTF8.self))
        }
        if let promptFile {
            guard let data = FileManager.default.contents(atPath: promptFile) else {
                throw ValidationError("--prompt-file \(promptFile): cannot read the file")
            }
            texts.append(Self.droppingFinalNewline(String(decoding: data, as: UTF8.self)))
        }
        var requests = try texts.map { GenerationRequest(prompt: try encode(text: $0, messages: nil, where: "prompt"), parameters: base) }
        if let input {
            guard let data = FileManager.default.contents(atPath: input) else { throw ValidationError("--input \(input): cannot read the file") }
            let decoder = JSONDecoder()
            decoder.userInfo[SamplingParameters.defaultsKey] = base
            for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let text = line.trimmingCharacters(in: .whitespaces)
                if text.isEmpty { continue }
                let place = "\(input) line \(number + 1)"
                let item: InputLine
                do {
                    item = try decoder.decode(InputLine.self, from: Data(text.utf8))
                    try item.sampling.validate()
                } catch let error as SamplingParameterError {
                    throw ValidationError("\(place): \(error)")
                } catch {
                    throw ValidationError("\(place): not a JSON object with \"prompt\" or \"messages\" (\(error))")
                }
                var request = GenerationRequest(prompt: try encode(text: item.prompt, messages: item.messages, where: place), parameters: item.sampling,
                                                priority: item.priority)
                // The server's structured-output fields, read again with their key order kept.
                if OutputConstraint.requestFields.contains(where: { text.contains("\"\($0)\"") }) {
                    do {
                        if let (constraint, _) = try OutputConstraint.fromRequest(try JSON.parse(text, source: place)) {
                            request.grammar = try grammars.compiled(constraint)
                        }
                    } catch let error as ConstraintFieldError {
                        throw ValidationError("\(place): \(error.message)")
                    } catch let error as GrammarError {
                        throw ValidationError("\(place): cannot constrain the answer: \(error.message)")
                    }
                }
                requests.append(request)
            }
        }
        guard !requests.isEmpty else { throw ValidationError("no requests: \(input ?? "the input") holds no lines") }
        return requests
    }

    private func streamOne(_ request: GenerationRequest, generator: Generator, tokenizer: Tokenizer, runtime: ModelRuntime, samplingNote: String) throws {
        let output = FileHandle.standardOutput
        let progress = PromptProgress()
        let result = try generator.generate(prompt: request.prompt, parameters: request.parameters, grammar: request.grammar, onText: { piece in
            progress.clear()
            output.write(Data(piece.utf8))
        }, onPromptProgress: progress.update)
        output.write(Data("\n".utf8))
        if let error = result.error { throw ValidationError(error) }
        if logprobs != nil {
            for token in result.logprobs {
                let alternatives = token.alternatives.map { "\(quoted(tokenizer.decode([$0.id]))) \(fixed(Double($0.logprob), 3))" }
                print("\(token.id) \(quoted(tokenizer.decode([token.id]))) \(token.logprob.map { fixed(Double($0), 3) } ?? "?")  [\(alternatives.joined(separator: ", "))]")
            }
        }
        let line = "[\(result.promptTokens) prompt tokens, \(result.tokens.count) generated, finish: \(result.finishReason.rawValue); "
            + "time to first token \(fixed(result.timeToFirstToken * 1000, 1)) ms, \(fixed(result.decodeTokensPerSecond, 1)) tokens/s; \(runtime.description); "
            + "\(samplingNote)]\n"
        FileHandle.standardError.write(Data(line.utf8))
        if runtime.backend == .cuda {
            FileHandle.standardError.write(Data("[GPU memory: \(runtime.memoryReport)]\n".utf8))
            if let matmuls = runtime.matmulReport { FileHandle.standardError.write(Data("[\(matmuls)]\n".utf8)) }
        }
    }

    private func runBatch(_ requests: [GenerationRequest], generator: Generator, runtime: ModelRuntime) throws {
        let start = Date()
        var done = 0, generated = 0
        var lastDraw = Date.distantPast
        let showProgress = isatty(2) == 1
        func drawProgress(final: Bool = false) {
            let elapsed = Date().timeIntervalSince(start)
            let line = "\r[\(done)/\(requests.count) requests, \(generated) tokens, \(fixed(elapsed > 0 ? Double(generated) / elapsed : 0, 1)) tokens/s]"
            FileHandle.standardError.write(Data((line + (final ? "\n" : "")).utf8))
        }
        let results = try generator.generate(requests) { _, output in
            generated += output.tokens.count
            if output.isFinal { done += 1 }
            if showProgress && Date().timeIntervalSince(lastDraw) > 0.2 {
                lastDraw = Date()
                drawProgress()
            }
        }
        if showProgress { drawProgress(final: true) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        var text = ""
        for (index, result) in results.enumerated() {
            let line = OutputLine(index: index, text: result.text, prompt_tokens: result.promptTokens, completion_tokens: result.tokens.count,
                                  finish_reason: result.finishReason.rawValue, error: result.error)
            text += String(decoding: try encoder.encode(line), as: UTF8.self) + "\n"
        }
        if let output { try writeFile(output, text) } else { FileHandle.standardOutput.write(Data(text.utf8)) }
        let elapsed = Date().timeIntervalSince(start)
        let prompt = results.reduce(0) { $0 + $1.promptTokens }, completion = results.reduce(0) { $0 + $1.tokens.count }
        let stats = generator.engine.statistics
        let summary = "[\(requests.count) requests, \(prompt) prompt tokens, \(completion) generated in \(fixed(elapsed, 2)) s: "
            + "\(fixed(Double(completion) / elapsed, 1)) output tokens/s, \(fixed(Double(prompt + completion) / elapsed, 1)) total; "
            + "\(stats.steps) steps, \(stats.preemptions) preemptions; \(runtime.description)]\n"
        FileHandle.standardError.write(Data(summary.utf8))
    }

    private func quoted(_ s: String) -> String {
        "\"" + s.replacingOccurrences(of: "\n", with: "\\n") + "\""
    }
}
