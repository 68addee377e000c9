import Foundation
import XCTest
@testable import Tokenizers

final class DetokenizerTests: XCTestCase {
    /// A tiktoken vocabulary of the 256 single bytes only: every character is split into its
    /// UTF-8 bytes, the hardest case for streaming.
    private func byteTokenizer() throws -> Tokenizer {
        let lines = (0..<256).map { "\(Data([UInt8($0)]).base64EncodedString()) \($0)" }.joined(separator: "\n")
        return try Tokenizer(tiktoken: try temporaryFile("bytes.tiktoken", lines), pattern: SplitPattern.gpt2Regex,
                             specialTokens: ["<|eot|>": 256])
    }

    func testHoldsBackIncompleteCharacters() throws {
        let t = try byteTokenizer()
        let ids = t.encode("a🦀é")
        XCTAssertEqual(ids, [0x61, 0xF0, 0x9F, 0xA6, 0x80, 0xC3, 0xA9])
        var d = IncrementalDetokenizer(tokenizer: t)
        XCTAssertEqual(ids.map { d.add($0) }, ["a", "", "", "", "🦀", "", "é"])
        XCTAssertEqual(d.finish(), "")
    }

    func testInvalidBytesBecomeReplacementCharactersAsInFullDecode() throws {
        let t = try byteTokenizer()
        // A lone continuation byte, a truncated 4-byte sequence followed by ASCII, an invalid
        // second byte (E0 80), and an incomplete sequence at the very end.
        let ids = [0x80, 0x41, 0xF0, 0x9F, 0x42, 0xE0, 0x80, 0x43, 0xE2, 0x82]
        let full = t.decode(ids)
        XCTAssertEqual(full, "\u{FFFD}A\u{FFFD}B\u{FFFD}\u{FFFD}C\u{FFFD}")
        var d = IncrementalDetokenizer(tokenizer: t)
        var pieces = ids.map { d.add($0) }
        pieces.append(d.finish())
        XCTAssertEqual(pieces, ["\u{FFFD}", "A", "", "", "\u{FFFD}B", "", "\u{FFFD}\u{FFFD}", "C", "", "", "\u{FFFD}"])
        XCTAssertEqual(pieces.joined(), full)
    }

    func testSpecialTokensAndSkipping() throws {
        let t = try byteTokenizer()
        let ids = t.encode("hi<|eot|>")
        XCTAssertEqual(ids, [0x68, 0x69, 256])
        XCTAssertTrue(t.isSpecial(256))
        XCTAssertEqual(t.specialTokenIds, [256])
        XCTAssertEqual(t.decode(ids), "hi<|eot|>")
        var d = IncrementalDetokenizer(tokenizer: t, skipSpecialTokens: true)
        XCTAssertEqual(ids.map { d.add($0) }, ["h", "i", ""])
        XCTAssertEqual(t.decode([-1, 100_000]), "", "ids outside the vocabulary decode to nothing")
    }

    /// SentencePiece-style decoding drops one leading space at the start of the stream only,
    /// even when the first piece is a lone "▁" or a byte-fallback piece.
    func testSentencePieceLeadingSpaceInStreaming() throws {
        let t = try Tokenizer(tokenizerJSON: fixturesDirectory + "/trained-llama2.tokenizer.json")
        for text in ["Hello world", " Hello", "  two", "🦀 crab", "x"] {
            let ids = t.encode(text, addSpecialTokens: false)
            var d = IncrementalDetokenizer(tokenizer: t)
            var streamed = ids.map { d.add($0) }.joined()
            streamed += d.finish()
            XCTAssertEqual(streamed, t.decode(ids), text)
            XCTAssertEqual(streamed, text, "round trip of \(text.debugDescription)")
        }
    }
}
