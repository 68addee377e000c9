import CQuant
import VTensor

/// Y[n, out] = X[n, k] · W[out, k]ᵀ (+ bias), Float, row-major: the CPU backend's linear layers
/// whose weights are Float. Output rows of W are split across threads; `vt_gemm` (C, AVX2 or
/// AVX-512 chosen at run time) computes each part in register tiles of 4 rows by 3 or 6 tokens.
public enum CPUMatmul {
    public static func multiply(x: UnsafePointer<Float>, n: Int, k: Int, w: UnsafePointer<Float>, out: Int,
                                bias: UnsafePointer<Float>? = nil, y: UnsafeMutablePointer<Float>, threads: Int) {
        guard n > 0, out > 0 else { return }
        let blocks = (out + 3) / 4
        // Several parts a thread: a thread the OS holds back delays at most one small part.
        let parts = max(1, min(threads > 1 ? threads * WorkerPool.partsPerThread : 1, blocks))
        let xa = UInt(bitPattern: x), wa = UInt(bitPattern: w), ya = UInt(bitPattern: y)
        let work: @Sendable (Int) -> Void = { part in
            let first = blocks * part / parts * 4, last = min(out, blocks * (part + 1) / parts * 4)
            guard first < last else { return }
            vt_gemm(Int32(VT_WEIGHTS_F32), UnsafePointer<UInt8>(bitPattern: wa)!, k * MemoryLayout<Float>.size, Int32(k),
                    UnsafePointer<Float>(bitPattern: xa)!, k, Int32(n), UnsafeMutablePointer<Float>(bitPattern: ya)!, out,
                    Int32(first), Int32(last))
        }
        WorkerPool.shared.run(parts: parts, maxThreads: threads, work)
        if let bias {
            for t in 0..<n { for o in 0..<out { y[t * out + o] += bias[o] } }
        }
    }
}
