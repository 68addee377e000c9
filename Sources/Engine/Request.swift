import Runtime
import Structured

/// The engine's name for a request.
public typealias RequestID = Int

/// What a client asks for: prompt token ids and how to sample the continuation.
public struct GenerationRequest: Sendable {
    public var prompt: [Int]
    public var parameters: SamplingParameters
    /// Splits the prefix cache (vLLM's `cache_salt`): requests share cached K/V only with
    /// requests of the same salt, so tenants never see each other's prefixes.
    public var cacheSalt: String?
    /// Score the prompt too (vLLM's `prompt_logprobs`): each prompt token's log-probability given
    /// the tokens before it, with this many most likely alternatives (0...20), on the raw logits.
    /// On a model that samples on the device (the GPU), a step holding a scoring prompt chunk
    /// runs synchronously with every position's logits brought to the host, within the model's
    /// logits rows a step (the chunk is cut to fit).
    public var promptLogprobs: Int?
    /// Its place under `SchedulePolicy.priority` (vLLM's `priority`): lower values are scheduled
    /// sooner, arrival order among equals. The other policies take only 0.
    public var priority: Int
    /// Constrains the output to a grammar's language (structured output: a JSON schema, a
    /// pattern, a choice), compiled for this engine's tokenizer. Each step samples among the
    /// tokens it allows; the request ends when the grammar is complete. On a model that samples
    /// on the device, the refused ids go to the draw as biases of minus infinity, and the
    /// request's steps wait for its previous pick (the next mask depends on it).
    public var grammar: CompiledGrammar?

    public init(prompt: [Int], parameters: SamplingParameters = SamplingParameters(temperature: 0), cacheSalt: String? = nil,
                promptLogprobs: Int? = nil, priority: Int = 0, grammar: CompiledGrammar? = nil) {
        self.grammar = grammar
        self.prompt = prompt
        self.parameters = parameters
        self.cacheSalt = cacheSalt
        self.promptLogprobs = promptLogprobs
        self.priority = priority
    }
}

/// Where a request is in its life. Every transition is counted in `EngineStatistics`.
public enum RequestStatus: Sendable, Equatable {
    /// Queued, never run yet.
    case waiting
    /// In the running batch: its prompt is being computed (maybe in chunks) or it decodes.
    case running
    /// Gave its KV back under memory pressure and waits to resume from its tokens (recompute).
    case preempted
    case finished(FinishReason)
    case aborted

    public var isDone: Bool {
        switch self {
        case .finished, .aborted: return true
        default: return false
        }
    }
}

/// What one step produced for one request: its new tokens and text, and its finish.
public struct RequestOutput: Sendable {
    public let id: RequestID
    /// Tokens chosen this step (with log-probabilities when the request asked for them).
    public var tokens: [SampledToken]
    /// Text that became final this step (whole UTF-8 characters, nothing that may still start a stop string).
    public var text: String
    /// Set on the request's last output.
    public var finish: FinishReason?
    /// Why the request ended early, when a step failed under it.
    public var error: String?
    public var promptTokens: Int
    /// Tokens generated so far.
    public var outputTokens: Int
    /// On the last output: the request's times, measured by the engine from its arrival.
    public var timing: RequestTiming?
    /// With `GenerationRequest.promptLogprobs`, on the output of the first generated token: one
    /// entry per prompt token, nil for the first (nothing comes before it).
    public var promptLogprobs: [SampledToken?]? = nil

    public var isFinal: Bool { finish != nil }
}

/// One request's latencies, in seconds from its arrival (`Engine.add`): what a server's metrics
/// and a benchmark's percentiles are made of.
public struct RequestTiming: Sendable, Codable, Equatable {
    /// Arrival to its first step (waiting in the queue).
    public var queue: Double
    /// Arrival to its first generated token; nil if it ended before one.
    public var firstToken: Double?
    /// Arrival to its end.
    public var total: Double
    public var outputTokens: Int

    /// Mean time between tokens after the first.
    public var interToken: Double? {
        guard let firstToken, outputTokens > 1 else { return nil }
        return (total - firstToken) / Double(outputTokens - 1)
    }
}
