import CQuant
import Models
import Support
import VTensor
import Testing
@testable import Runtime

/// The C matrix kernels at every instruction-set level this CPU has (portable C, AVX2, AVX-512)
/// against a Double oracle over the GGUF reader's dequantization (tested against gguf-py).
@Suite(.serialized) struct CPUKernelLevelsTests {
    static let formats: [(format: Int32, type: GGMLType?, blockBytes: Int)] = [
        (Int32(VT_WEIGHTS_F32), nil, 0), (Int32(VT_WEIGHTS_Q4_0), .q4_0, 18), (Int32(VT_WEIGHTS_Q4_1), .q4_1, 20),
        (Int32(VT_WEIGHTS_Q8_0), .q8_0, 34),
    ]

    /// Random blocks with finite fp16 scales (and mins), or fp32 rows.
    static func matrix(_ f: (format: Int32, type: GGMLType?, blockBytes: Int), rows: Int, cols: Int, rng: inout SplitMix64)
        throws -> (bytes: [UInt8], rowBytes: Int, dense: [Float]) {
        guard let type = f.type else {
            let values = (0..<(rows * cols)).map { _ in rng.nextNormal() }
            return (values.withUnsafeBytes { Array($0) }, cols * 4, values)
        }
        var bytes = [UInt8](repeating: 0, count: rows * cols / 32 * f.blockBytes)
        for b in 0..<(rows * cols / 32) {
            let base = b * f.blockBytes
            for i in 0..<f.blockBytes { bytes[base + i] = UInt8(truncatingIfNeeded: rng.next()) }
            let d = Float16(rng.nextNormal() * 0.05).bitPattern
            bytes[base] = UInt8(d & 0xFF); bytes[base + 1] = UInt8(d >> 8)
            if type == .q4_1 {
                let m = Float16(rng.nextNormal() * 0.05).bitPattern
                bytes[base + 2] = UInt8(m & 0xFF); bytes[base + 3] = UInt8(m >> 8)
            }
        }
        let dense = try bytes.withUnsafeBytes { try GGUFQuant.dequantize(type, $0, count: rows * cols) }
        return (bytes, cols / 32 * f.blockBytes, dense)
    }

    /// The levels to run: every one up to the best this CPU supports.
    static var levels: [Int32] { Array(0...vt_cpu_best_level()) }

    @Test func productMatchesOracleAtEveryLevel() throws {
        defer { _ = vt_cpu_set_level(vt_cpu_best_level()) }
        var rng = SplitMix64(seed: 5)
        #expect(Self.levels.count >= 1)
        for level in Self.levels {
            #expect(vt_cpu_set_level(level) == level)
            for f in Self.formats {
                // Shapes: panels of 64 and their leftovers, 4-row tiles and their leftovers, token
                // counts around the 3- and 6-row tiles, widths with SIMD tails (fp32 only).
                let shapes: [(rows: Int, cols: Int, n: Int)] = f.type == nil
                    ? [(5, 37, 1), (70, 64, 7), (9, 8, 13), (131, 200, 6)]
                    : [(5, 32, 1), (70, 96, 7), (9, 64, 13), (131, 256, 6), (4, 608, 2)]
                for s in shapes {
                    let m = try Self.matrix(f, rows: s.rows, cols: s.cols, rng: &rng)
                    let x = (0..<(s.n * s.cols)).map { _ in rng.nextNormal() }
                    let yStride = s.rows + 3
                    var y = [Float](repeating: .nan, count: s.n * yStride)
                    // Two calls on disjoint row ranges, as two threads' parts.
                    let split = s.rows / 3
                    m.bytes.withUnsafeBufferPointer { w in
                        x.withUnsafeBufferPointer { xb in
                            y.withUnsafeMutableBufferPointer { yb in
                                for (lo, hi) in [(0, split), (split, s.rows)] {
                                    vt_gemm(f.format, w.baseAddress!, m.rowBytes, Int32(s.cols), xb.baseAddress!, s.cols, Int32(s.n),
                                            yb.baseAddress!, yStride, Int32(lo), Int32(hi))
                                }
                            }
                        }
                    }
                    for t in 0..<s.n {
                        for r in 0..<s.rows {
                            var expected = 0.0
                            for c in 0..<s.cols { expected += Double(x[t * s.cols + c]) * Double(m.dense[r * s.cols + c]) }
                            let got = Double(y[t * yStride + r])
                            #expect(abs(got - expected) <= 1e-4 * max(1, abs(expected)),
                                    "level \(level) format \(f.format) \(s) token \(t) row \(r): \(got) vs \(expected)")
                        }
                        for r in s.rows..<yStride { #expect(y[t * yStride + r].isNaN, "wrote outside its rows") }
                    }
                }
            }
        }
    }

    @Test func dequantizeMatchesOracleAtEveryLevel() throws {
        defer { _ = vt_cpu_set_level(vt_cpu_best_level()) }
        var rng = SplitMix64(seed: 6)
        for level in Self.levels {
            #expect(vt_cpu_set_level(level) == level)
            for f in Self.formats {
                let cols = 160
                let m = try Self.matrix(f, rows: 3, cols: cols, rng: &rng)
                for r in 0..<3 {
                    var row = [Float](repeating: .nan, count: cols)
                    m.bytes.withUnsafeBufferPointer { w in
                        row.withUnsafeMutableBufferPointer { vt_dequantize_row(f.format, w.baseAddress! + r * m.rowBytes, Int32(cols), $0.baseAddress!) }
                    }
                    #expect(row == Array(m.dense[(r * cols)..<((r + 1) * cols)]), "level \(level) format \(f.format) row \(r)")
                }
            }
        }
    }

    /// Activations quantized per block of 32: each value within half a step of its block's
    /// scale, sums exact; then the decode product on them against a Double oracle over the
    /// quantized activations (the kernels' only other difference is the order of float sums),
    /// for 1-6 token rows (two calls past four), odd and even block counts, row ranges.
    @Test func decodeProductMatchesOracleAtEveryLevel() throws {
        defer { _ = vt_cpu_set_level(vt_cpu_best_level()) }
        var rng = SplitMix64(seed: 7)
        for level in Self.levels {
            #expect(vt_cpu_set_level(level) == level)
            for f in Self.formats where f.type != nil {
                for (rows, cols, n) in [(5, 32, 1), (9, 96, 2), (37, 160, 4), (6, 256, 6), (3, 608, 3), (7, 1024, 1), (4, 1536, 4)] {
                    let blocks = cols / 32
                    let m = try Self.matrix(f, rows: rows, cols: cols, rng: &rng)
                    // Activations with an outlier now and then, as LLM activations have.
                    let x = (0..<(n * cols)).map { i in rng.nextNormal() * (i % 53 == 7 ? 20 : 1) }
                    var q = [Int8](repeating: 0, count: n * cols)
                    var d = [Float](repeating: 0, count: n * blocks), sum = d
                    var qsum = [Int32](repeating: 0, count: n * blocks)
                    for t in 0..<n {
                        x.withUnsafeBufferPointer { xb in
                            q.withUnsafeMutableBufferPointer { qb in
                                vt_quantize_q8(xb.baseAddress! + t * cols, Int32(cols), qb.baseAddress! + t * cols, &d[t * blocks],
                                               &sum[t * blocks], &qsum[t * blocks])
                            }
                        }
                    }
                    for t in 0..<n {
                        for b in 0..<blocks {
                            let block = (0..<32).map { t * cols + b * 32 + $0 }
                            let amax = block.map { abs(x[$0]) }.max()!
                            #expect(abs(d[t * blocks + b] - amax / 127) <= 1e-6 * amax)
                            #expect(qsum[t * blocks + b] == block.reduce(Int32(0)) { $0 + Int32(q[$1]) })
                            #expect(abs(Double(sum[t * blocks + b]) - block.reduce(0.0) { $0 + Double(x[$1]) }) <= 1e-5 * Double(amax) * 32)
                            for i in block { #expect(abs(Float(q[i]) * d[t * blocks + b] - x[i]) <= d[t * blocks + b] * 0.5001) }
                        }
                    }
                    let yStride = rows + 2
                    var y = [Float](repeating: .nan, count: n * yStride)
                    let split = rows / 2
                    m.bytes.withUnsafeBufferPointer { w in
                        y.withUnsafeMutableBufferPointer { yb in
                            for (lo, hi) in [(0, split), (split, rows)] {
                                vt_gemv_q8(f.format, w.baseAddress!, m.rowBytes, Int32(cols), q, d, sum, qsum, Int32(n), yb.baseAddress!, yStride,
                                           Int32(lo), Int32(hi))
                            }
                        }
                    }
                    for t in 0..<n {
                        for r in 0..<rows {
                            var expected = 0.0, scale = 0.0
                            for c in 0..<cols {
                                let b = t * blocks + c / 32
                                // Q4_1's m multiplies the exact block sum; everything else the quantized values.
                                let xq = Double(q[t * cols + c]) * Double(d[b])
                                var term = Double(m.dense[r * cols + c]) * xq
                                if f.type == .q4_1 {
                                    let mValue = Double(GGUFQuant.halfToFloat(UInt16(m.bytes[r * m.rowBytes + (c / 32) * 20 + 2])
                                                                              | UInt16(m.bytes[r * m.rowBytes + (c / 32) * 20 + 3]) << 8))
                                    term += mValue * (Double(x[t * cols + c]) - xq)
                                }
                                expected += term
                                scale += abs(term)
                            }
                            let got = Double(y[t * yStride + r])
                            #expect(abs(got - expected) <= 1e-5 * max(1, scale),
                                    "level \(level) format \(f.format) rows \(rows) cols \(cols) token \(t) row \(r): \(got) vs \(expected)")
                        }
                        for r in rows..<yStride { #expect(y[t * yStride + r].isNaN, "wrote outside its rows") }
                    }
                }
            }
        }
    }

    @Test func levelsClampToTheCPU() {
        defer { _ = vt_cpu_set_level(vt_cpu_best_level()) }
        #expect(vt_cpu_set_level(-3) == Int32(VT_CPU_PORTABLE))
        #expect(vt_cpu_set_level(99) == vt_cpu_best_level())
        #expect(vt_cpu_level() == vt_cpu_best_level())
    }
}
