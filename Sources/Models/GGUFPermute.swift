extension GGUFFile {
    /// llama.cpp's converter permutes attn_q / attn_k weight rows per head so its RoPE
    /// can rotate adjacent pairs; HF checkpoints (and vtensor's kernels) use rotate-half.
    /// This undoes it: for `w` row-major [heads * headDim][cols], row h*hd + j*hd/2 + i
    /// of the result is row h*hd + 2*i + j of `w` (i < hd/2, j < 2).
    public static func unpermuteQK(_ w: [Float], heads: Int, cols: Int) throws -> [Float] {
        try reorderRows(w, heads: heads, cols: cols, toRotateHalf: true)
    }

    /// The converter's permutation (HF rotate-half rows to llama.cpp's interleaved rows);
    /// the inverse of `unpermuteQK`.
    public static func permuteQK(_ w: [Float], heads: Int, cols: Int) throws -> [Float] {
        try reorderRows(w, heads: heads, cols: cols, toRotateHalf: false)
    }

    private static func reorderRows(_ w: [Float], heads: Int, cols: Int, toRotateHalf: Bool) throws -> [Float] {
        guard heads > 0, cols > 0, w.count % (heads * cols) == 0, (w.count / (heads * cols)) % 2 == 0 else {
            throw ModelFileError(path: "attention weight", "\(w.count) values do not form \(heads) heads of an even head size with \(cols) columns")
        }
        let hd = w.count / (heads * cols), half = hd / 2
        var out = [Float](repeating: 0, count: w.count)
        w.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                for h in 0..<heads {
                    for i in 0..<half {
                        for j in 0..<2 {
                            let interleaved = h * hd + 2 * i + j, rotateHalf = h * hd + j * half + i
                            let (from, to) = toRotateHalf ? (interleaved, rotateHalf) : (rotateHalf, interleaved)
                            for c in 0..<cols { dst[to * cols + c] = src[from * cols + c] }
                        }
                    }
                }
            }
        }
        return out
    }
}
