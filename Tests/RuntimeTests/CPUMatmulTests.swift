import VTensor
import XCTest
@testable import Runtime

final class CPUMatmulTests: XCTestCase {
    /// Every tile path (4x2 blocks, leftover rows, odd token counts, k not a multiple of 8) against a Double loop.
    func testMatchesNaiveProduct() {
        var rng = SplitMix64(seed: 1)
        for (n, k, out, threads) in [(1, 7, 3, 1), (2, 8, 4, 1), (3, 37, 9, 2), (5, 64, 13, 2), (8, 129, 33, 3), (1, 576, 1, 2)] {
            let x = (0..<(n * k)).map { _ in rng.nextNormal() }
            let w = (0..<(out * k)).map { _ in rng.nextNormal() }
            let bias = (0..<out).map { _ in rng.nextNormal() }
            for useBias in [false, true] {
                var y = [Float](repeating: .nan, count: n * out)
                x.withUnsafeBufferPointer { xb in
                    w.withUnsafeBufferPointer { wb in
                        bias.withUnsafeBufferPointer { bb in
                            y.withUnsafeMutableBufferPointer { yb in
                                CPUMatmul.multiply(x: xb.baseAddress!, n: n, k: k, w: wb.baseAddress!, out: out,
                                                   bias: useBias ? bb.baseAddress! : nil, y: yb.baseAddress!, threads: threads)
                            }
                        }
                    }
                }
                for t in 0..<n {
                    for o in 0..<out {
                        var expected = useBias ? Double(bias[o]) : 0
                        for i in 0..<k { expected += Double(x[t * k + i]) * Double(w[o * k + i]) }
                        XCTAssertEqual(Double(y[t * out + o]), expected, accuracy: 1e-4 * max(1, abs(expected)),
                                       "n \(n) k \(k) out \(out) row \(t) col \(o) bias \(useBias)")
                    }
                }
            }
        }
    }
}
