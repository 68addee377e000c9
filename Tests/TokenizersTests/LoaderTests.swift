import Foundation
import GGUFTestSupport
import XCTest
import Models
@testable import Tokenizers

final class LoaderTests: XCTestCase {
    /// The GGUF "llama" (SentencePiece) path: Mistral's pieces, scores and types written into
    /// a GGUF must encode the fixture texts exactly as the sentencepiece oracle did.
    func testGGUFLlamaVocabularyMatchesSentencePiece() throws {
        let model = try fetchAsset(PyPIAsset(package: "mistral-common", version: "1.13.1",
                                             member: "mistral_common/data/mistral_instruct_tokenizer_240323.model.v3"))
        let proto = try SentencePieceModelProto(try readFile(model), source: model)
        var w = GGUFTestWriter()
        w.add("tokenizer.ggml.model", .string("llama"))
        w.add("tokenizer.ggml.tokens", .array(proto.pieces.map { .string($0) }))
        w.add("tokenizer.ggml.scores", .array(proto.scores.map { .float32($0) }))
        w.add("tokenizer.ggml.token_type", .array(proto.types.map { .int32(Int32($0)) }))
        w.add("tokenizer.ggml.bos_token_id", .uint32(1))
        w.add("tokenizer.ggml.eos_token_id", .uint32(2))
        w.add("tokenizer.ggml.unknown_token_id", .uint32(0))
        w.add("tokenizer.ggml.add_bos_token", .bool(true))
        let tokenizer = try Tokenizer(gguf: try GGUFFile(path: w.write()))
        let fixture = try loadFixture("mistral.json")
        for c in fixture.cases {
            let got = tokenizer.encode(c.text, addSpecialTokens: false)
            XCTAssertEqual(got, c.ids, "GGUF llama encode \(c.text.debugDescription): \(firstDifference(got, c.ids))")
            XCTAssertEqual(tokenizer.encode(c.text), [1] + c.ids)
            if let decoded = c.decoded { XCTAssertEqual(tokenizer.decode(c.ids), decoded) }
        }
        XCTAssertEqual(tokenizer.bosTokenId, 1)
        XCTAssertEqual(tokenizer.eosTokenIds, [2])
    }

    private func assertError(_ expression: @autoclosure () throws -> Tokenizer, contains fragment: String,
                             file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertThrowsError(try expression(), file: file, line: line) { error in
            XCTAssertTrue(error is TokenizerError, "\(type(of: error)): \(error)", file: file, line: line)
            XCTAssertTrue("\(error)".contains(fragment), "\(error) does not mention \(fragment)", file: file, line: line)
        }
    }

    private func json(_ text: String) throws -> String { try temporaryFile("tokenizer.json", text) }

    private let model = #""model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}"#

    func testTokenizerJSONErrorsNameTheProblem() throws {
        assertError(try Tokenizer(tokenizerJSON: "/nonexistent/tokenizer.json"), contains: "cannot read the file")
        assertError(try Tokenizer(tokenizerJSON: try json(#"{"model": {"type": "BPE", "vocab": {"a": 0"#)), contains: "malformed JSON at byte")
        assertError(try Tokenizer(tokenizerJSON: try json(#"{"model": {"type": "WordPiece", "vocab": {}}}"#)),
                    contains: #"unsupported model type "WordPiece""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{\#(model), "pre_tokenizer": {"type": "Whitespace"}}"#)),
                    contains: #"unsupported pre-tokenizer "Whitespace""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{\#(model), "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated"}}"#)),
                    contains: #"unsupported pre-tokenizer regex "\\w+""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{\#(model), "normalizer": {"type": "Precompiled", "precompiled_charsmap": ""}}"#)),
                    contains: #"unsupported normalizer "Precompiled""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{\#(model), "decoder": {"type": "WordPiece"}}"#)),
                    contains: #"unsupported decoder "WordPiece""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{\#(model), "post_processor": {"type": "Mystery"}}"#)),
                    contains: #"unsupported post-processor "Mystery""#)
        assertError(try Tokenizer(tokenizerJSON: try json(#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a b"]}}"#)),
                    contains: "missing from the vocabulary")
        assertError(try Tokenizer(tokenizerJSON: try json(#"{"model": {"type": "BPE", "vocab": {"a": "x"}, "merges": []}}"#)),
                    contains: "invalid id")
    }

    func testMinimalTokenizerJSONWorks() throws {
        let t = try Tokenizer(tokenizerJSON: try json(#"{\#(model), "pre_tokenizer": null, "decoder": null}"#))
        XCTAssertEqual(t.encode("abba"), [2, 1, 0])
        XCTAssertEqual(t.decode([2, 1, 0]), "abba")
        XCTAssertEqual(t.vocabularySize, 3)
    }

    func testGGUFErrorsNameTheProblem() throws {
        var w = GGUFTestWriter()
        w.add("tokenizer.ggml.model", .string("gpt2"))
        w.add("tokenizer.ggml.tokens", .array(["a", "b", "ab"].map { .string($0) }))
        w.add("tokenizer.ggml.merges", .array(["a b"].map { .string($0) }))
        w.add("tokenizer.ggml.pre", .string("mystery"))
        assertError(try Tokenizer(gguf: try GGUFFile(path: w.write())), contains: #"unsupported tokenizer.ggml.pre "mystery""#)

        var bert = GGUFTestWriter()
        bert.add("tokenizer.ggml.model", .string("bert"))
        bert.add("tokenizer.ggml.tokens", .array(["a"].map { .string($0) }))
        assertError(try Tokenizer(gguf: try GGUFFile(path: bert.write())), contains: #"unsupported tokenizer.ggml.model "bert""#)

        var none = GGUFTestWriter()
        none.add("general.architecture", .string("llama"))
        assertError(try Tokenizer(gguf: try GGUFFile(path: none.write())), contains: "no tokenizer.ggml.model")

        var ok = GGUFTestWriter()
        ok.metadata = w.metadata.filter { $0.0 != "tokenizer.ggml.pre" }
        let t = try Tokenizer(gguf: try GGUFFile(path: ok.write()))
        XCTAssertEqual(t.encode("abab"), [2, 2])
    }

    func testSentencePieceErrorsNameTheProblem() throws {
        // ModelProto { pieces { piece: "a" score: 0 type: NORMAL } trainer_spec { model_type: UNIGRAM } }
        let piece: [UInt8] = [0x0A, 0x01, 0x61, 0x15, 0, 0, 0, 0, 0x18, 0x01]
        let unigram: [UInt8] = [0x0A, UInt8(piece.count)] + piece + [0x12, 0x02, 0x18, 0x01]
        assertError(try Tokenizer(sentencePieceModel: try temporaryFile("u.model", unigram)),
                    contains: "unsupported SentencePiece model type UNIGRAM")
        assertError(try Tokenizer(sentencePieceModel: try temporaryFile("t.model", Array(unigram.dropLast(3)))),
                    contains: "malformed protobuf")
        let bpe: [UInt8] = [0x0A, UInt8(piece.count)] + piece + [0x12, 0x02, 0x18, 0x02]
        let nfkc = bpe + [0x1A, 0x05, 0x12, 0x03, 0x01, 0x02, 0x03]
        assertError(try Tokenizer(sentencePieceModel: try temporaryFile("n.model", nfkc)), contains: "precompiled character map")
        let t = try Tokenizer(sentencePieceModel: try temporaryFile("ok.model", bpe), addBos: false)
        XCTAssertEqual(t.vocabularySize, 1)
    }

    func testTiktokenErrorsNameTheProblem() throws {
        let bad = try temporaryFile("bad.tiktoken", "YQ== 0\nnot-base64\n")
        assertError(try Tokenizer(tiktoken: bad, pattern: SplitPattern.gpt2Regex, specialTokens: [:]), contains: "line 2 is not")
        let good = try temporaryFile("good.tiktoken", "YQ== 0\nYg== 1\nYWI= 2\n")
        assertError(try Tokenizer(tiktoken: good, pattern: "[a-z]+", specialTokens: [:]), contains: "unsupported pre-tokenizer regex")
        assertError(try Tokenizer(tiktoken: good, pattern: SplitPattern.gpt2Regex, specialTokens: [:], bosToken: "<s>"),
                    contains: "not a special token")
        let t = try Tokenizer(tiktoken: good, pattern: SplitPattern.gpt2Regex, specialTokens: ["<|end|>": 3])
        XCTAssertEqual(t.encode("ab<|end|>ba"), [2, 3, 1, 0])
        XCTAssertEqual(t.decode([2, 3, 1, 0]), "ab<|end|>ba")
        XCTAssertEqual(t.decode([2, 3, 1, 0], skipSpecialTokens: true), "abba")
    }
}
