import Models
import VTensor

/// What generation needs from a forward pass: the CPU and GPU models both provide it.
///
/// The model computes over a KV cache it is given and never maps memory itself: the caller
/// (the engine) adds and frees sequences and maps what a step's new tokens need before the step.
public protocol LanguageModel: AnyObject {
    var config: ModelConfig { get }
    /// The cache this model reads and writes. On the GPU it is built together with the model,
    /// because its memory backend must use the model's CUDA context and work stream; its owner
    /// (the engine) is still the only one that grows or frees it.
    var kvCache: KVCache { get }
    /// The most tokens one sequence may hold (its KV address space).
    var maxSequenceTokens: Int { get }
    /// The most tokens, and the most rows (sequences), one step may carry (the workspace's size).
    var maxStepTokens: Int { get }
    var maxStepRows: Int { get }
    /// Per input, its logits rows ([rows][vocab] flattened).
    func forward(_ inputs: [ForwardInput]) throws -> [[Float]]
    /// Whether `forwardAndSample` picks the tokens where the logits are (the GPU), so they never
    /// travel to the host.
    var samplesOnDevice: Bool { get }
    /// Whether the step runs on a device while the host goes on, so a mapper thread can map the
    /// next step's memory meanwhile (the GPU). A CPU step keeps the cores busy itself: a mapper
    /// thread would only compete with it, so the engine maps synchronously there.
    var computesAsynchronously: Bool { get }
    /// Runs a step and picks each input's next token with its draw (one per input, in order).
    func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken]
}

extension LanguageModel {
    public var samplesOnDevice: Bool { false }
    public var computesAsynchronously: Bool { false }
    public var maxStepTokens: Int { Int.max }
    public var maxStepRows: Int { Int.max }
    public func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        throw RuntimeError.unsupported("this model samples on the host: use forward and a Sampler")
    }

    public func addSequence(_ id: Int) throws { try kvCache.addRequest(id) }
    public func freeSequence(_ id: Int) throws { try kvCache.free(id) }
    public func length(of id: Int) throws -> Int { try kvCache.length(of: id) }

    /// Maps, now, what `inputs` will write: for tools and tests that drive a model step by step.
    /// (The engine instead maps through its `AsyncMapper`, ahead of the step.)
    public func reserve(_ inputs: [ForwardInput]) throws {
        let targets = try inputs.map { ($0.id, try kvCache.length(of: $0.id) + $0.tokens.count) }
        try kvCache.memory.grow(try kvCache.prepareGrowth(targets))
    }

    /// `reserve`, then `forward`: one synchronous step for tools and tests.
    public func reserveAndForward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        try reserve(inputs)
        return try forward(inputs)
    }
}

extension CPUModel: LanguageModel {
    public var kvCache: KVCache { cache }
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
}

extension GPUModel: LanguageModel {
    public var kvCache: KVCache { cache }
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
    public var maxStepTokens: Int { maxBatchTokens }
    public var maxStepRows: Int { maxLogitRows }
    public var samplesOnDevice: Bool { true }
    public var computesAsynchronously: Bool { true }
}
