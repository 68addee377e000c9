import Foundation
import Models
import VTensor
import XCTest
@testable import Runtime

/// The CPU's block-format matrix-vector products against the same blocks dequantized by the
/// GGUF reader (the oracle tested against gguf-py in ModelsTests).
final class QuantizedMatrixTests: XCTestCase {
    func testBlocksMatchDequantizedFloats() throws {
        var rng = SplitMix64(seed: 21)
        let cases: [(QuantizedMatrix.Format, GGMLType)] = [(.q4_0, .q4_0), (.q4_1, .q4_1), (.q8_0, .q8_0)]
        for (format, type) in cases {
            let rows = 37, cols = 96, blockBytes = QuantizedMatrix.blockBytes(format)
            var bytes = [UInt8](repeating: 0, count: rows * cols / 32 * blockBytes)
            for b in 0..<(rows * cols / 32) {
                let base = b * blockBytes
                for i in 0..<blockBytes { bytes[base + i] = UInt8(truncatingIfNeeded: rng.next()) }
                // Finite scales: d (and m) as fp16 of moderate size.
                let d = Float16(rng.nextNormal() * 0.05).bitPattern
                bytes[base] = UInt8(d & 0xFF); bytes[base + 1] = UInt8(d >> 8)
                if format == .q4_1 {
                    let m = Float16(rng.nextNormal() * 0.05).bitPattern
                    bytes[base + 2] = UInt8(m & 0xFF); bytes[base + 3] = UInt8(m >> 8)
                }
            }
            let matrix = QuantizedMatrix(format: format, rows: rows, cols: cols, bytes: bytes)
            let dense = try bytes.withUnsafeBytes { try GGUFQuant.dequantize(type, $0, count: rows * cols) }
            for n in 1...6 {
                let x = (0..<(n * cols)).map { _ in rng.nextNormal() }
                var y = [Float](repeating: .nan, count: n * (rows + 5))
                x.withUnsafeBufferPointer { xb in
                    y.withUnsafeMutableBufferPointer { yb in
                        matrix.multiply(x: xb.baseAddress!, n: n, y: yb.baseAddress!, yStride: rows + 5, rowOffset: 5, threads: 2)
                    }
                }
                for t in 0..<n {
                    for r in 0..<rows {
                        var expected = 0.0, bound = 0.0
                        for c in 0..<cols {
                            expected += Double(x[t * cols + c]) * Double(dense[r * cols + c])
                            // Decode rows (n <= 4) quantize x to int8 per block: half a step of error per value.
                            let block = (t * cols + c / 32 * 32)..<(t * cols + c / 32 * 32 + 32)
                            let step = Double(x[block].map { abs($0) }.max()!) / 127
                            bound += abs(Double(dense[r * cols + c])) * (n <= QuantizedMatrix.dotProductRows ? step / 2 : 0)
                        }
                        XCTAssertEqual(Double(y[t * (rows + 5) + 5 + r]), expected, accuracy: bound + 1e-4 * max(1, abs(expected)),
                                       "\(format) n \(n) token \(t) row \(r)")
                    }
                }
            }
        }
    }

    /// SmolLM2 (Q4_1 matrices, Q8_0 embedding) opened with its blocks only: no Float copy of
    /// the covered matrices; prefill (the panel product, Float) gives the Float model's logits,
    /// Q/K row permutation included, and decode steps (int8 activations) come close to them.
    func testSmolLM2BlocksOnlyMatchesFloat() throws {
        let loaded = try SmolLM2Tests.model()
        let blocksOnly = try LoadedModel.open(loaded.path, keepBlocks: true)
        XCTAssertTrue(blocksOnly.weights.embedding.isEmpty)
        XCTAssertTrue(blocksOnly.weights.layers.allSatisfy { $0.qkv.isEmpty && $0.output.isEmpty && $0.gateUp.isEmpty && $0.down.isEmpty })
        XCTAssertThrowsError(try blocksOnly.cpuModel(nativeWeights: false))
        let float = try loaded.cpuModel(kvBudgetBytes: 64 << 20, maxTokensPerSequence: 64, threads: 2, nativeWeights: false)
        let native = try blocksOnly.cpuModel(kvBudgetBytes: 64 << 20, maxTokensPerSequence: 64, threads: 2)
        XCTAssertNil(float.quantized)
        XCTAssertNotNil(native.quantized?.embedding)
        func relativeError(_ a: [Float], _ b: [Float]) -> Double {
            var diff = 0.0, norm = 0.0
            for (u, v) in zip(a, b) { diff += Double(u - v) * Double(u - v); norm += Double(u) * Double(u) }
            return (diff / norm).squareRoot()
        }
        let prompt = [504, 3575, 282, 4649, 314, 2, 17, 900, 4410, 28, 7042, 30, 1116]
        for model in [float, native] { try model.addSequence(0) }
        let a = try float.reserveAndForward([ForwardInput(id: 0, tokens: prompt, allLogits: true)])[0]
        let b = try native.reserveAndForward([ForwardInput(id: 0, tokens: prompt, allLogits: true)])[0]
        XCTAssertEqual(a.count, prompt.count * float.config.vocabSize)
        XCTAssertLessThan(relativeError(a, b), 1e-4)
        for token in [7042, 30, 314, 2] {
            let a = try float.reserveAndForward([ForwardInput(id: 0, tokens: [token])])[0]
            let b = try native.reserveAndForward([ForwardInput(id: 0, tokens: [token])])[0]
            let error = relativeError(a, b)
            XCTAssertLessThan(error, 5e-2)  // measured 1.0-3.9% (int8 steps of 1/127 of each block's largest value, through 30 layers)
            // The float model's pick is among the native model's best three.
            let best = a.indices.max { a[$0] < a[$1] }!
            XCTAssertLessThan(b.filter { $0 > b[best] }.count, 3)
        }
    }
}
