import VTensor

/// A batch entry for one forward pass: `tokens` are appended to sequence `id`'s KV cache.
public struct ForwardInput: Sendable {
    public var id: Int
    public var tokens: [Int]
    /// Logits for every new token (teacher forcing, scoring) or only the last (generation).
    public var allLogits: Bool

    public init(id: Int, tokens: [Int], allLogits: Bool = false) {
        self.id = id
        self.tokens = tokens
        self.allLogits = allLogits
    }
}

/// What every forward pass does before its kernels, CPU or GPU alike.
enum ForwardStep {
    /// Checks a step's inputs (each sequence once, new tokens present and in the vocabulary, the
    /// context not exceeded, the KV for the new tokens already mapped), then declares them
    /// written — nothing changes when a check fails. Returns each sequence's length before the step.
    ///
    /// The model never grows memory: whoever owns the cache maps first (the engine through its
    /// mapper, ahead of the step; tools and tests with `LanguageModel.reserve`).
    static func begin(_ inputs: [ForwardInput], cache: KVStorage, vocabularySize: Int) throws -> [Int] {
        guard Set(inputs.map(\.id)).count == inputs.count else { throw RuntimeError.invalidRequest("a sequence appears twice in one batch") }
        var starts: [Int] = []
        for input in inputs {
            guard !input.tokens.isEmpty else { throw RuntimeError.invalidRequest("sequence \(input.id) has no new tokens") }
            for t in input.tokens where t < 0 || t >= vocabularySize {
                throw RuntimeError.invalidRequest("token id \(t) is outside the vocabulary (0..<\(vocabularySize))")
            }
            let start = try cache.length(of: input.id)
            guard start + input.tokens.count <= cache.maxTokensPerRequest else {
                throw RuntimeError.contextExceeded(tokens: start + input.tokens.count, limit: cache.maxTokensPerRequest)
            }
            starts.append(start)
        }
        let lengths = inputs.enumerated().map { ($0.element.id, starts[$0.offset] + $0.element.tokens.count) }
        try cache.setLengths(lengths)
        return starts
    }
}
