/// The few vector loops the sampler runs over a whole vocabulary, written with SIMD types so
/// they stay fast at 150k entries: a sanitizing copy, the maximum, and exp with a sum.
///
/// `exp` is our own: range reduction to 2^n * e^r with |r| <= ln(2)/2 and a degree-6
/// polynomial for e^r (the classic Cephes coefficients for single precision), about 2 ulp
/// from the true value. Inputs below -87.3 give 0; the sampler only passes values <= 0.
enum VectorMath {
    typealias Vector = SIMD16<Float>
    static var width: Int { Vector.scalarCount }
    /// Elements per partial sum: short enough that float accumulation stays accurate.
    static let blockSize = 1024

    static var log2e: Float { 1.442_695_04 }
    static var ln2High: Float { 0.693_359_375 }
    static var ln2Low: Float { -2.121_944_4e-4 }
    static var underflow: Float { -87.336_54 }

    /// 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an integer (to nearest,
    /// ties to even) and leaves that integer in the low mantissa bits.
    static var roundingMagic: Float { 12_582_912 }
    static var roundingMagicBits: Int32 { 0x4B40_0000 }

    // The vector form uses only arithmetic, comparisons with `replacing` and bit casts: the
    // standard library's `clamped`, `rounded`, `pointwiseMin`/`pointwiseMax` and integer
    // conversions run one lane at a time and make the loop ten times slower.
    @inline(__always)
    static func exp(_ x: Vector) -> Vector {
        var clamped = x.replacing(with: 88, where: x .> 88)
        clamped = clamped.replacing(with: underflow, where: clamped .< underflow)
        let shifted = clamped * log2e + roundingMagic
        let n = shifted - roundingMagic
        let r = clamped - n * ln2High - n * ln2Low
        var p = Vector(repeating: 1.987_569_15e-4)
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_1e-1
        p = p * (r * r) + r + 1
        // 2^n built in the exponent field; n is in [-126, 127] after the clamp.
        let integer = unsafeBitCast(shifted, to: SIMD16<Int32>.self) &- roundingMagicBits  // same size: 16 x 32 bits
        let scale = unsafeBitCast((integer &+ 127) &<< 23, to: Vector.self)
        return (p * scale).replacing(with: 0, where: x .< underflow)
    }

    /// The scalar form of ``exp(_:)`` (same polynomial), for single entries and tails.
    @inline(__always)
    static func exp(_ x: Float) -> Float {
        if x < underflow { return 0 }
        let clamped = Swift.min(x, 88)
        let shifted = clamped * log2e + roundingMagic
        let n = shifted - roundingMagic
        let r = clamped - n * ln2High - n * ln2Low
        var p: Float = 1.987_569_15e-4
        p = p * r + 1.398_199_95e-3
        p = p * r + 8.333_451_9e-3
        p = p * r + 4.166_579_59e-2
        p = p * r + 1.666_666_55e-1
        p = p * r + 5.000_000_1e-1
        p = p * (r * r) + r + 1
        return p * Float(bitPattern: UInt32(bitPattern: (Int32(bitPattern: shifted.bitPattern) &- roundingMagicBits &+ 127) &<< 23))
    }

    @inline(__always)
    static func load(_ x: UnsafeBufferPointer<Float>, _ i: Int) -> Vector {
        UnsafeRawPointer(x.baseAddress! + i).loadUnaligned(as: Vector.self)
    }

    @inline(__always)
    static func store(_ v: Vector, _ x: UnsafeMutableBufferPointer<Float>, _ i: Int) {
        UnsafeMutableRawPointer(x.baseAddress! + i).storeBytes(of: v, as: Vector.self)
    }

    // Debug builds run the scalar loops: without optimization every SIMD operation is a generic
    // call per lane, hundreds of times slower than plain scalar code. Release builds run the
    // vector loops. Tests check that both give the same results.

    /// Copies `source` into `destination` with NaN as -infinity and +infinity as the largest float.
    static func sanitizedCopy(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        #if DEBUG
        sanitizedCopyScalar(source, into: destination)
        #else
        sanitizedCopyVector(source, into: destination)
        #endif
    }

    static func sanitizedCopyScalar(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        for i in 0..<destination.count {
            let v = source[i]
            destination[i] = v.isNaN ? -.infinity : Swift.min(v, .greatestFiniteMagnitude)
        }
    }

    static func sanitizedCopyVector(_ source: UnsafeBufferPointer<Float>, into destination: UnsafeMutableBufferPointer<Float>) {
        let count = destination.count
        let big = Float.greatestFiniteMagnitude
        var i = 0
        while i + width <= count {
            var v = load(source, i)
            v = v.replacing(with: -.infinity, where: v .!= v)
            v = v.replacing(with: big, where: v .> big)
            store(v, destination, i)
            i += width
        }
        while i < count {
            let v = source[i]
            destination[i] = v.isNaN ? -.infinity : Swift.min(v, .greatestFiniteMagnitude)
            i += 1
        }
    }

    /// The largest value and the first index holding it.
    static func argmax(_ x: UnsafeBufferPointer<Float>) -> (index: Int, value: Float) {
        #if DEBUG
        argmaxScalar(x)
        #else
        argmaxVector(x)
        #endif
    }

    static func argmaxScalar(_ x: UnsafeBufferPointer<Float>) -> (index: Int, value: Float) {
        var best = 0
        for i in 1..<x.count where x[i] > x[best] { best = i }
        return (best, x[best])
    }

    static func argmaxVector(_ x: UnsafeBufferPointer<Float>) -> (index: Int, value: Float) {
        let count = x.count
        var best = Vector(repeating: -.infinity)
        var i = 0
        while i + width <= count {
            let v = load(x, i)
            best = best.replacing(with: v, where: v .> best)
            i += width
        }
        var m = best.max()
        while i < count {
            m = Swift.max(m, x[i])
            i += 1
        }
        return (x.firstIndex(of: m) ?? 0, m)
    }

    /// Sum of exp((x[i] - shift) * scale). With `out`, also stores each term; with `blockSums`,
    /// also the sum of each run of ``blockSize`` terms (for a fast cumulative walk).
    static func expSum(_ x: UnsafeBufferPointer<Float>, shift: Float, scale: Float,
                       into out: UnsafeMutableBufferPointer<Float>?, blockSums: inout [Double]) -> Double {
        #if DEBUG
        expSumScalar(x, shift: shift, scale: scale, into: out, blockSums: &blockSums)
        #else
        expSumVector(x, shift: shift, scale: scale, into: out, blockSums: &blockSums)
        #endif
    }

    static func expSumScalar(_ x: UnsafeBufferPointer<Float>, shift: Float, scale: Float,
                             into out: UnsafeMutableBufferPointer<Float>?, blockSums: inout [Double]) -> Double {
        blockSums.removeAll(keepingCapacity: true)
        var total = 0.0
        var start = 0
        while start < x.count {
            let end = Swift.min(start + blockSize, x.count)
            var block = 0.0
            for i in start..<end {
                let e = exp((x[i] - shift) * scale)
                out?[i] = e
                block += Double(e)
            }
            blockSums.append(block)
            total += block
            start = end
        }
        return total
    }

    static func expSumVector(_ x: UnsafeBufferPointer<Float>, shift: Float, scale: Float,
                             into out: UnsafeMutableBufferPointer<Float>?, blockSums: inout [Double]) -> Double {
        let count = x.count
        blockSums.removeAll(keepingCapacity: true)
        let shiftV = Vector(repeating: shift)
        var total = 0.0
        var start = 0
        while start < count {
            let end = Swift.min(start + blockSize, count)
            var acc = Vector.zero
            var i = start
            while i + width <= end {
                let e = exp((load(x, i) - shiftV) * scale)
                if let out { store(e, out, i) }
                acc += e
                i += width
            }
            var block = Double(acc.sum())
            while i < end {
                let e = exp((x[i] - shift) * scale)
                out?[i] = e
                block += Double(e)
                i += 1
            }
            blockSums.append(block)
            total += block
            start = end
        }
        return total
    }
}
