import Testing
@testable import Models
import GGUFTestSupport

// Blocks are built from the values they should decode to, packing them the way
// ggml's quantizers lay them out, so expectations don't reuse the decoder's loops.

private func le16(_ x: UInt16) -> [UInt8] { [UInt8(x & 0xFF), UInt8(x >> 8)] }

/// Exact f16 encodings of the powers of two and small values used below.
private let h: [Float: UInt16] = [1: 0x3C00, 0.5: 0x3800, 0.25: 0x3400, 0.125: 0x3000, -1: 0xBC00, 2: 0x4000]

private func close(_ a: [Float], _ b: [Float]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) }
}

private func q8_0Block(d: Float, _ q: [Int8]) -> [UInt8] { le16(h[d]!) + q.map { UInt8(bitPattern: $0) } }

private func q4_0Block(d: Float, _ q: [UInt8]) -> [UInt8] {
    le16(h[d]!) + (0..<16).map { q[$0] | (q[$0 + 16] << 4) }
}

private func q4_1Block(d: Float, m: Float, _ q: [UInt8]) -> [UInt8] {
    le16(h[d]!) + le16(h[m]!) + (0..<16).map { q[$0] | (q[$0 + 16] << 4) }
}

/// 8 six-bit scales and mins into ggml's 12-byte K-quant packing.
private func packScalesK4(_ sc: [UInt8], _ m: [UInt8]) -> [UInt8] {
    var s = [UInt8](repeating: 0, count: 12)
    for k in 0..<4 {
        s[k] = sc[k] | ((sc[k + 4] >> 4) << 6)
        s[k + 4] = m[k] | ((m[k + 4] >> 4) << 6)
        s[k + 8] = (sc[k + 4] & 0xF) | ((m[k + 4] & 0xF) << 4)
    }
    return s
}

/// Element e belongs to sub-block e/32; sub-blocks 2g and 2g+1 share qs[32g..<32g+32],
/// low nibble for the even one.
private func q4_KBlock(d: Float, dmin: Float, sc: [UInt8], m: [UInt8], _ q: [UInt8]) -> [UInt8] {
    var qs = [UInt8](repeating: 0, count: 128)
    for e in 0..<256 {
        let s = e / 32, i = (s / 2) * 32 + e % 32
        qs[i] |= s % 2 == 0 ? q[e] : q[e] << 4
    }
    return le16(h[d]!) + le16(h[dmin]!) + packScalesK4(sc, m) + qs
}

/// Element e: half = e/128, quarter k = (e%128)/32, l = e%32; low 4 bits in
/// ql[64*half + 32*(k%2) + l] (low nibble for k < 2), high 2 bits in qh[32*half + l]
/// at bit 2k, scale index 8*half + l/16 + 2k.
private func q6_KBlock(d: Float, sc: [Int8], _ q: [UInt8]) -> [UInt8] {
    var ql = [UInt8](repeating: 0, count: 128), qh = [UInt8](repeating: 0, count: 64)
    for e in 0..<256 {
        let half = e / 128, k = (e % 128) / 32, l = e % 32
        let i = 64 * half + 32 * (k % 2) + l
        ql[i] |= k < 2 ? q[e] & 0xF : (q[e] & 0xF) << 4
        qh[32 * half + l] |= (q[e] >> 4) << (2 * k)
    }
    return ql + qh + sc.map { UInt8(bitPattern: $0) } + le16(h[d]!)
}

private func q6_KScale(_ e: Int) -> Int { 8 * (e / 128) + (e % 32) / 16 + 2 * ((e % 128) / 32) }

@Test func halfFloatConversion() {
    #expect(GGUFQuant.halfToFloat(0x3C00) == 1)
    #expect(GGUFQuant.halfToFloat(0xC000) == -2)
    #expect(GGUFQuant.halfToFloat(0x7BFF) == 65504)
    #expect(GGUFQuant.halfToFloat(0x0001) == 0x1p-24)
    #expect(GGUFQuant.halfToFloat(0x83FF) == -Float(1023) * 0x1p-24)
    #expect(GGUFQuant.halfToFloat(0x0400) == 0x1p-14)
    #expect(GGUFQuant.halfToFloat(0x7C00) == .infinity)
    #expect(GGUFQuant.halfToFloat(0x7E00).isNaN)
    #expect(GGUFQuant.halfToFloat(0x8000).sign == .minus && GGUFQuant.halfToFloat(0x8000) == 0)
    #expect(GGUFQuant.halfToFloat(0x3555) == 0.333251953125)
}

@Test func everySupportedTypeDequantizesFromAFile() throws {
    var w = GGUFTestWriter()
    w.alignment = 16
    w.metadata = [("general.alignment", .uint32(16))]
    var expected: [String: [Float]] = [:]

    w.tensors.append(("f32", [2, 2], 0, [Float(1.5), -2.25, 3, 4].flatMap { le16(UInt16($0.bitPattern & 0xFFFF)) + le16(UInt16($0.bitPattern >> 16)) }))
    expected["f32"] = [1.5, -2.25, 3, 4]
    w.tensors.append(("f16", [5], 1, [0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001].flatMap(le16)))
    expected["f16"] = [1, -2, 0.5, 65504, 0x1p-24]
    w.tensors.append(("bf16", [3], 30, [0x3F80, 0xC040, 0x4049].flatMap(le16)))
    expected["bf16"] = [1, -3, 3.140625]

    // Q8_0: two rows of two blocks, each block its own scale.
    var q8: [UInt8] = [], e8: [Float] = []
    for (b, d) in [Float(0.5), 0.25, 1, 2].enumerated() {
        let q = (0..<32).map { Int8(truncatingIfNeeded: ($0 * 9 + b * 50) % 256 - 128) }
        q8 += q8_0Block(d: d, q)
        e8 += q.map { Float($0) * d }
    }
    w.tensors.append(("q8_0", [64, 2], 8, q8))
    expected["q8_0"] = e8

    let q4 = (0..<32).map { UInt8(($0 * 7 + 3) % 16) }
    w.tensors.append(("q4_0", [32], 2, q4_0Block(d: 0.25, q4)))
    expected["q4_0"] = q4.map { (Float($0) - 8) * 0.25 }
    w.tensors.append(("q4_1", [32], 3, q4_1Block(d: 0.5, m: -1, q4)))
    expected["q4_1"] = q4.map { Float($0) * 0.5 - 1 }

    // Q4_K: two super-blocks, scales and mins spanning all 6 bits.
    var qk: [UInt8] = [], ek: [Float] = []
    for (b, (d, dmin)) in [(Float(0.5), Float(0.25)), (1, 0.125)].enumerated() {
        let sc: [UInt8] = b == 0 ? [1, 63, 5, 17, 33, 48, 7, 60] : [63, 0, 31, 32, 16, 15, 47, 1]
        let m: [UInt8] = b == 0 ? [0, 2, 63, 9, 40, 31, 3, 50] : [5, 63, 0, 16, 63, 32, 1, 44]
        let q = (0..<256).map { UInt8(($0 * 5 + b * 3 + $0 / 17) % 16) }
        qk += q4_KBlock(d: d, dmin: dmin, sc: sc, m: m, q)
        ek += (0..<256).map { e in d * Float(sc[e / 32]) * Float(q[e]) - dmin * Float(m[e / 32]) }
    }
    w.tensors.append(("q4_K", [512], 12, qk))
    expected["q4_K"] = ek

    // Q6_K: one super-block per row, two rows; signed scales incl. extremes.
    var q6: [UInt8] = [], e6: [Float] = []
    for (b, d) in [Float(0.125), 2].enumerated() {
        let sc: [Int8] = (0..<16).map { i in [Int8(-128), 127, -1, 1, 5, -7, 0, 33][(i + b) % 8] }
        let q = (0..<256).map { UInt8(($0 * 11 + 5 + b * 13 + $0 / 64) % 64) }
        q6 += q6_KBlock(d: d, sc: sc, q)
        e6 += (0..<256).map { e in d * Float(sc[q6_KScale(e)]) * Float(Int(q[e]) - 32) }
    }
    w.tensors.append(("q6_K", [256, 2], 14, q6))
    expected["q6_K"] = e6

    let g = try GGUFFile(path: writeGGUF(w.bytes()))
    #expect(g.dataOffset % 16 == 0)
    #expect(g.tensors.allSatisfy { $0.offset % 16 == 0 })
    for t in g.tensors {
        #expect(t.byteSize == w.tensors.first { $0.0 == t.name }!.3.count, "\(t.name)")
        let got = try g.dequantize(t)
        #expect(close(got, expected[t.name]!), "\(t.name): \(got.prefix(8)) vs \(expected[t.name]!.prefix(8))")
    }
    #expect(try g.tensor(named: "q4_K").type == .q4_K)
    #expect(try g.tensor(named: "q6_K").shape == [2, 256])
}

@Test func unsupportedTypesOpenButDoNotDequantize() throws {
    var w = GGUFTestWriter()
    w.tensors = [("q5", [64], 6, [UInt8](repeating: 0, count: 44)), ("q2k", [256], 10, [UInt8](repeating: 0, count: 84))]
    let g = try GGUFFile(path: writeGGUF(w.bytes()))
    #expect(g.tensors.map(\.byteSize) == [44, 84])
    for (t, name) in zip(g.tensors, ["Q5_0", "Q2_K"]) {
        do {
            _ = try g.dequantize(t)
            Issue.record("\(name) dequantized")
        } catch let e as ModelFileError {
            #expect(e.problem.contains(name), "\(e.problem)")
        }
    }
}
