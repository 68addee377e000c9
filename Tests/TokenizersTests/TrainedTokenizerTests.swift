import Foundation
import XCTest
@testable import Tokenizers

/// Small BPE tokenizers trained by the fixture script with the `tokenizers` library in the
/// configurations of real tokenizer.json files, committed with their expected ids. Oracle:
/// `tokenizers` loading the same committed file.
final class TrainedTokenizerTests: XCTestCase {
    private func check(_ name: String, lossless: @escaping (String) -> Bool, corpusLossless: Bool = true) throws -> Tokenizer {
        let fixture = try loadFixture("trained-\(name).json")
        let file = try XCTUnwrap(fixture.tokenizer_file)
        let tokenizer = try Tokenizer(tokenizerJSON: fixturesDirectory + "/" + file)
        for c in fixture.cases {
            XCTAssertEqual(tokenizer.encode(c.text), c.ids_with_special, "\(name) with special tokens: \(c.text.debugDescription)")
        }
        try checkAgainstOracle(tokenizer, fixture, name, lossless: lossless, corpusLossless: corpusLossless)
        return tokenizer
    }

    /// Split(Llama 3 regex) + ByteLevel(use_regex: false), ignore_merges, a BOS template,
    /// added tokens with lstrip/rstrip and single_word.
    func testLlama3Style() throws {
        let t = try check("llama3", lossless: { !$0.contains("<|tool|>") })
        XCTAssertEqual(t.bosTokenId, 0)
        XCTAssertEqual(t.prefixIds, [0])
        XCTAssertEqual(t.encode("").first, 0)
    }

    /// NFC, Digits (runs), ByteLevel with a prefix space and the GPT-2 regex.
    func testGPT2Style() throws {
        // The prefix space stays in the decoded text, and NFC changes combining sequences.
        _ = try check("gpt2", lossless: { _ in false }, corpusLossless: false)
    }

    /// Prepend("▁") + Replace(" ", "▁"), no pre-tokenizer, byte fallback, fuse_unk,
    /// Replace + ByteFallback + Fuse + Strip decoder.
    func testLlama2Style() throws {
        // Each segment between added tokens gets its own "▁" prefix, so those texts do not
        // round-trip (in `tokenizers` either).
        let t = try check("llama2", lossless: { t in !["<s>", "</s>", "<|tool|>", "<unk>", "xyz", "<|plain|>"].contains { t.contains($0) } })
        XCTAssertEqual(t.encode("hi").first, 1)
    }

    /// Metaspace pre-tokenizer (prepend "first", no split), ByteFallback + Metaspace decoder.
    func testMistralV3Style() throws {
        // A leading space merges with the prepended "▁" and is stripped on decode.
        _ = try check("mistral-v3", lossless: { t in
            !t.hasPrefix(" ") && !["<s>", "</s>", "[INST]", "[/INST]", "<|tool|>", "<unk>", "xyz", "<|plain|>"].contains { t.contains($0) }
        })
    }
}

final class ConcurrencyTests: XCTestCase {
    /// One tokenizer shared by several threads (the word cache is shared): every thread gets
    /// the oracle's ids.
    func testConcurrentEncodesAgree() throws {
        let fixture = try loadFixture("trained-llama3.json")
        let tokenizer = try Tokenizer(tokenizerJSON: fixturesDirectory + "/" + XCTUnwrap(fixture.tokenizer_file))
        let corpus = String(try loadCorpus().unicodeScalars.prefix(try XCTUnwrap(fixture.corpus_length)))
        let results = LockedResults()
        DispatchQueue.concurrentPerform(iterations: 4) { i in
            let c = fixture.cases[i * 5 % fixture.cases.count]
            results.append(tokenizer.encode(corpus, addSpecialTokens: false) == fixture.corpus_ids
                           && tokenizer.encode(c.text, addSpecialTokens: false) == c.ids)
        }
        XCTAssertEqual(results.values, [true, true, true, true])
    }
}

final class LockedResults: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [Bool] = []
    func append(_ v: Bool) { lock.lock(); storage.append(v); lock.unlock() }
    var values: [Bool] { lock.lock(); defer { lock.unlock() }; return storage }
}
