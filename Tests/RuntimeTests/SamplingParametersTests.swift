import Foundation
import VTensor
import XCTest
@testable import Runtime

final class SamplingParametersTests: XCTestCase {
    func testDefaultsAreValidAndNeutral() throws {
        let p = SamplingParameters()
        try p.validate()
        XCTAssertEqual(p.temperature, 1)
        XCTAssertFalse(p.isGreedy)
        XCTAssertTrue(SamplingParameters(temperature: 0).isGreedy)
        XCTAssertTrue(SamplingParameters(temperature: 1e-6).isGreedy)
    }

    func testOutOfRangeValuesNameTheField() {
        let bad: [(SamplingParameters, String)] = [
            (SamplingParameters(temperature: -0.1), "temperature"),
            (SamplingParameters(temperature: .nan), "temperature"),
            (SamplingParameters(temperature: .infinity), "temperature"),
            (SamplingParameters(topK: -2), "top_k"),
            (SamplingParameters(topP: 0), "top_p"),
            (SamplingParameters(topP: 1.5), "top_p"),
            (SamplingParameters(topP: -0.2), "top_p"),
            (SamplingParameters(minP: -0.01), "min_p"),
            (SamplingParameters(minP: 1.01), "min_p"),
            (SamplingParameters(repetitionPenalty: 0), "repetition_penalty"),
            (SamplingParameters(repetitionPenalty: -1), "repetition_penalty"),
            (SamplingParameters(presencePenalty: 2.5), "presence_penalty"),
            (SamplingParameters(frequencyPenalty: -3), "frequency_penalty"),
            (SamplingParameters(maxTokens: 0), "max_tokens"),
            (SamplingParameters(stopTokenIds: [3, -1]), "stop_token_ids"),
            (SamplingParameters(stopStrings: ["ok", ""]), "stop"),
            (SamplingParameters(logprobs: 21), "logprobs"),
            (SamplingParameters(logprobs: -1), "logprobs"),
        ]
        for (parameters, field) in bad {
            XCTAssertThrowsError(try parameters.validate(), field) { error in
                guard let error = error as? SamplingParameterError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.field, field)
                XCTAssertTrue(error.description.contains(field), error.description)
            }
            XCTAssertThrowsError(try Sampler(parameters: parameters), "Sampler must validate \(field)")
        }
        let edges = [SamplingParameters(topK: -1), SamplingParameters(topK: 0), SamplingParameters(topP: 1),
                     SamplingParameters(minP: 0), SamplingParameters(minP: 1), SamplingParameters(logprobs: 0),
                     SamplingParameters(logprobs: 20), SamplingParameters(presencePenalty: -2, frequencyPenalty: 2)]
        for p in edges { XCTAssertNoThrow(try p.validate(), "\(p)") }
    }

    func testErrorMessagesAreReadable() {
        XCTAssertThrowsError(try SamplingParameters(topP: 1.5).validate()) { error in
            XCTAssertEqual("\(error)", "invalid sampling parameter top_p: must be in (0, 1], got 1.5")
        }
    }

    func testDecodesOpenAIAndVLLMFieldNames() throws {
        let json = """
            {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "repetition_penalty": 1.1,
             "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": -3, "max_tokens": 16,
             "stop": "###", "stop_token_ids": [7, 8], "ignore_eos": true, "logprobs": 5, "model": "x"}
            """
        let p = try JSONDecoder().decode(SamplingParameters.self, from: Data(json.utf8))
        XCTAssertEqual(p, SamplingParameters(temperature: 0.7, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.1,
                                             presencePenalty: 0.5, frequencyPenalty: -0.5, seed: -3, maxTokens: 16,
                                             stopTokenIds: [7, 8], stopStrings: ["###"], ignoreEOS: true, logprobs: 5))
        let list = try JSONDecoder().decode(SamplingParameters.self, from: Data(#"{"stop": ["a", "b"]}"#.utf8))
        XCTAssertEqual(list.stopStrings, ["a", "b"])
        XCTAssertEqual(list, SamplingParameters(stopStrings: ["a", "b"]))
    }

    func testChatLogprobsForm() throws {
        func decode(_ s: String) throws -> Int? {
            try JSONDecoder().decode(SamplingParameters.self, from: Data(s.utf8)).logprobs
        }
        XCTAssertEqual(try decode(#"{"logprobs": true, "top_logprobs": 3}"#), 3)
        XCTAssertEqual(try decode(#"{"logprobs": true}"#), 0)
        XCTAssertEqual(try decode(#"{"logprobs": false, "top_logprobs": 3}"#), nil)
        XCTAssertEqual(try decode(#"{"logprobs": null}"#), nil)
        XCTAssertEqual(try decode(#"{}"#), nil)
    }

    func testAbsentFieldsComeFromTheDefaultsInUserInfo() throws {
        let defaults = SamplingParameters(temperature: 0.6, topK: 20, topP: 0.95, repetitionPenalty: 1.05, maxTokens: 100)
        let decoder = JSONDecoder()
        decoder.userInfo[SamplingParameters.defaultsKey] = defaults
        let p = try decoder.decode(SamplingParameters.self, from: Data(#"{"temperature": 0, "top_p": null}"#.utf8))
        XCTAssertEqual(p.temperature, 0)  // given
        XCTAssertEqual(p.topP, 0.95)      // null: the default
        XCTAssertEqual(p.topK, 20)
        XCTAssertEqual(p.repetitionPenalty, 1.05)
        XCTAssertEqual(p.maxTokens, 100)
    }

    func testEncodingRoundTrips() throws {
        let p = SamplingParameters(temperature: 0.3, topK: 5, topP: 0.8, minP: 0.1, seed: 9, maxTokens: 4,
                                   stopTokenIds: [1], stopStrings: ["x", "yz"], ignoreEOS: true, logprobs: 2)
        let data = try JSONEncoder().encode(p)
        XCTAssertEqual(try JSONDecoder().decode(SamplingParameters.self, from: data), p)
        let object = try JSONSerialization.jsonObject(with: data) as! [String: Any]
        XCTAssertEqual(object["top_k"] as? Int, 5)
        XCTAssertEqual(object["stop"] as? [String], ["x", "yz"])
    }

    func testStopTokens() {
        XCTAssertEqual(SamplingParameters(stopTokenIds: [5]).stopTokens(eosTokenIds: [2, 3]), [2, 3, 5])
        XCTAssertEqual(SamplingParameters(stopTokenIds: [5], ignoreEOS: true).stopTokens(eosTokenIds: [2]), [5])
    }
}

final class RandomSourceTests: XCTestCase {
    /// Reference values from an independent Python transcription of the published algorithms.
    func testSplitMix64MatchesReference() {
        var g = SplitMix64(seed: 0)
        XCTAssertEqual([g.next(), g.next(), g.next()], [0xE220_A839_7B1D_CDAF, 0x6E78_9E6A_A1B9_65F4, 0x06C4_5D18_8009_454F])
    }

    func testXoshiro256StarStarMatchesReference() {
        var g = Xoshiro256StarStar(seed: 42)
        XCTAssertEqual((0..<4).map { _ in g.next() },
                       [0x1578_0B2E_0C2E_C716, 0x6104_D986_6D11_3A7E, 0xAE17_5332_39E4_99A1, 0xECB8_AD47_03B3_60A1])
        var h = Xoshiro256StarStar(seed: UInt64.max)
        XCTAssertEqual([h.next(), h.next()], [0x8F55_20D5_2A7E_AD08, 0xC476_A018_CAA1_802D])
    }

    func testUnitIntervalAndMean() {
        var g = Xoshiro256StarStar(seed: 7)
        var sum = 0.0
        let n = 100_000
        for _ in 0..<n {
            let u = g.nextUnit()
            XCTAssertTrue(u >= 0 && u < 1)
            sum += u
        }
        // The mean of n uniforms has standard deviation sqrt(1/12/n), about 0.0009 here.
        XCTAssertEqual(sum / Double(n), 0.5, accuracy: 0.005)
    }

    func testUnseededGeneratorsDiffer() {
        var a = Xoshiro256StarStar(), b = Xoshiro256StarStar()
        XCTAssertNotEqual([a.next(), a.next()], [b.next(), b.next()])
    }
}

final class VectorMathTests: XCTestCase {
    func testExpIsAccurate() {
        var worst = 0.0
        var x: Float = -87
        while x <= 10 {
            let vector = VectorMath.exp(VectorMath.Vector(repeating: x))[3]
            let scalar = VectorMath.exp(x)
            let truth = Foundation.exp(Double(x))
            worst = max(worst, abs(Double(vector) - truth) / truth)
            XCTAssertEqual(vector, scalar, "vector and scalar forms differ at \(x)")
            x += 0.0137
        }
        XCTAssertLessThan(worst, 5e-7)
        XCTAssertEqual(VectorMath.exp(-Float.infinity), 0)
        XCTAssertEqual(VectorMath.exp(VectorMath.Vector(repeating: -.infinity)).max(), 0)
        XCTAssertEqual(VectorMath.exp(-90), 0)
        XCTAssertEqual(VectorMath.exp(0), 1)
    }

    func testExpSumStoresTermsAndBlockSums() {
        let n = 2500  // two full blocks and a ragged tail
        let x = (0..<n).map { Float(($0 * 37) % 101) * -0.1 }
        let reference = x.map { Foundation.exp((Double($0) + 1) * 0.5) }
        for vector in [false, true] {
            var out = [Float](repeating: 0, count: n)
            var blocks: [Double] = []
            let total = x.withUnsafeBufferPointer { xs in
                out.withUnsafeMutableBufferPointer { o in
                    vector ? VectorMath.expSumVector(xs, shift: -1, scale: 0.5, into: o, blockSums: &blocks)
                           : VectorMath.expSumScalar(xs, shift: -1, scale: 0.5, into: o, blockSums: &blocks)
                }
            }
            XCTAssertEqual(total, reference.reduce(0, +), accuracy: 1e-5 * total)
            XCTAssertEqual(blocks.count, 3)
            XCTAssertEqual(blocks.reduce(0, +), total, accuracy: 1e-9 * total)
            XCTAssertEqual(blocks[2], reference[2048...].reduce(0, +), accuracy: 1e-5 * blocks[2])
            for i in 0..<n { XCTAssertEqual(Double(out[i]), reference[i], accuracy: 1e-6 * reference[i]) }
            var none: [Double] = []
            let sumOnly = x.withUnsafeBufferPointer {
                vector ? VectorMath.expSumVector($0, shift: -1, scale: 0.5, into: nil, blockSums: &none)
                       : VectorMath.expSumScalar($0, shift: -1, scale: 0.5, into: nil, blockSums: &none)
            }
            XCTAssertEqual(sumOnly, total, accuracy: 1e-9 * total)
        }
    }

    func testSanitizedCopyAndArgmax() {
        var source = [Float](repeating: 1, count: 40)
        source[3] = .nan
        source[17] = .infinity
        source[30] = .infinity
        source[39] = .nan
        for vector in [false, true] {
            var out = [Float](repeating: 0, count: 40)
            source.withUnsafeBufferPointer { s in
                out.withUnsafeMutableBufferPointer {
                    vector ? VectorMath.sanitizedCopyVector(s, into: $0) : VectorMath.sanitizedCopyScalar(s, into: $0)
                }
            }
            XCTAssertEqual(out[3], -.infinity)
            XCTAssertEqual(out[39], -.infinity)
            XCTAssertEqual(out[17], .greatestFiniteMagnitude)
            XCTAssertEqual(out[0], 1)
            let (index, value) = out.withUnsafeBufferPointer { vector ? VectorMath.argmaxVector($0) : VectorMath.argmaxScalar($0) }
            XCTAssertEqual(index, 17)  // the first of two equal maxima
            XCTAssertEqual(value, .greatestFiniteMagnitude)
        }
        // Ragged lengths and a maximum in the tail.
        for n in [1, 15, 16, 17, 33] {
            var x = (0..<n).map { Float($0 % 5) }
            x[n - 1] = 9
            for f in [VectorMath.argmaxVector, VectorMath.argmaxScalar] {
                XCTAssertEqual(x.withUnsafeBufferPointer { f($0) }.index, n - 1)
            }
        }
    }
}
