import Models
import Runtime
import Structured
import Tokenizers

/// The outcome of one generation: the text, the ids, why it ended, and its timing.
public struct GenerationResult: Sendable {
    public var text: String
    public var tokens: [Int]
    public var promptTokens: Int
    public var finishReason: FinishReason
    /// Why the request failed, when a step failed under it.
    public var error: String?
    /// Per generated token when logprobs were asked for.
    public var logprobs: [SampledToken]
    /// From the request's arrival to its first token.
    public var timeToFirstToken: Double
    /// Seconds spent after the first token.
    public var decodeSeconds: Double

    /// Tokens per second after the first.
    public var decodeTokensPerSecond: Double {
        tokens.count > 1 && decodeSeconds > 0 ? Double(tokens.count - 1) / decodeSeconds : 0
    }
}

/// Generation through the engine for callers that hold the prompts in hand (a CLI, tests):
/// one prompt streamed, or many at once in continuous batches, each result in input order.
/// The engine steps on the calling thread; for concurrent clients use `EngineLoop`.
public final class Generator {
    public let engine: Engine
    public let tokenizer: Tokenizer
    public var model: any LanguageModel { engine.model }
    public var eosTokenIds: [Int] { engine.eosTokenIds }

    /// - Parameters:
    ///   - extraEOSTokenIds: end-of-sequence ids besides the tokenizer's and the config's (generation_config.json's).
    ///   - options: nil: as many sequences and tokens a step as the model's workspace takes.
    public init(model: any LanguageModel, tokenizer: Tokenizer, extraEOSTokenIds: [Int] = [], options: EngineOptions? = nil) throws {
        self.tokenizer = tokenizer
        let eos = tokenizer.eosTokenIds + model.config.eosTokenIds + extraEOSTokenIds
        engine = try Engine(model: model, tokenizer: tokenizer, eosTokenIds: eos,
                            options: options ?? EngineOptions(fittedTo: model))
    }

    /// Generates from `prompt` token ids; `onText` receives each piece of text as it is final,
    /// `onPromptProgress` the prompt tokens computed so far after each step until the first token.
    /// `grammar`: structured output (see ``GenerationRequest/grammar``).
    public func generate(prompt: [Int], parameters: SamplingParameters, grammar: CompiledGrammar? = nil, onText: (String) -> Void = { _ in },
                         onPromptProgress: ((_ computed: Int, _ total: Int) -> Void)? = nil) throws -> GenerationResult {
        var started = false
        return try generate([GenerationRequest(prompt: prompt, parameters: parameters, grammar: grammar)], onOutput: { _, output in
            if !output.tokens.isEmpty { started = true }
            if !output.text.isEmpty { onText(output.text) }
        }, onStep: onPromptProgress.map { report in
            { snapshot in if !started { report(prompt.count - min(prompt.count, snapshot.promptTokensLeft), prompt.count) } }
        })[0]
    }

    /// Runs every request in continuous batches; `onOutput` sees each step's output with the
    /// index of its request, `onStep` the engine's state after each step. Throws (running
    /// nothing) if any request is refused.
    public func generate(_ requests: [GenerationRequest], onOutput: (Int, RequestOutput) -> Void = { _, _ in },
                         onStep: ((EngineSnapshot) -> Void)? = nil) throws -> [GenerationResult] {
        var ids: [RequestID] = []
        do {
            for request in requests { ids.append(try engine.add(request)) }
        } catch {
            for id in ids { engine.abort(id) }
            engine.runUntilIdle { _ in }
            throw error
        }
        let index = Dictionary(uniqueKeysWithValues: ids.enumerated().map { ($0.element, $0.offset) })
        var results = requests.map {
            GenerationResult(text: "", tokens: [], promptTokens: $0.prompt.count, finishReason: .length, error: nil, logprobs: [],
                             timeToFirstToken: 0, decodeSeconds: 0)
        }
        engine.runUntilIdle { outputs in
            for output in outputs {
                guard let i = index[output.id] else { continue }
                results[i].tokens += output.tokens.map(\.id)
                if requests[i].parameters.logprobs != nil { results[i].logprobs += output.tokens }
                results[i].text += output.text
                if let finish = output.finish {
                    results[i].finishReason = finish
                    results[i].error = output.error
                    if let timing = output.timing {
                        let first = timing.firstToken ?? timing.total
                        results[i].timeToFirstToken = first
                        results[i].decodeSeconds = timing.total - first
                    }
                }
                onOutput(i, output)
            }
            onStep?(engine.snapshot)
        }
        return results
    }
}
