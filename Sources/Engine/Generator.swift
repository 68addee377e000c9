import Models
import Runtime
import Tokenizers
import VTensor

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
        engine = try Engine(model: model, cache: model.kvCache, tokenizer: tokenizer, eosTokenIds: eos,
                            options: options ?? EngineOptions(fittedTo: model))
    }

    /// Generates from `prompt` token ids; `onText` receives each piece of text as it is final.
    public func generate(prompt: [Int], parameters: SamplingParameters, onText: (String) -> Void = { _ in }) throws -> GenerationResult {
        try generate([GenerationRequest(prompt: prompt, parameters: parameters)]) { _, output in
            if !output.text.isEmpty { onText(output.text) }
        }[0]
    }

    /// Runs every request in continuous batches; `onOutput` sees each step's output with the
    /// index of its request. Throws (running nothing) if any request is refused.
    public func generate(_ requests: [GenerationRequest], onOutput: (Int, RequestOutput) -> Void = { _, _ in }) throws -> [GenerationResult] {
        struct Progress {
            var result: GenerationResult
            var arrival: UInt64
            var firstToken: UInt64?
            var done = false
        }
        var ids: [RequestID] = []
        do {
            for request in requests { ids.append(try engine.add(request)) }
        } catch {
            for id in ids { engine.abort(id) }
            engine.runUntilIdle { _ in }
            throw error
        }
        let now = monotonicNanos()
        var index: [RequestID: Int] = [:]
        var progress: [Progress] = []
        for (i, id) in ids.enumerated() {
            index[id] = i
            progress.append(Progress(result: GenerationResult(text: "", tokens: [], promptTokens: requests[i].prompt.count, finishReason: .length,
                                                              error: nil, logprobs: [], timeToFirstToken: 0, decodeSeconds: 0), arrival: now))
        }
        engine.runUntilIdle { outputs in
            let at = monotonicNanos()
            for output in outputs {
                guard let i = index[output.id] else { continue }
                if progress[i].firstToken == nil && !output.tokens.isEmpty { progress[i].firstToken = at }
                progress[i].result.tokens += output.tokens.map(\.id)
                if requests[i].parameters.logprobs != nil { progress[i].result.logprobs += output.tokens }
                progress[i].result.text += output.text
                if let finish = output.finish {
                    progress[i].result.finishReason = finish
                    progress[i].result.error = output.error
                    let first = progress[i].firstToken ?? at
                    progress[i].result.timeToFirstToken = Double(first - progress[i].arrival) / 1e9
                    progress[i].result.decodeSeconds = Double(at - first) / 1e9
                }
                onOutput(i, output)
            }
        }
        return progress.map(\.result)
    }
}
