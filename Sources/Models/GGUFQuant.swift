/// ggml tensor element types as stored in GGUF files, with their block geometry and
/// dequantization to Float for the types vtensor loads.
///
/// Block layouts follow ggml's `ggml-common.h` / `dequantize_row_*`; all fields are
/// little-endian and read unaligned (GGUF only aligns whole tensors).
public enum GGMLType: UInt32, Sendable, CaseIterable, CustomStringConvertible {
    case f32 = 0, f16 = 1, q4_0 = 2, q4_1 = 3, q5_0 = 6, q5_1 = 7, q8_0 = 8, q8_1 = 9
    case q2_K = 10, q3_K = 11, q4_K = 12, q5_K = 13, q6_K = 14, q8_K = 15
    case iq2_xxs = 16, iq2_xs = 17, iq3_xxs = 18, iq1_s = 19, iq4_nl = 20, iq3_s = 21
    case iq2_s = 22, iq4_xs = 23, i8 = 24, i16 = 25, i32 = 26, i64 = 27, f64 = 28
    case iq1_m = 29, bf16 = 30

    /// Elements per block and bytes per block; used to size tensors even when
    /// vtensor cannot dequantize the type, so such files still open.
    public var blockSize: Int {
        switch self {
        case .f32, .f16, .bf16, .i8, .i16, .i32, .i64, .f64: return 1
        case .q4_0, .q4_1, .q5_0, .q5_1, .q8_0, .q8_1, .iq4_nl: return 32
        default: return 256
        }
    }

    public var bytesPerBlock: Int {
        switch self {
        case .f32, .i32: return 4
        case .f16, .bf16, .i16: return 2
        case .i8: return 1
        case .i64, .f64: return 8
        case .q4_0, .iq4_nl: return 18
        case .q4_1: return 20
        case .q5_0: return 22
        case .q5_1: return 24
        case .q8_0: return 34
        case .q8_1: return 36
        case .q2_K: return 84
        case .q3_K: return 110
        case .q4_K: return 144
        case .q5_K: return 176
        case .q6_K: return 210
        case .q8_K: return 292
        case .iq2_xxs: return 66
        case .iq2_xs: return 74
        case .iq3_xxs: return 98
        case .iq1_s: return 50
        case .iq3_s: return 110
        case .iq2_s: return 82
        case .iq4_xs: return 136
        case .iq1_m: return 56
        }
    }

    /// ggml's name for the type, e.g. "Q4_K".
    public var description: String {
        switch self {
        case .f32: "F32"
        case .f16: "F16"
        case .q4_0: "Q4_0"
        case .q4_1: "Q4_1"
        case .q5_0: "Q5_0"
        case .q5_1: "Q5_1"
        case .q8_0: "Q8_0"
        case .q8_1: "Q8_1"
        case .q2_K: "Q2_K"
        case .q3_K: "Q3_K"
        case .q4_K: "Q4_K"
        case .q5_K: "Q5_K"
        case .q6_K: "Q6_K"
        case .q8_K: "Q8_K"
        case .iq2_xxs: "IQ2_XXS"
        case .iq2_xs: "IQ2_XS"
        case .iq3_xxs: "IQ3_XXS"
        case .iq1_s: "IQ1_S"
        case .iq4_nl: "IQ4_NL"
        case .iq3_s: "IQ3_S"
        case .iq2_s: "IQ2_S"
        case .iq4_xs: "IQ4_XS"
        case .i8: "I8"
        case .i16: "I16"
        case .i32: "I32"
        case .i64: "I64"
        case .f64: "F64"
        case .iq1_m: "IQ1_M"
        case .bf16: "BF16"
        }
    }

    /// Whether `GGUFQuant.dequantize` handles this type.
    public var canDequantize: Bool {
        switch self {
        case .f32, .f16, .bf16, .q4_0, .q4_1, .q8_0, .q4_K, .q6_K: return true
        default: return false
        }
    }
}

/// Dequantization of ggml blocks to Float.
public enum GGUFQuant {
    /// IEEE half bits to Float, by hand so it works wherever Float16 is unavailable.
    @inline(__always)
    public static func halfToFloat(_ h: UInt16) -> Float {
        let sign = UInt32(h & 0x8000) << 16
        let exp = UInt32(h >> 10) & 0x1F
        var mant = UInt32(h) & 0x3FF
        if exp == 0x1F {  // inf / nan
            return Float(bitPattern: sign | 0x7F80_0000 | (mant << 13))
        }
        if exp == 0 {
            if mant == 0 { return Float(bitPattern: sign) }
            // Subnormal: mant * 2^-24, exact in Float.
            let v = Float(mant) * Float(bitPattern: 0x3380_0000)
            return sign != 0 ? -v : v
        }
        mant <<= 13
        return Float(bitPattern: sign | ((exp + 112) << 23) | mant)
    }

    @inline(__always)
    static func bf16ToFloat(_ b: UInt16) -> Float { Float(bitPattern: UInt32(b) << 16) }

    /// Dequantizes `count` elements of `type` from `bytes`, which must hold exactly
    /// `count / blockSize` blocks. Throws for types without a decoder, naming the type.
    public static func dequantize(_ type: GGMLType, _ bytes: UnsafeRawBufferPointer, count: Int, path: String = "<gguf>") throws -> [Float] {
        guard type.canDequantize else {
            throw ModelFileError(path: path, "cannot dequantize ggml type \(type) (\(type.rawValue)); supported: F32, F16, BF16, Q4_0, Q4_1, Q8_0, Q4_K, Q6_K")
        }
        guard count >= 0, count % type.blockSize == 0,
              bytes.count == count / type.blockSize * type.bytesPerBlock else {
            throw ModelFileError(path: path, "\(type) data of \(bytes.count) bytes does not hold \(count) elements")
        }
        if count == 0 { return [] }
        let nb = count / type.blockSize, bs = type.bytesPerBlock
        return [Float](unsafeUninitializedCapacity: count) { out, initialized in
            let y = out.baseAddress!
            for b in 0..<nb {
                let blk = UnsafeRawBufferPointer(rebasing: bytes[(b * bs)..<(b * bs + bs)])
                let o = y + b * type.blockSize
                switch type {
                case .f32: o[0] = blk.loadUnaligned(as: Float.self)
                case .f16: o[0] = halfToFloat(blk.loadUnaligned(as: UInt16.self))
                case .bf16: o[0] = bf16ToFloat(blk.loadUnaligned(as: UInt16.self))
                case .q4_0: q4_0(blk, o)
                case .q4_1: q4_1(blk, o)
                case .q8_0: q8_0(blk, o)
                case .q4_K: q4_K(blk, o)
                case .q6_K: q6_K(blk, o)
                default: break  // unreachable: canDequantize checked above
                }
            }
            initialized = count
        }
    }

    @inline(__always)
    static func half(_ b: UnsafeRawBufferPointer, _ at: Int) -> Float {
        halfToFloat(b.loadUnaligned(fromByteOffset: at, as: UInt16.self))
    }

    /// f16 d, 16 bytes: element i < 16 is the low nibble of qs[i], i + 16 the high one.
    static func q4_0(_ b: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for i in 0..<16 {
            let q = b[2 + i]
            y[i] = Float(Int(q & 0xF) - 8) * d
            y[i + 16] = Float(Int(q >> 4) - 8) * d
        }
    }

    /// f16 d, f16 m, 16 bytes; x = q * d + m, same nibble order as Q4_0.
    static func q4_1(_ b: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), m = half(b, 2)
        for i in 0..<16 {
            let q = b[4 + i]
            y[i] = Float(q & 0xF) * d + m
            y[i + 16] = Float(q >> 4) * d + m
        }
    }

    /// f16 d, 32 signed bytes.
    static func q8_0(_ b: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0)
        for i in 0..<32 { y[i] = Float(Int8(bitPattern: b[2 + i])) * d }
    }

    /// The 6-bit scale and min of sub-block j from K-quant's 12 packed bytes
    /// (ggml's get_scale_min_k4).
    @inline(__always)
    static func scaleMinK4(_ j: Int, _ s: UnsafeRawBufferPointer) -> (Float, Float) {
        if j < 4 { return (Float(s[j] & 63), Float(s[j + 4] & 63)) }
        let sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4)
        let m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4)
        return (Float(sc), Float(m))
    }

    /// f16 d, f16 dmin, 12 bytes scales, 128 bytes qs; 64-value groups take the low
    /// nibbles of 32 bytes (even sub-block) then the high nibbles (odd sub-block).
    static func q4_K(_ b: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 0), dmin = half(b, 2)
        let scales = UnsafeRawBufferPointer(rebasing: b[4..<16])
        for g in 0..<4 {
            let (sc1, m1) = scaleMinK4(2 * g, scales)
            let (sc2, m2) = scaleMinK4(2 * g + 1, scales)
            let d1 = d * sc1, mm1 = dmin * m1, d2 = d * sc2, mm2 = dmin * m2
            let q = 16 + 32 * g, o = y + 64 * g
            for l in 0..<32 {
                let v = b[q + l]
                o[l] = d1 * Float(v & 0xF) - mm1
                o[l + 32] = d2 * Float(v >> 4) - mm2
            }
        }
    }

    /// 128 bytes ql, 64 bytes qh, 16 signed scales, f16 d; each 128-value half uses
    /// 64 ql, 32 qh and 8 scales.
    static func q6_K(_ b: UnsafeRawBufferPointer, _ y: UnsafeMutablePointer<Float>) {
        let d = half(b, 208)
        for h in 0..<2 {
            let ql = 64 * h, qh = 128 + 32 * h, sc = 192 + 8 * h, o = y + 128 * h
            @inline(__always) func s(_ i: Int) -> Float { d * Float(Int8(bitPattern: b[sc + i])) }
            for l in 0..<32 {
                let i = l / 16, hi = Int(b[qh + l])
                let a = Int(b[ql + l]), c = Int(b[ql + l + 32])
                o[l] = s(i) * Float(((a & 0xF) | ((hi & 3) << 4)) - 32)
                o[l + 32] = s(i + 2) * Float(((c & 0xF) | (((hi >> 2) & 3) << 4)) - 32)
                o[l + 64] = s(i + 4) * Float(((a >> 4) | (((hi >> 4) & 3) << 4)) - 32)
                o[l + 96] = s(i + 6) * Float(((c >> 4) | (((hi >> 6) & 3) << 4)) - 32)
            }
        }
    }
}
