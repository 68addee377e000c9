import Models
import VTensor

/// What generation needs from a forward pass: the CPU and GPU models both provide it.
///
/// The model computes over a KV cache it is given and never maps memory itself: the caller
/// (the engine) adds and frees sequences and maps what a step's new tokens need before the step.
public protocol LanguageModel: AnyObject {
    var config: ModelConfig { get }
    /// The cache this model reads and writes: virtual tensors, or (GPU, for the A/B) the paged
    /// baseline. On the GPU it is built together with the model, because its memory must use the
    /// model's CUDA context and work stream; its owner (the engine) is still the only one that
    /// grows or frees it.
    var kvStorage: KVStorage { get }
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
    /// Whether `queueStep` returns before the step has run (the GPU), so the caller can plan the
    /// next step meanwhile and feed it this step's picks without them visiting the host.
    var queuesSteps: Bool { get }
    /// Queues a step with its draws (as `forwardAndSample`); its picks come from `collect`. The
    /// inputs named in `feeds` have one token each, a placeholder for a pick of the step queued
    /// just before, which the model substitutes where that pick is (on the device).
    func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep
    /// Waits for a queued step; returns one pick per input. Steps are collected in queue order.
    func collect(_ step: QueuedStep) throws -> [SampledToken]
    /// Whether a step's sampling may be queued after its forward pass (`queueForward`, then
    /// `queueSampling`), so draws that need the previous step's picks on the host (a grammar's
    /// mask, penalties, `min_tokens`) are made while the forward pass runs.
    var queuesSamplingLate: Bool { get }
    /// Queues a step's forward pass only (as `queueStep`, without its draws); its sampling must be
    /// queued with `queueSampling` before the next step is queued or this one collected.
    func queueForward(_ inputs: [ForwardInput], feeds: [StepFeed]) throws -> QueuedStep
    /// Queues the sampling of a step queued with `queueForward`, one draw per input.
    func queueSampling(_ step: QueuedStep, draws: [DeviceDraw], vocabularyLimit: Int) throws
}

/// An input whose one token is the pick, for input `previousInput`, of the step queued just before.
public struct StepFeed: Sendable, Equatable {
    public var input: Int
    public var previousInput: Int
    public init(input: Int, previousInput: Int) {
        self.input = input
        self.previousInput = previousInput
    }
}

/// A step queued with `LanguageModel.queueStep`, to be collected.
public struct QueuedStep: Sendable, Equatable {
    public let serial: Int
    public let rows: Int
    public init(serial: Int, rows: Int) {
        self.serial = serial
        self.rows = rows
    }
}

extension LanguageModel {
    public var samplesOnDevice: Bool { false }
    public var computesAsynchronously: Bool { false }
    public var queuesSteps: Bool { false }
    public func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep {
        throw RuntimeError.unsupported("this model runs its steps synchronously: use forwardAndSample")
    }
    public func collect(_ step: QueuedStep) throws -> [SampledToken] {
        throw RuntimeError.unsupported("this model runs its steps synchronously: use forwardAndSample")
    }
    public var queuesSamplingLate: Bool { false }
    public func queueForward(_ inputs: [ForwardInput], feeds: [StepFeed]) throws -> QueuedStep {
        throw RuntimeError.unsupported("this model queues a step's sampling with its forward pass: use queueStep")
    }
    public func queueSampling(_ step: QueuedStep, draws: [DeviceDraw], vocabularyLimit: Int) throws {
        throw RuntimeError.unsupported("this model queues a step's sampling with its forward pass: use queueStep")
    }
    public var maxStepTokens: Int { Int.max }
    public var maxStepRows: Int { Int.max }
    public func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        throw RuntimeError.unsupported("this model samples on the host: use forward and a Sampler")
    }

    public func addSequence(_ id: Int) throws { try kvStorage.addRequest(id) }
    public func freeSequence(_ id: Int) throws { try kvStorage.free(id) }
    public func length(of id: Int) throws -> Int { try kvStorage.length(of: id) }

    /// Maps, now, what `inputs` will write: for tools and tests that drive a model step by step.
    /// (The engine instead maps through its `AsyncMapper`, ahead of the step.)
    public func reserve(_ inputs: [ForwardInput]) throws {
        try kvStorage.reserveNow(try inputs.map { ($0.id, try kvStorage.length(of: $0.id) + $0.tokens.count) })
    }

    /// `reserve`, then `forwardAndSample`: one synchronous sampled step for tools and tests.
    public func reserveAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        try reserve(inputs)
        return try forwardAndSample(inputs, draws: draws, vocabularyLimit: vocabularyLimit)
    }

    /// `reserve`, then `forward`: one synchronous step for tools and tests.
    public func reserveAndForward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        try reserve(inputs)
        return try forward(inputs)
    }
}

extension CPUModel: LanguageModel {
    public var kvStorage: KVStorage { .virtual(cache) }
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
}

extension GPUModel: LanguageModel {
    public var maxSequenceTokens: Int { kvStorage.maxTokensPerRequest }
    public var maxStepTokens: Int { maxBatchTokens }
    public var maxStepRows: Int { maxLogitRows }
    public var samplesOnDevice: Bool { true }
    public var computesAsynchronously: Bool { true }
    public var queuesSteps: Bool { true }
    public var queuesSamplingLate: Bool { true }
}
