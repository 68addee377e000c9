import Models

/// What generation needs from a forward pass: the CPU and GPU models both provide it.
public protocol LanguageModel: AnyObject {
    var config: ModelConfig { get }
    /// The most tokens one sequence may hold (its KV address space).
    var maxSequenceTokens: Int { get }
    func addSequence(_ id: Int) throws
    func freeSequence(_ id: Int) throws
    /// Per input, its logits rows ([rows][vocab] flattened).
    func forward(_ inputs: [ForwardInput]) throws -> [[Float]]
    /// Whether `forwardAndSample` picks the tokens where the logits are (the GPU), so they never
    /// travel to the host.
    var samplesOnDevice: Bool { get }
    /// Runs a step and picks each input's next token with its draw (one per input, in order).
    func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken]
}

extension LanguageModel {
    public var samplesOnDevice: Bool { false }
    public func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        throw RuntimeError.unsupported("this model samples on the host: use forward and a Sampler")
    }
}

extension CPUModel: LanguageModel {
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
}

extension GPUModel: LanguageModel {
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
    public var samplesOnDevice: Bool { true }
}
