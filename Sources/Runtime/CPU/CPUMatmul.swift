import VTensor

/// Y[n, out] = X[n, k] · W[out, k]ᵀ (+ bias), Float, row-major: the CPU backend's every linear
/// layer. Output rows of W are split across threads; within a thread, a 4-row block of W stays
/// in L1 while every token's row of X passes over it, 2 tokens at a time (8 SIMD accumulators).
public enum CPUMatmul {
    public static func multiply(x: UnsafePointer<Float>, n: Int, k: Int, w: UnsafePointer<Float>, out: Int,
                                bias: UnsafePointer<Float>? = nil, y: UnsafeMutablePointer<Float>, threads: Int) {
        let blocks = (out + 3) / 4
        // Several parts a thread: a thread the OS holds back delays at most one small part.
        let parts = max(1, min(threads > 1 ? threads * WorkerPool.partsPerThread : 1, blocks))
        let xa = UInt(bitPattern: x), wa = UInt(bitPattern: w), ya = UInt(bitPattern: y)
        let ba = bias.map { UInt(bitPattern: $0) }
        let work: @Sendable (Int) -> Void = { part in
            let first = blocks * part / parts * 4, last = min(out, blocks * (part + 1) / parts * 4)
            rows(x: UnsafePointer(bitPattern: xa)!, n: n, k: k, w: UnsafePointer(bitPattern: wa)!, rows: first..<last, out: out,
                 bias: ba.flatMap { UnsafePointer(bitPattern: $0) }, y: UnsafeMutablePointer(bitPattern: ya)!)
        }
        WorkerPool.shared.run(parts: parts, maxThreads: threads, work)
    }

    private static func rows(x: UnsafePointer<Float>, n: Int, k: Int, w: UnsafePointer<Float>, rows: Range<Int>, out: Int,
                             bias: UnsafePointer<Float>?, y: UnsafeMutablePointer<Float>) {
        var r = rows.lowerBound
        while r < rows.upperBound {
            let count = min(4, rows.upperBound - r)
            var t = 0
            if count == 4 {
                while t + 1 < n {
                    block4x2(x + t * k, x + (t + 1) * k, k: k, w: w + r * k, y0: y + t * out + r, y1: y + (t + 1) * out + r)
                    t += 2
                }
            }
            while t < n {
                for i in 0..<count { y[t * out + r + i] = dot(x + t * k, w + (r + i) * k, k) }
                t += 1
            }
            if let bias {
                for t in 0..<n { for i in 0..<count { y[t * out + r + i] += bias[r + i] } }
            }
            r += count
        }
    }

    @inline(__always)
    private static func load8(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    /// Four rows of W against two rows of X.
    @inline(__always)
    private static func block4x2(_ x0: UnsafePointer<Float>, _ x1: UnsafePointer<Float>, k: Int, w: UnsafePointer<Float>,
                                 y0: UnsafeMutablePointer<Float>, y1: UnsafeMutablePointer<Float>) {
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a02 = SIMD8<Float>(), a03 = SIMD8<Float>()
        var a10 = SIMD8<Float>(), a11 = SIMD8<Float>(), a12 = SIMD8<Float>(), a13 = SIMD8<Float>()
        let w0 = w, w1 = w + k, w2 = w + 2 * k, w3 = w + 3 * k
        var i = 0
        while i + 8 <= k {
            let u = load8(x0 + i), v = load8(x1 + i)
            let b0 = load8(w0 + i), b1 = load8(w1 + i), b2 = load8(w2 + i), b3 = load8(w3 + i)
            a00 += u * b0; a01 += u * b1; a02 += u * b2; a03 += u * b3
            a10 += v * b0; a11 += v * b1; a12 += v * b2; a13 += v * b3
            i += 8
        }
        var s00 = a00.sum(), s01 = a01.sum(), s02 = a02.sum(), s03 = a03.sum()
        var s10 = a10.sum(), s11 = a11.sum(), s12 = a12.sum(), s13 = a13.sum()
        while i < k {
            let u = x0[i], v = x1[i]
            s00 += u * w0[i]; s01 += u * w1[i]; s02 += u * w2[i]; s03 += u * w3[i]
            s10 += v * w0[i]; s11 += v * w1[i]; s12 += v * w2[i]; s13 += v * w3[i]
            i += 1
        }
        y0[0] = s00; y0[1] = s01; y0[2] = s02; y0[3] = s03
        y1[0] = s10; y1[1] = s11; y1[2] = s12; y1[3] = s13
    }

    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ k: Int) -> Float {
        var a0 = SIMD8<Float>(), a1 = SIMD8<Float>()
        var i = 0
        while i + 16 <= k {
            a0 += load8(a + i) * load8(b + i)
            a1 += load8(a + i + 8) * load8(b + i + 8)
            i += 16
        }
        while i + 8 <= k { a0 += load8(a + i) * load8(b + i); i += 8 }
        var s = (a0 + a1).sum()
        while i < k { s += a[i] * b[i]; i += 1 }
        return s
    }
}
