import Foundation
import Models
import XCTest
@testable import Runtime

/// The CPU forward pass against transformers (fp32, eager) on tiny random models that
/// scripts/reference/make_golden.py built and recorded: teacher-forced logits and 16 greedy tokens.
final class GoldenTests: XCTestCase {
    struct Golden: Decodable {
        let name: String
        let vocab_size: Int
        let input_ids: [Int]
        let logits_file: String
        let logits_shape: [Int]
        let greedy_prompt: [Int]
        let greedy_tokens: [Int]
        let logits_rel_err_fp64: Double
    }

    static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/golden").path

    func check(_ name: String) throws {
        let dir = Self.directory + "/" + name
        let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: URL(fileURLWithPath: dir + "/golden.json")))
        let loaded = try LoadedModel.open(dir)
        XCTAssertEqual(loaded.config.vocabSize, golden.vocab_size)
        let model = try CPUModel(weights: loaded.weights, kvBudgetBytes: 64 << 20, maxTokensPerSequence: 128, threads: 2)

        // Teacher-forced logits.
        try model.addSequence(0)
        let ours = try model.reserveAndForward([ForwardInput(id: 0, tokens: golden.input_ids, allLogits: true)])[0]
        let reference = try Data(contentsOf: URL(fileURLWithPath: dir + "/" + golden.logits_file)).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        XCTAssertEqual(golden.logits_shape, [golden.input_ids.count, golden.vocab_size])
        XCTAssertEqual(ours.count, reference.count)
        var diff = 0.0, norm = 0.0
        for (a, b) in zip(ours, reference) { diff += Double(a - b) * Double(a - b); norm += Double(b) * Double(b) }
        let relative = (diff / norm).squareRoot()
        // The bar is 1e-3; fp32 noise is ~1e-6 (transformers' own fp32-vs-fp64 is logits_rel_err_fp64).
        XCTAssertLessThan(relative, 1e-4, "\(name): relative error \(relative) (transformers fp32 vs fp64: \(golden.logits_rel_err_fp64))")

        // Greedy continuation, one token at a time through the cache.
        try model.addSequence(1)
        var logits = try model.reserveAndForward([ForwardInput(id: 1, tokens: golden.greedy_prompt)])[0]
        var generated: [Int] = []
        for _ in 0..<golden.greedy_tokens.count {
            let next = logits.indices.max { logits[$0] < logits[$1] }!
            generated.append(next)
            logits = try model.reserveAndForward([ForwardInput(id: 1, tokens: [next])])[0]
        }
        XCTAssertEqual(generated, golden.greedy_tokens, name)
    }

    func testLlama3GQAWithLlama3RoPEScaling() throws { try check("llama3") }
    func testQwen2BiasesTiedEmbeddings() throws { try check("qwen2") }
    func testMistralSlidingWindow() throws { try check("mistral") }
}
