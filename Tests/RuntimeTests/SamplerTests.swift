import Foundation
import XCTest
@testable import Runtime

/// Log-softmax in double, the reference for reported logprobs.
private func logSoftmax(_ x: [Float]) -> [Double] {
    let m = Double(x.max()!)
    let z = x.reduce(0.0) { $0 + exp(Double($1) - m) }
    return x.map { Double($0) - m - log(z) }
}

/// Softmax of `x / temperature` restricted to `keep`, in double.
private func probabilities(_ x: [Float], temperature: Double = 1, keep: Set<Int>) -> [Int: Double] {
    let m = keep.map { Double(x[$0]) }.max()!
    var p: [Int: Double] = [:]
    for i in keep { p[i] = exp((Double(x[i]) - m) / temperature) }
    let z = p.values.reduce(0, +)
    return p.mapValues { $0 / z }
}

private func logits(probabilities p: [Double]) -> [Float] { p.map { Float(log($0)) } }

final class SamplerTests: XCTestCase {
    /// Draws `n` tokens; checks every drawn id is in `expected` and that each id's count is within
    /// five standard deviations of n * p (a fixed seed makes the check deterministic; a correct
    /// sampler would fail it with probability below 1e-6 per id for a fresh seed).
    private func assertDistribution(_ parameters: SamplingParameters, logits: [Float], vocabularyLimit: Int? = nil,
                                    expected: [Int: Double], draws n: Int = 20_000,
                                    file: StaticString = #filePath, line: UInt = #line) throws {
        var sampler = try Sampler(parameters: parameters)
        var counts: [Int: Int] = [:]
        for _ in 0..<n { counts[sampler.sample(logits: logits, vocabularyLimit: vocabularyLimit).id, default: 0] += 1 }
        let outside = Set(counts.keys).subtracting(expected.keys)
        XCTAssertTrue(outside.isEmpty, "drew ids outside the allowed set: \(outside.sorted())", file: file, line: line)
        for (id, p) in expected {
            let mean = Double(n) * p, sd = (Double(n) * p * (1 - p)).squareRoot()
            let count = Double(counts[id] ?? 0)
            XCTAssertLessThanOrEqual(abs(count - mean), 5 * sd + 1,
                                     "id \(id): drew \(Int(count)) times, expected about \(Int(mean))", file: file, line: line)
            if p > 10 / Double(n) { XCTAssertGreaterThan(count, 0, "id \(id) never drawn", file: file, line: line) }
        }
    }

    // MARK: - Greedy and logprobs

    func testGreedyPicksArgmaxLowestIdOnTies() throws {
        var s = try Sampler(parameters: SamplingParameters(temperature: 0, topK: 1, seed: 5))
        XCTAssertEqual(s.sample(logits: [0.1, 3, -1, 2.9]).id, 1)
        XCTAssertEqual(s.sample(logits: [1, 5, 5, 2]).id, 1)
        XCTAssertEqual(s.sample(logits: [-3, -2, -1, -1]).id, 2)
        var big = [Float](repeating: 0, count: 150_000)
        big[123_456] = 1
        XCTAssertEqual(s.sample(logits: big).id, 123_456)
    }

    func testLogprobsAreLogSoftmaxOfPenalizedLogitsBeforeTemperature() throws {
        let x: [Float] = (0..<20).map { Float(($0 * 7) % 11) * 0.37 - 1.5 }
        let reference = logSoftmax(x)
        for temperature in [0.0, 0.5, 1.0, 2.0] {
            var s = try Sampler(parameters: SamplingParameters(temperature: temperature, topK: 3, topP: 0.9, seed: 1,
                                                               logprobs: 20))
            let token = s.sample(logits: x)
            XCTAssertEqual(Double(try XCTUnwrap(token.logprob)), reference[token.id], accuracy: 1e-5)
            XCTAssertEqual(token.alternatives.count, 20)
            // Every id is listed: the probabilities sum to one.
            XCTAssertEqual(token.alternatives.reduce(0.0) { $0 + exp(Double($1.logprob)) }, 1, accuracy: 1e-5)
            XCTAssertEqual(Set(token.alternatives.map(\.id)), Set(0..<20))
            for a in token.alternatives { XCTAssertEqual(Double(a.logprob), reference[a.id], accuracy: 1e-5) }
            // Most likely first, ties by lower id.
            for (a, b) in zip(token.alternatives, token.alternatives.dropFirst()) {
                XCTAssertTrue(a.logprob > b.logprob || (a.logprob == b.logprob && a.id < b.id), "\(a) before \(b)")
            }
        }
    }

    func testLogprobsOverALargeVocabularySumToOne() throws {
        var g = Xoshiro256StarStar(seed: 3)
        let x = (0..<131_072).map { _ in Float(g.nextUnit() * 12 - 6) }
        let reference = logSoftmax(x)
        var s = try Sampler(parameters: SamplingParameters(temperature: 0.8, seed: 2, logprobs: 5))
        let token = s.sample(logits: x)
        XCTAssertEqual(Double(try XCTUnwrap(token.logprob)), reference[token.id], accuracy: 1e-4)
        let top = reference.indices.sorted { reference[$0] > reference[$1] }.prefix(5)
        XCTAssertEqual(token.alternatives.map(\.id), Array(top))
        XCTAssertEqual(reference.reduce(0.0) { $0 + exp($1) }, 1, accuracy: 1e-9)
    }

    func testLogprobsOnlyWhenAsked() throws {
        for temperature in [0.0, 1.0, 0.5] {
            var s = try Sampler(parameters: SamplingParameters(temperature: temperature, seed: 1))
            XCTAssertEqual(s.sample(logits: [1, 2, 3]).alternatives, [])
            XCTAssertNil(s.sample(logits: [1, 2, 3]).logprob)
            var zero = try Sampler(parameters: SamplingParameters(temperature: temperature, seed: 1, logprobs: 0))
            let token = zero.sample(logits: [1, 2, 3])
            XCTAssertEqual(token.alternatives, [])
            XCTAssertEqual(Double(try XCTUnwrap(token.logprob)), logSoftmax([1, 2, 3])[token.id], accuracy: 1e-6)
        }
    }

    // MARK: - Penalties

    func testRepetitionPenaltyDividesPositiveAndMultipliesNegative() throws {
        var s = try Sampler(parameters: SamplingParameters(repetitionPenalty: 2))
        s.acceptPrompt([0, 1, 1])
        s.accept(2)
        s.accept(2)
        let x: [Float] = [3, -3, 0.5, 4, -1]
        XCTAssertEqual(s.penalized(x), [1.5, -6, 0.25, 4, -1])  // each seen id once, whatever its count
    }

    /// Without a penalty nothing is kept per id (a long prompt's ids are not hashed); with a
    /// presence or frequency penalty only the generated ids are, with their counts.
    func testIdsAreKeptOnlyForAPenaltyThatReadsThem() throws {
        var plain = try Sampler(parameters: SamplingParameters(temperature: 0.7))
        plain.acceptPrompt(Array(0..<2000))
        plain.accept(5)
        XCTAssertEqual(plain.penalizedIds, [])
        XCTAssertEqual(plain.generatedCount(of: 5), 0)
        XCTAssertEqual(plain.generated, 1)
        XCTAssertEqual(plain.deviceDraw().penalties, [])
        var presence = try Sampler(parameters: SamplingParameters(presencePenalty: 0.5))
        presence.acceptPrompt([1, 2, 3])
        presence.accept(7)
        presence.accept(7)
        presence.accept(2)
        XCTAssertEqual(presence.penalizedIds, [2, 7])
        XCTAssertEqual(presence.deviceDraw().penalties, [SIMD2(2, 1), SIMD2(7, 2)])
        XCTAssertEqual(presence.penalized([1, 1, 1, 1, 1, 1, 1, 1]), [1, 1, 0.5, 1, 1, 1, 1, 0.5])
    }

    func testPresenceAndFrequencyCountGeneratedTokensOnly() throws {
        var s = try Sampler(parameters: SamplingParameters(presencePenalty: 0.5, frequencyPenalty: 0.25))
        s.acceptPrompt([0, 3])
        s.accept(1)
        s.accept(1)
        s.accept(1)
        s.accept(2)
        XCTAssertEqual(s.generatedCount(of: 1), 3)
        XCTAssertEqual(s.generatedCount(of: 0), 0)
        // id 1: 2 - 0.5 - 3 * 0.25; id 2: 2 - 0.5 - 0.25; prompt ids 0 and 3 untouched.
        XCTAssertEqual(s.penalized([2, 2, 2, 2]), [2, 0.75, 1.25, 2])
    }

    func testPenaltiesCombineRepetitionFirst() throws {
        var s = try Sampler(parameters: SamplingParameters(repetitionPenalty: 1.5, presencePenalty: 1, frequencyPenalty: -0.5))
        s.accept(0)
        s.accept(0)
        // (3 / 1.5) - 1 + 0.5 * 2 = 2; (-3 * 1.5) untouched by counts for id 1 (not generated).
        s.acceptPrompt([1])
        XCTAssertEqual(s.penalized([3, -3, 1]), [2, -4.5, 1])
    }

    func testPenaltiesSteerGreedyDecoding() throws {
        var s = try Sampler(parameters: SamplingParameters(temperature: 0, frequencyPenalty: 1))
        let x: [Float] = [2, 1.5, 0]
        XCTAssertEqual(s.sample(logits: x).id, 0)
        s.accept(0)
        XCTAssertEqual(s.sample(logits: x).id, 1)  // 2 - 1 < 1.5
        s.accept(1)
        XCTAssertEqual(s.sample(logits: x).id, 0)  // 1 vs 0.5
    }

    func testPenaltyIdsBeyondTheVocabularyAreIgnored() throws {
        var s = try Sampler(parameters: SamplingParameters(repetitionPenalty: 2, presencePenalty: 1))
        s.acceptPrompt([100])
        s.accept(50)
        XCTAssertEqual(s.penalized([1, 1]), [1, 1])
    }

    // MARK: - Truncation: exact sets

    /// p = [0.5, 0.3, 0.15, 0.05]
    private let four = logits(probabilities: [0.5, 0.3, 0.15, 0.05])

    func testTopKKeepsExactlyTheKMostLikely() throws {
        try assertDistribution(SamplingParameters(topK: 2, seed: 11), logits: four,
                               expected: probabilities(four, keep: [0, 1]))
        try assertDistribution(SamplingParameters(topK: 3, seed: 12), logits: four,
                               expected: probabilities(four, keep: [0, 1, 2]))
        // 0 and -1 are off; k >= vocabulary keeps everything.
        for k in [0, -1, 4, 100] {
            try assertDistribution(SamplingParameters(topK: k, seed: 13), logits: four,
                                   expected: probabilities(four, keep: [0, 1, 2, 3]))
        }
    }

    func testTopPKeepsTheShortestHeadReachingP() throws {
        let cases: [(Double, Set<Int>)] = [(0.45, [0]), (0.75, [0, 1]), (0.9, [0, 1, 2]), (0.99, [0, 1, 2, 3])]
        for (p, keep) in cases {
            try assertDistribution(SamplingParameters(topP: p, seed: 21), logits: four,
                                   expected: probabilities(four, keep: keep))
        }
    }

    func testTopPAppliesAfterTemperature() throws {
        // At T = 0.5 the probabilities are proportional to p^2: [0.685, 0.247, 0.062, 0.007], so
        // top_p 0.9 keeps two ids, where at T = 1 it keeps three.
        try assertDistribution(SamplingParameters(temperature: 0.5, topP: 0.9, seed: 22), logits: four,
                               expected: probabilities(four, temperature: 0.5, keep: [0, 1]))
    }

    func testTopPAppliesAfterTopK() throws {
        // Within the top 3 (renormalized: 0.526, 0.316, 0.158), top_p 0.8 keeps two ids.
        try assertDistribution(SamplingParameters(topK: 3, topP: 0.8, seed: 23), logits: four,
                               expected: probabilities(four, keep: [0, 1]))
        // Without top-k, 0.8 of the full distribution needs a third id (mass before it: 0.8, not below).
        try assertDistribution(SamplingParameters(topP: 0.81, seed: 24), logits: four,
                               expected: probabilities(four, keep: [0, 1, 2]))
    }

    func testMinPKeepsIdsAboveAFractionOfTheMostLikely() throws {
        try assertDistribution(SamplingParameters(minP: 0.25, seed: 31), logits: four,
                               expected: probabilities(four, keep: [0, 1, 2]))
        try assertDistribution(SamplingParameters(minP: 0.5, seed: 32), logits: four,
                               expected: probabilities(four, keep: [0, 1]))
        try assertDistribution(SamplingParameters(minP: 1, seed: 33), logits: four,
                               expected: probabilities(four, keep: [0]))
        // After temperature 2 the ratios are sqrt: 0.15/0.5 -> 0.548, 0.05/0.5 -> 0.316.
        try assertDistribution(SamplingParameters(temperature: 2, minP: 0.4, seed: 34), logits: four,
                               expected: probabilities(four, temperature: 2, keep: [0, 1, 2]))
    }

    func testTemperatureShapesTheDistribution() throws {
        for t in [0.5, 1.0, 2.5] {
            try assertDistribution(SamplingParameters(temperature: t, seed: 41), logits: four,
                                   expected: probabilities(four, temperature: t, keep: [0, 1, 2, 3]))
        }
    }

    func testMaskedIdsAreNeverDrawn() throws {
        let x: [Float] = [0, -.infinity, 1, .nan, 0.5]
        try assertDistribution(SamplingParameters(seed: 51), logits: x,
                               expected: probabilities([0, -1000, 1, -1000, 0.5], keep: [0, 2, 4]))
    }

    func testNoFiniteLogitGivesIdZero() throws {
        var s = try Sampler(parameters: SamplingParameters(seed: 1, logprobs: 2))
        let token = s.sample(logits: [-.infinity, .nan, -.infinity])
        XCTAssertEqual(token.id, 0)
        XCTAssertEqual(token.logprob, -.infinity)
        var quiet = try Sampler(parameters: SamplingParameters(temperature: 0))
        XCTAssertEqual(quiet.sample(logits: [.nan, .nan]), SampledToken(id: 0))
    }

    // MARK: - Vocabulary limit

    func testIdsAtOrAboveTheVocabularyLimitAreNeverDrawnNorReported() throws {
        var x = [Float](repeating: 0, count: 10)
        x[8] = 50  // padding rows of the embedding table with large logits
        x[9] = 60
        x[2] = 1
        try assertDistribution(SamplingParameters(seed: 61), logits: x, vocabularyLimit: 8,
                               expected: probabilities(Array(x.prefix(8)), keep: Set(0..<8)))
        var greedy = try Sampler(parameters: SamplingParameters(temperature: 0, logprobs: 20))
        let token = greedy.sample(logits: x, vocabularyLimit: 8)
        XCTAssertEqual(token.id, 2)
        XCTAssertEqual(token.alternatives.count, 8)
        XCTAssertTrue(token.alternatives.allSatisfy { $0.id < 8 })
        XCTAssertEqual(token.alternatives.reduce(0.0) { $0 + exp(Double($1.logprob)) }, 1, accuracy: 1e-5)
        // A limit above the logits' count is the count.
        XCTAssertEqual(greedy.sample(logits: x, vocabularyLimit: 1000).id, 9)
    }

    // MARK: - Seeds

    func testSameSeedSameSequenceDifferentSeedDifferent() throws {
        var g = Xoshiro256StarStar(seed: 99)
        let x = (0..<5000).map { _ in Float(g.nextUnit() * 4) }
        func run(_ seed: Int?, _ p: SamplingParameters) throws -> [Int] {
            var parameters = p
            parameters.seed = seed
            var s = try Sampler(parameters: parameters)
            return (0..<64).map { _ in
                let id = s.sample(logits: x).id
                s.accept(id)
                return id
            }
        }
        let shapes = [SamplingParameters(), SamplingParameters(temperature: 0.7, topK: 50),
                      SamplingParameters(temperature: 1.3, topP: 0.9, minP: 0.01, repetitionPenalty: 1.2)]
        for p in shapes {
            XCTAssertEqual(try run(1234, p), try run(1234, p))
            XCTAssertNotEqual(try run(1234, p), try run(1235, p))
            XCTAssertNotEqual(try run(nil, p), try run(nil, p))
        }
        // Negative seeds are valid (OpenAI allows any integer).
        XCTAssertEqual(try run(-7, SamplingParameters()), try run(-7, SamplingParameters()))
    }

    // MARK: - Large vocabularies (the fast paths)

    func testFullVocabularyDrawAcrossBlocks() throws {
        // Two hot ids in different 1024-id blocks and 2998 cold ones, over three blocks (the
        // last one ragged); temperature 1 reuses the log-softmax terms, 0.8 computes its own.
        var x = [Float](repeating: 0, count: 3000)
        x[1234] = 6
        x[2900] = 6
        for temperature in [1.0, 0.8] {
            let hot = exp(6 / temperature), z = 2 * hot + 2998
            var sampler = try Sampler(parameters: SamplingParameters(temperature: temperature, seed: 71))
            var counts: [Int: Int] = [:]
            let n = 3000
            for _ in 0..<n { counts[sampler.sample(logits: x).id, default: 0] += 1 }
            let cold = counts.filter { $0.key != 1234 && $0.key != 2900 }
            let observed = [(hot / z, counts[1234] ?? 0), (hot / z, counts[2900] ?? 0),
                            (2998 / z, cold.values.reduce(0, +))]
            for (p, count) in observed {
                let sd = (Double(n) * p * (1 - p)).squareRoot()
                XCTAssertLessThanOrEqual(abs(Double(count) - Double(n) * p), 5 * sd, "T \(temperature)")
            }
            for block in 0..<3 { XCTAssertTrue(cold.keys.contains { $0 / 1024 == block }, "no draw in block \(block)") }
        }
    }

    func testNucleusMatchesAFullSortOnLargeVocabularies() throws {
        var g = Xoshiro256StarStar(seed: 5)
        for trial in 0..<12 {
            let count = 3000 + trial * 701
            // Flat (many ids needed) and peaked (few) shapes, with ties and masked ids.
            let spread = trial % 2 == 0 ? 0.5 : 12.0
            var x = (0..<count).map { _ in Float((g.nextUnit() * spread * 8).rounded() / 8) }
            for i in stride(from: 3, to: count, by: 97) { x[i] = -.infinity }
            let invT: Float = trial % 3 == 0 ? 1 : 1 / 0.7
            let p = [0.3, 0.9, 0.95, 0.999][trial % 4]
            let maxLogit = x.max()!
            let w = x.map { VectorMath.exp(($0 - maxLogit) * invT) }

            // Every id, then a listed subset (every third id): short lists are sorted, long
            // ones (over Sampler.sortLimit) go by buckets.
            for subset in [nil, Array(stride(from: 0, to: count, by: 3)), Array(stride(from: 0, to: 900, by: 1))] {
                var scratch = Sampler.Scratch()
                if let subset { scratch.selection = subset.map(Int32.init) }
                let candidates = subset ?? Array(0..<count)
                let total = candidates.reduce(0.0) { $0 + Double(w[$1]) }
                x.withUnsafeBufferPointer { xs in
                    w.withUnsafeBufferPointer { ws in
                        Sampler.nucleus(allIds: subset == nil, topP: p, total: total, logits: xs, max: maxLogit,
                                        invT: invT, weights: ws, scratch: &scratch)
                    }
                }
                // Reference: sort everything, keep ids while the mass before them is below p.
                let order = candidates.sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }
                var reference: [Int] = []
                var cumulative = 0.0
                for i in order {
                    if !reference.isEmpty && cumulative >= p * total { break }
                    reference.append(i)
                    cumulative += Double(w[i])
                }
                let label = "trial \(trial), p \(p), \(subset.map { "\($0.count) listed" } ?? "all")"
                XCTAssertEqual(Set(scratch.selection.map(Int.init)).symmetricDifference(reference).sorted(), [], label)
                XCTAssertEqual(scratch.selection.count, reference.count, label)
            }
        }
    }

    func testTopPOnAFlatLargeVocabularyStaysInsideTheNucleus() throws {
        // Logits decreasing slowly with the id: the nucleus is a prefix of ids, much longer than
        // the head tried first, so the bucket path runs.
        let count = 4000
        let x = (0..<count).map { Float($0) * -0.001 }
        let w = x.map { exp(Double($0)) }
        let total = w.reduce(0, +)
        var cumulative = 0.0, cut = 0
        while cumulative < 0.75 * total {
            cumulative += w[cut]
            cut += 1
        }
        XCTAssertGreaterThan(cut, 1024)
        var s = try Sampler(parameters: SamplingParameters(topP: 0.75, seed: 81))
        var largest = 0
        for _ in 0..<600 { largest = max(largest, s.sample(logits: x).id) }
        XCTAssertLessThan(largest, cut)
        // Each draw lands in the nucleus' last 100 ids with probability about 0.036.
        XCTAssertGreaterThan(largest, cut - 100)
    }

    func testSelectTopMatchesASort() {
        var g = Xoshiro256StarStar(seed: 8)
        for trial in 0..<30 {
            let n = 1 + Int(g.next() % 6000)
            // Few distinct values: many ties; some -infinity.
            let x: [Float] = (0..<n).map { _ in
                let r = g.next() % 50
                return r == 0 ? -.infinity : Float(r % 17)
            }
            let k = 1 + Int(g.next() % UInt64(min(n, trial % 2 == 0 ? 40 : 3000)))
            var selection: [Int32] = []
            x.withUnsafeBufferPointer { Sampler.selectTop(k, of: $0, into: &selection) }
            let reference = x.indices.sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }.prefix(k)
            XCTAssertEqual(Set(selection.map(Int.init)).symmetricDifference(reference).sorted(), [], "n \(n), k \(k)")
            XCTAssertEqual(selection.count, k)
        }
    }

    func testTopKOnALargeVocabulary() throws {
        var g = Xoshiro256StarStar(seed: 9)
        let x = (0..<20_000).map { _ in Float(g.nextUnit() * 10) }
        let top = Set(x.indices.sorted { x[$0] > x[$1] }.prefix(40))
        var s = try Sampler(parameters: SamplingParameters(temperature: 1.5, topK: 40, seed: 91))
        var seen: Set<Int> = []
        for _ in 0..<300 { seen.insert(s.sample(logits: x).id) }
        XCTAssertTrue(seen.isSubset(of: top))
        XCTAssertGreaterThan(seen.count, 30)
    }
}
