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
}

extension CPUModel: LanguageModel {
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
}

extension GPUModel: LanguageModel {
    public var maxSequenceTokens: Int { cache.maxTokensPerRequest }
}
