import Models
import XCTest
@testable import Runtime

final class RoPETests: XCTestCase {
    func testPlainFrequenciesAndRotation() {
        let rope = RoPE(config: RoPEConfig(theta: 10000, scaling: .none), headDim: 8)
        for i in 0..<4 { XCTAssertEqual(Double(rope.inverseFrequencies[i]), pow(10000, -Double(2 * i) / 8), accuracy: 1e-6) }
        // Rotate-half pairs element i with i + d/2; position 0 is the identity.
        var x: [Float] = [1, 2, 3, 4, 5, 6, 7, 8]
        rope.apply(&x, heads: 1, position: 0)
        XCTAssertEqual(x, [1, 2, 3, 4, 5, 6, 7, 8])
        rope.apply(&x, heads: 1, position: 3)
        let angle = 3 * rope.inverseFrequencies[0]
        XCTAssertEqual(x[0], 1 * cosf(angle) - 5 * sinf(angle), accuracy: 1e-6)
        XCTAssertEqual(x[4], 5 * cosf(angle) + 1 * sinf(angle), accuracy: 1e-6)
        // Rotation keeps each pair's norm.
        XCTAssertEqual(x[1] * x[1] + x[5] * x[5], 4 + 36, accuracy: 1e-4)
    }

    /// Llama 3.1 scaling: long wavelengths divided by the factor, short ones kept, the band between smoothed.
    func testLlama3Scaling() {
        let plain = RoPE(config: RoPEConfig(theta: 500000, scaling: .none), headDim: 128)
        let scaled = RoPE(config: RoPEConfig(theta: 500000, scaling: .llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4,
                                                                             originalMaxPositionEmbeddings: 8192)), headDim: 128)
        var sawShort = false, sawLong = false, sawMiddle = false
        for i in 0..<64 {
            let f = Double(plain.inverseFrequencies[i]), g = Double(scaled.inverseFrequencies[i])
            let wavelength = 2 * Double.pi / f
            if wavelength < 8192 / 4 {
                XCTAssertEqual(g, f, accuracy: f * 1e-6); sawShort = true
            } else if wavelength > 8192 {
                XCTAssertEqual(g, f / 8, accuracy: f * 1e-6); sawLong = true
            } else {
                let smooth = (8192 / wavelength - 1) / 3
                XCTAssertEqual(g, (1 - smooth) * f / 8 + smooth * f, accuracy: f * 1e-5); sawMiddle = true
                XCTAssertLessThan(g, f); XCTAssertGreaterThan(g, f / 8)
            }
        }
        XCTAssertTrue(sawShort && sawLong && sawMiddle)
    }

    func testLinearScalingAndGGUFFactors() {
        let base = RoPE(config: RoPEConfig(theta: 10000, scaling: .none), headDim: 16)
        let linear = RoPE(config: RoPEConfig(theta: 10000, scaling: .linear(factor: 4)), headDim: 16)
        let factors: [Float] = [1, 1, 2, 2, 4, 4, 8, 8]
        let custom = RoPE(config: RoPEConfig(theta: 10000, scaling: .linear(factor: 4)), headDim: 16, frequencyFactors: factors)
        for i in 0..<8 {
            XCTAssertEqual(linear.inverseFrequencies[i], base.inverseFrequencies[i] / 4, accuracy: 1e-9)
            XCTAssertEqual(custom.inverseFrequencies[i], base.inverseFrequencies[i] / factors[i], accuracy: 1e-9)
        }
    }
}
