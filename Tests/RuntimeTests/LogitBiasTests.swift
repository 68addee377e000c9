import Foundation
import Testing
@testable import Runtime

/// `logit_bias` and `min_tokens` in the CPU sampler, the GPU's draw tables and the float64
/// oracle of the GPU sampler.
@Suite struct LogitBiasTests {
    /// 512 logits spread over [-4, 4] (a fixed pattern), with their least and most likely ids.
    static let logits: [Float] = (0..<512).map { Float(($0 * 197) % 512) / 64 - 4 }
    static let least = logits.indices.min { logits[$0] < logits[$1] }!
    static let most = logits.indices.max { logits[$0] < logits[$1] }!

    static func draws(_ parameters: SamplingParameters, count: Int = 2000) throws -> [Int: Int] {
        var sampler = try Sampler(parameters: parameters)
        var counts: [Int: Int] = [:]
        for _ in 0..<count { counts[sampler.sample(logits: logits).id, default: 0] += 1 }
        return counts
    }

    @Test func plus100ForcesTheToken() throws {
        // Unbiased, the least likely id (probability about e^-8 / 512 of the top) is never drawn.
        let plain = try Self.draws(SamplingParameters(temperature: 1, seed: 3))
        #expect(plain[Self.least] == nil)
        let forced = try Self.draws(SamplingParameters(temperature: 1, seed: 3, logitBias: [Self.least: 100]))
        #expect(forced == [Self.least: 2000], "a +100 bias must force id \(Self.least): drew \(forced.sorted { $0.key < $1.key }.prefix(5))")
        var greedy = try Sampler(parameters: SamplingParameters(temperature: 0, logitBias: [Self.least: 100]))
        #expect(greedy.sample(logits: Self.logits).id == Self.least)
    }

    @Test func minus100BansTheToken() throws {
        let plain = try Self.draws(SamplingParameters(temperature: 1, seed: 4))
        #expect((plain[Self.most] ?? 0) > 0, "the most likely id should be drawn without a bias")
        let banned = try Self.draws(SamplingParameters(temperature: 1, seed: 4, logitBias: [Self.most: -100]))
        #expect(banned[Self.most] == nil, "a -100 bias must ban id \(Self.most): drawn \(banned[Self.most] ?? 0) times")
        var greedy = try Sampler(parameters: SamplingParameters(temperature: 0, logitBias: [Self.most: -100]))
        let second = Self.logits.indices.filter { $0 != Self.most }.max { Self.logits[$0] < Self.logits[$1] }!
        #expect(greedy.sample(logits: Self.logits).id == second)
    }

    @Test func biasComesBeforePenaltiesAndShowsInLogprobs() throws {
        let x: [Float] = [1, 0.5, -2, 0]
        var sampler = try Sampler(parameters: SamplingParameters(temperature: 0, repetitionPenalty: 2, logprobs: 1, logitBias: [0: 3, 2: -1]))
        sampler.acceptPrompt([0, 2])
        // Bias then repetition: (1 + 3) / 2 and (-2 - 1) * 2.
        #expect(sampler.penalized(x) == [2, 0.5, -6, 0])
        let picked = sampler.sample(logits: x)
        let z = [2.0, 0.5, -6, 0].reduce(0) { $0 + exp($1) }
        #expect(picked.id == 0)
        #expect(abs(Double(picked.logprob!) - (2 - log(z))) < 1e-5)
    }

    @Test func minTokensHoldsBackEveryStopId() throws {
        // Id 1 (end of sequence) and id 3 (a stop token) lead; two tokens must come first.
        let x: [Float] = [0, 5, 1, 4]
        var sampler = try Sampler(parameters: SamplingParameters(temperature: 0, stopTokenIds: [3], minTokens: 2), eosTokenIds: [1])
        var picks: [Int] = []
        for _ in 0..<3 {
            let id = sampler.sample(logits: x).id
            picks.append(id)
            sampler.accept(id)
        }
        #expect(picks == [2, 2, 1])
        // ignore_eos leaves the end-of-sequence id alone; the stop token is still held back.
        var ignoring = try Sampler(parameters: SamplingParameters(temperature: 0, stopTokenIds: [3], ignoreEOS: true, logitBias: [1: -10],
                                                                  minTokens: 1), eosTokenIds: [1])
        #expect(ignoring.sample(logits: x).id == 2)
        #expect(ignoring.biases == [LogitBias(id: 1, value: -10), LogitBias(id: 3, value: -.infinity)])
        ignoring.accept(2)
        #expect(ignoring.biases == [LogitBias(id: 1, value: -10)])
        #expect(ignoring.sample(logits: x).id == 3)
    }

    @Test func validationNamesTheField() throws {
        func field(_ p: SamplingParameters) -> String? {
            do { try p.validate(); return nil } catch let error as SamplingParameterError { return error.field } catch { return "?" }
        }
        #expect(field(SamplingParameters(logitBias: [5: 100, 6: -100])) == nil)
        #expect(field(SamplingParameters(logitBias: [5: 100.5])) == "logit_bias")
        #expect(field(SamplingParameters(logitBias: [-1: 1])) == "logit_bias")
        #expect(field(SamplingParameters(logitBias: [2: .nan])) == "logit_bias")
        #expect(field(SamplingParameters(minTokens: -1)) == "min_tokens")
        #expect(field(SamplingParameters(maxTokens: 4, minTokens: 5)) == "min_tokens")

        let decoded = try JSONDecoder().decode(SamplingParameters.self, from: Data(#"{"logit_bias": {"7": -50, "12": 2.5}, "min_tokens": 3}"#.utf8))
        #expect(decoded.logitBias == [7: -50, 12: 2.5])
        #expect(decoded.minTokens == 3)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(SamplingParameters.self, from: Data(#"{"logit_bias": {"x": 1}}"#.utf8)) }
        let roundTrip = try JSONDecoder().decode(SamplingParameters.self, from: JSONEncoder().encode(decoded))
        #expect(roundTrip == decoded)
    }

    @Test func deviceDrawCarriesBiasesAfterThePenaltyPairs() throws {
        var sampler = try Sampler(parameters: SamplingParameters(temperature: 0.7, repetitionPenalty: 1.1, seed: 9, logitBias: [4: 2.5],
                                                                 minTokens: 1), eosTokenIds: [0])
        sampler.acceptPrompt([6])
        let draw = sampler.deviceDraw()
        #expect(draw.biases == [LogitBias(id: 0, value: -.infinity), LogitBias(id: 4, value: 2.5)])
        let other = DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0, penalties: [SIMD2(1, 1)], biases: [LogitBias(id: 2, value: -1)])
        let (rows, pairs) = DeviceDraw.pack([draw, other])
        #expect(pairs == [6, 0, 0, Int32(bitPattern: (-Float.infinity).bitPattern), 4, Int32(bitPattern: Float(2.5).bitPattern),
                          1, 1, 2, Int32(bitPattern: Float(-1).bitPattern)])
        rows.withUnsafeBytes { raw in
            func i(_ row: Int, _ field: Int) -> Int32 { raw.loadUnaligned(fromByteOffset: row * DeviceDraw.rowBytes + 4 * field, as: Int32.self) }
            #expect([i(0, 9), i(0, 10), i(0, 11)] == [0, 1, 2])   // pairs from 0: one penalty, two biases
            #expect([i(1, 9), i(1, 10), i(1, 11)] == [3, 1, 1])
        }
    }

    /// Greedy (where both are deterministic; their draws walk candidates in different orders).
    @Test func referenceAppliesBiasesAsTheSamplerDoes() throws {
        for boost in stride(from: 0.0, through: 10, by: 1.25) {
            let parameters = SamplingParameters(temperature: 0, repetitionPenalty: 1.3, logprobs: 3,
                                                logitBias: [Self.least: boost, Self.most: -boost, 100: 1.5], minTokens: 1)
            var sampler = try Sampler(parameters: parameters, eosTokenIds: [200])
            sampler.acceptPrompt([Self.least, 7])
            let draw = sampler.deviceDraw()
            let expected = sampler.sample(logits: Self.logits)
            let reference = SamplingReference.sample(logits: Self.logits, vocabularyLimit: Self.logits.count, draw: draw)
            #expect(reference.token.id == expected.id, "bias \(boost)")
            #expect(abs(reference.token.logprob! - expected.logprob!) < 1e-4)
            #expect(reference.token.alternatives.map(\.id) == expected.alternatives.map(\.id))
        }
    }
}
