import Foundation
import XCTest
@testable import Runtime
import VTensor

/// The host side of GPU sampling (`DeviceDraw`: the kernel's tables, the sampler's draws) and
/// its float64 oracle (`SamplingReference`) against the CPU `Sampler`.
final class DeviceDrawTests: XCTestCase {
    func testPackWritesTheKernelRecordLayout() {
        let a = DeviceDraw(parameters: SamplingParameters(temperature: 0.5, topK: 40, topP: 0.9, minP: 0.05, repetitionPenalty: 1.2,
                                                          presencePenalty: 0.5, frequencyPenalty: -0.25, logprobs: 30),
                           u: 0.25, penalties: [SIMD2(7, 0), SIMD2(9, 2)])
        let b = DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0, penalties: [SIMD2(3, 1)])
        let (rows, pairs) = DeviceDraw.pack([a, b])
        XCTAssertEqual(rows.count, 2 * DeviceDraw.rowBytes)
        XCTAssertEqual(pairs, [7, 0, 9, 2, 3, 1])
        rows.withUnsafeBytes { raw in
            func f(_ row: Int, _ field: Int) -> Float { Float(bitPattern: raw.loadUnaligned(fromByteOffset: row * 48 + 4 * field, as: UInt32.self)) }
            func i(_ row: Int, _ field: Int) -> Int32 { raw.loadUnaligned(fromByteOffset: row * 48 + 4 * field, as: Int32.self) }
            XCTAssertEqual(f(0, 0), 2)          // 1 / temperature
            XCTAssertEqual(i(0, 1), 40)
            XCTAssertEqual(f(0, 2), 0.9)
            XCTAssertEqual(f(0, 3), 0.05)
            XCTAssertEqual(f(0, 4), 1.2)
            XCTAssertEqual(f(0, 5), 0.5)
            XCTAssertEqual(f(0, 6), -0.25)
            XCTAssertEqual(f(0, 7), 0.25)
            XCTAssertEqual(i(0, 8), 20)         // logprobs capped at 20
            XCTAssertEqual(i(0, 9), 0)
            XCTAssertEqual(i(0, 10), 2)
            XCTAssertEqual(f(1, 0), 0)          // greedy
            XCTAssertEqual(i(1, 8), -1)         // no logprobs
            XCTAssertEqual(i(1, 9), 2)          // its pairs start after the first row's
            XCTAssertEqual(i(1, 10), 1)
        }
    }

    func testUnpackReadsTheResultRecord() {
        var raw = [UInt8](repeating: 0, count: 2 * DeviceDraw.outBytes)
        raw.withUnsafeMutableBytes { p in
            let at = DeviceDraw.outBytes
            p.storeBytes(of: Int32(42), toByteOffset: at, as: Int32.self)
            p.storeBytes(of: Float(-1.5).bitPattern, toByteOffset: at + 4, as: UInt32.self)
            p.storeBytes(of: Int32(2), toByteOffset: at + 8, as: Int32.self)
            p.storeBytes(of: Int32(42), toByteOffset: at + 16, as: Int32.self)
            p.storeBytes(of: Int32(5), toByteOffset: at + 20, as: Int32.self)
            p.storeBytes(of: Float(-1.5).bitPattern, toByteOffset: at + 16 + 80, as: UInt32.self)
            p.storeBytes(of: Float(-2).bitPattern, toByteOffset: at + 20 + 80, as: UInt32.self)
        }
        let token = raw.withUnsafeBytes { DeviceDraw.unpack($0, row: 1, wantsLogprobs: true) }
        XCTAssertEqual(token, SampledToken(id: 42, logprob: -1.5, alternatives: [TokenLogprob(id: 42, logprob: -1.5), TokenLogprob(id: 5, logprob: -2)]))
    }

    func testFloatUnitStaysBelowOne() {
        XCTAssertLessThan(DeviceDraw.floatUnit(1 - 0x1.0p-53), 1)
        XCTAssertEqual(DeviceDraw.floatUnit(0.5), 0.5)
        XCTAssertLessThanOrEqual(Double(DeviceDraw.floatUnit(0.1)), 0.1)
    }

    func testDeviceDrawsTakeTheSeededSamplersUniforms() throws {
        var sampler = try Sampler(parameters: SamplingParameters(temperature: 0.8, seed: 99))
        var generator = Xoshiro256StarStar(seed: UInt64(99))
        for _ in 0..<5 { XCTAssertEqual(sampler.deviceDraw().u, DeviceDraw.floatUnit(generator.nextUnit())) }
        var greedy = try Sampler(parameters: SamplingParameters(temperature: 0, seed: 99))
        XCTAssertEqual(greedy.deviceDraw().u, 0)
        XCTAssertEqual(greedy.deviceDraw().penalties, [])
    }

    func testDeviceDrawsCarryEverySeenIdWithItsCount() throws {
        var sampler = try Sampler(parameters: SamplingParameters(repetitionPenalty: 1.1, seed: 1))
        sampler.acceptPrompt([5, 3, 5])
        sampler.accept(9)
        sampler.accept(3)
        sampler.accept(9)
        XCTAssertEqual(sampler.deviceDraw().penalties, [SIMD2(3, 1), SIMD2(5, 0), SIMD2(9, 2)])
    }

    /// Greedy picks, penalties, log-probabilities and alternatives: the reference and the CPU
    /// sampler compute the same function.
    func testReferenceMatchesTheSamplerWhereBothAreDeterministic() throws {
        var rng = SplitMix64(seed: 4)
        for trial in 0..<20 {
            let vocab = 500 + trial * 37
            let logits = (0..<vocab).map { _ in Float(Int(rng.next() % 2001) - 1000) / 250 }
            let parameters = SamplingParameters(temperature: 0, repetitionPenalty: 1 + Double(trial % 3) / 4,
                                                presencePenalty: 0.3, frequencyPenalty: 0.2, logprobs: trial % 7)
            var sampler = try Sampler(parameters: parameters)
            sampler.acceptPrompt((0..<10).map { ($0 * 31 + trial) % vocab })
            for g in 0..<4 { sampler.accept((g * 53 + trial) % vocab) }
            let limit = vocab - trial
            let cpu = sampler.sample(logits: logits, vocabularyLimit: limit)
            let ref = SamplingReference.sample(logits: logits, vocabularyLimit: limit, draw: sampler.deviceDraw())
            XCTAssertEqual(cpu.id, ref.token.id)
            XCTAssertEqual(Double(cpu.logprob!), Double(ref.token.logprob!), accuracy: 1e-4)
            XCTAssertEqual(cpu.alternatives.map(\.id), ref.token.alternatives.map(\.id))
            for (a, b) in zip(cpu.alternatives, ref.token.alternatives) { XCTAssertEqual(Double(a.logprob), Double(b.logprob), accuracy: 1e-4) }
        }
    }

    /// The kept sets on a distribution worked out by hand: probabilities 0.5, 0.3, 0.15, 0.05.
    func testReferenceKeepsTheCandidatesTheParametersDescribe() {
        let probabilities: [Double] = [0.05, 0.5, 0.15, 0.3]
        let logits = probabilities.map { Float(log($0)) }
        func kept(_ p: SamplingParameters) -> [Int] {
            SamplingReference.sample(logits: logits, vocabularyLimit: 4, draw: DeviceDraw(parameters: p, u: 0.5)).candidates
        }
        XCTAssertEqual(kept(SamplingParameters(temperature: 1)), [1, 3, 2, 0])
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, topK: 2)), [1, 3])
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, topP: 0.79)), [1, 3])
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, topP: 0.81)), [1, 3, 2])
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, topK: 3, topP: 0.6)), [1, 3])  // 0.5 / 0.95 < 0.6
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, minP: 0.29)), [1, 3, 2])       // 0.15 / 0.5 = 0.3
        XCTAssertEqual(kept(SamplingParameters(temperature: 1, minP: 0.31)), [1, 3])
    }

    /// Draws walk the kept ids from the most likely: u sweeps [0, 1) and each id is picked in
    /// proportion to its weight.
    func testReferenceDrawsFollowTheWeights() {
        let probabilities: [Double] = [0.05, 0.5, 0.15, 0.3]
        let logits = probabilities.map { Float(log($0)) }
        var counts = [0, 0, 0, 0]
        let n = 1000
        for k in 0..<n {
            let draw = DeviceDraw(parameters: SamplingParameters(temperature: 1), u: Float((Double(k) + 0.5) / Double(n)))
            counts[SamplingReference.sample(logits: logits, vocabularyLimit: 4, draw: draw).token.id] += 1
        }
        XCTAssertEqual(counts, [50, 500, 150, 300])
        // The lowest u picks the most likely id; ties in value go by increasing id.
        let tied: [Float] = [1, 2, 2, 0]
        XCTAssertEqual(SamplingReference.sample(logits: tied, vocabularyLimit: 4, draw: DeviceDraw(parameters: SamplingParameters(temperature: 1), u: 0)).token.id, 1)
        XCTAssertEqual(SamplingReference.sample(logits: tied, vocabularyLimit: 4, draw: DeviceDraw(parameters: SamplingParameters(temperature: 1, topK: 1), u: 0.9)).candidates, [1, 2])
    }
}
