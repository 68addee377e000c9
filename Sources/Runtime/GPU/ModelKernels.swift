import GPU
import Kernels

/// The model's element-wise kernels (`ModelKernelSource`), with typed launchers.
struct ModelKernels: @unchecked Sendable {
    /// - Parameter earlyWeights: decode matmuls load their first round of weights into registers
    ///   before waiting on the previous kernel (programmatic dependent launch), so the weight
    ///   stream does not stop at kernel boundaries.
    /// - Parameter weightL2Hint: weight loads ask L2 for whole 256-byte blocks.
    static func program(gemvUnroll: Int = 8, earlyWeights: Bool = true, weightL2Hint: Bool = true) -> KernelSource {
        KernelSource(name: "vtensor_model.cu", source: ModelKernelSource.text,
                     options: ["-DGEMV_UNROLL=\(gemvUnroll)", "-DEARLY_WEIGHTS=\(earlyWeights ? 1 : 0)"]
                        + (weightL2Hint ? [] : ["-DWEIGHT_HINT=0"]))
    }

    let module: KernelModule
    let embedKernel, feedKernel, rmsNormKernel, ropeKernel, siluKernel, biasKernel, argmaxKernel, fillKernel, gemvKernel, embedSumsKernel: KernelFunction
    let decodeKernels: [DecodeMatmul: KernelFunction]
    let layerBlockKernel, zeroKernel, skinnyKernel: KernelFunction
    /// Blocks of 128 threads of the persistent layer kernel one SM holds (queried once; nil without the query).
    let layerBlockOccupancy: Int?
    /// The same with each row pair's k range split over two warps.
    let decodeKernelsSplitK: [DecodeMatmul: KernelFunction]
    /// Split k over two warps for matrices of at most this many row pairs (0: never).
    let splitKMaxPairs: Int
    /// The same products and epilogues on tensor cores for 5-16 token rows (`dskinny`).
    let skinnyKernels: [DecodeMatmul: KernelFunction]
    /// Most token rows the fused decode matmuls take.
    static let fusedMaxRows = 16

    /// - Parameters: `prefetchBytesPerRow`, `layerBlocksPerSM` and `splitKMaxPairs` are launch
    ///   settings (see the properties); `GPUModel.Options` holds their defaults.
    init(compiler: KernelCompiler, gemvUnroll: Int = 8, earlyWeights: Bool = true, weightL2Hint: Bool = true,
         prefetchBytesPerRow: Int?, layerBlocksPerSM: Int, splitKMaxPairs: Int) throws {
        self.prefetchBytesPerRow = prefetchBytesPerRow
        self.layerBlocksPerSM = layerBlocksPerSM
        self.splitKMaxPairs = splitKMaxPairs
        let p = Self.program(gemvUnroll: gemvUnroll, earlyWeights: earlyWeights, weightL2Hint: weightL2Hint)
        module = try compiler.module(source: p.source, name: p.name, options: p.options)
        embedKernel = try module.function(named: "vt_embed")
        feedKernel = try module.function(named: "vt_feed_tokens")
        rmsNormKernel = try module.function(named: "vt_rmsnorm")
        ropeKernel = try module.function(named: "vt_rope_split")
        siluKernel = try module.function(named: "vt_silu_mul")
        biasKernel = try module.function(named: "vt_add_bias")
        argmaxKernel = try module.function(named: "vt_argmax")
        fillKernel = try module.function(named: "vt_fill_normal_bf16")
        gemvKernel = try module.function(named: "vt_gemv")
        skinnyKernel = try module.function(named: "vt_skinny")
        embedSumsKernel = try module.function(named: "vt_embed_sums")
        layerBlockKernel = try module.function(named: "vt_decode_layer_block")
        layerBlockOccupancy = try? layerBlockKernel.maxActiveBlocksPerMultiprocessor(blockSize: 128)
        zeroKernel = try module.function(named: "vt_zero_words")
        decodeKernels = [
            .logits: try module.function(named: "vt_dgemv_logits"),
            .residual: try module.function(named: "vt_dgemv_residual"),
            .qkvRoPE: try module.function(named: "vt_dgemv_qkv_rope"),
            .swiGLU: try module.function(named: "vt_dgemv_swiglu"),
        ]
        skinnyKernels = [
            .logits: try module.function(named: "vt_dskinny_logits"),
            .residual: try module.function(named: "vt_dskinny_residual"),
            .qkvRoPE: try module.function(named: "vt_dskinny_qkv_rope"),
            .swiGLU: try module.function(named: "vt_dskinny_swiglu"),
        ]
        decodeKernelsSplitK = [
            .logits: try module.function(named: "vt_dgemv_logits_k2"),
            .residual: try module.function(named: "vt_dgemv_residual_k2"),
            .qkvRoPE: try module.function(named: "vt_dgemv_qkv_rope_k2"),
            .swiGLU: try module.function(named: "vt_dgemv_swiglu_k2"),
        ]
    }

    /// The fused decode matmuls (see ModelKernelSource). Inputs are bf16 rows; with `sumsIn`,
    /// each token's products are scaled by its RMSNorm factor.
    enum DecodeMatmul: Hashable {
        /// fp32 logits.
        case logits
        /// residual += product; sums of squares and xw = bf16(residual * norm) out.
        case residual
        /// Q to `output`, K/V into the cache, with bias and RoPE.
        case qkvRoPE
        /// Rows [gate | up]; silu(gate) * up out (bf16, out/2 wide).
        case swiGLU
    }

    func decodeMatmul(_ kind: DecodeMatmul, weight: UInt64, out: Int, k: Int, rows: Int, input: UInt64, sumsIn: UInt64 = 0, eps: Float = 0,
                      output: UInt64, sumsOut: UInt64 = 0, xw: UInt64 = 0, norm: UInt64 = 0, bias: UInt64? = nil, positions: UInt64 = 0,
                      inverseFrequencies: UInt64 = 0, rowAddresses: UInt64 = 0, hq: Int = 0, hkv: Int = 0, d: Int = 0,
                      dependent: Bool = false, stream: CUDAStream) throws {
        precondition(rows >= 1 && rows <= Self.fusedMaxRows && k % 8 == 0, "decode matmuls take 1-16 rows and k a multiple of 8")
        // Up to 4 rows: the GEMV kernels (2 rows a warp); 5-16: the tensor-core ones (16 rows a CTA of 8 warps).
        let kernel: KernelFunction, grid: (Int, Int, Int), block: (Int, Int, Int)
        if rows > 4 {
            precondition(k % 32 == 0, "decode matmuls of more than 4 rows need k a multiple of 32")
            kernel = skinnyKernels[kind]!
            grid = ((out + 15) / 16, 1, 1)
            block = (256, 1, 1)
        } else {
            let pairs = (out + 1) / 2
            let split = pairs <= splitKMaxPairs && k % 16 == 0 ? 2 : 1
            kernel = split == 2 ? decodeKernelsSplitK[kind]! : decodeKernels[kind]!
            grid = ((pairs * split + 3) / 4, 1, 1)
            block = (128, 1, 1)
        }
        let arguments: [KernelArgument] = [
            .pointer(weight), .int32(Int32(out)), .int32(Int32(k)), .int32(Int32(rows)), .pointer(input),
            .pointer(sumsIn), .float32(eps), .pointer(output), .pointer(sumsOut), .pointer(xw), .pointer(norm),
            .pointer(bias ?? 0), .pointer(positions), .pointer(inverseFrequencies), .pointer(rowAddresses),
            .int32(Int32(hq)), .int32(Int32(hkv)), .int32(Int32(d)), .int32(Int32(rows > 4 ? 0 : prefetchBytes(rows: out, k: k))),
        ]
        if dependent {
            try kernel.launchDependent(grid: grid, block: block, stream: stream, arguments: arguments)
        } else {
            try kernel.launch(grid: grid, block: block, stream: stream, arguments: arguments)
        }
    }

    /// Bytes of each weight row a decode matmul pulls towards L2 before waiting on the previous
    /// kernel: whole rows while the matrix's share stays within ~32 MiB (under H100's 50 MB L2),
    /// never less than one round of loads (4 KiB).
    func prefetchBytes(rows: Int, k: Int) -> Int {
        if let fixed = prefetchBytesPerRow { return min(k * 2, fixed) }
        let budget = 32 << 20
        return min(k * 2, max(4096, budget / max(rows, 1) / 128 * 128))
    }

    /// A fixed prefetch per weight row (bytes) instead of the L2 budget rule (nil: the rule);
    /// `GPUModel.Options.prefetchBytesPerRow` says why the default is 0.
    let prefetchBytesPerRow: Int?

    func zeroWords(_ address: UInt64, count: Int, stream: CUDAStream) throws {
        try zeroKernel.launch(grid: (1, 1, 1), block: (256, 1, 1), stream: stream, arguments: [.pointer(address), .int32(Int32(count))])
    }

    /// Most blocks per SM the persistent layer kernel uses (0: as many as the occupancy allows).
    let layerBlocksPerSM: Int

    /// Blocks of the persistent layer kernel: all resident at once (cooperative launch).
    func layerBlockGrid() throws -> Int {
        guard let perSM = layerBlockOccupancy else {
            throw RuntimeError.unsupported("the persistent layer kernel needs the driver's occupancy query")
        }
        let chosen = layerBlocksPerSM > 0 ? min(layerBlocksPerSM, perSM) : perSM
        return layerBlockKernel.module.context.device.multiprocessorCount * max(1, chosen)
    }

    func layerBlock(output: UInt64, gateUp: UInt64, down: UInt64, nextQKV: UInt64?, attended: UInt64, residual: UInt64, xw: UInt64,
                    activated: UInt64, q: UInt64, postNorm: UInt64, nextNorm: UInt64, sumsPost: UInt64, sumsNext: UInt64,
                    qkvBias: UInt64?, positions: UInt64, inverseFrequencies: UInt64, nextRowAddresses: UInt64, barrier: UInt64,
                    h: Int, f: Int, hq: Int, hkv: Int, d: Int, rows: Int, eps: Float, stream: CUDAStream) throws {
        precondition(rows >= 1 && rows <= 4 && h % 8 == 0 && f % 8 == 0 && (hq * d) % 8 == 0, "layer block shape")
        try layerBlockKernel.launchCooperative(
            grid: (try layerBlockGrid(), 1, 1), block: (128, 1, 1), stream: stream,
            arguments: [.pointer(output), .pointer(gateUp), .pointer(down), .pointer(nextQKV ?? 0), .pointer(attended), .pointer(residual),
                        .pointer(xw), .pointer(activated), .pointer(q), .pointer(postNorm), .pointer(nextNorm), .pointer(sumsPost),
                        .pointer(sumsNext), .pointer(qkvBias ?? 0), .pointer(positions), .pointer(inverseFrequencies),
                        .pointer(nextRowAddresses), .pointer(barrier), .int32(Int32(h)), .int32(Int32(f)), .int32(Int32(hq)),
                        .int32(Int32(hkv)), .int32(Int32(d)), .int32(Int32(rows)), .float32(eps)])
    }

    func embedSums(table: UInt64, tokens: UInt64, x: UInt64, rows: Int, hidden: Int, sums: UInt64, slots: Int, xw: UInt64, norm: UInt64,
                   stream: CUDAStream) throws {
        try embedSumsKernel.launch(grid: (rows, 1, 1), block: (256, 1, 1), stream: stream,
                                   arguments: [.pointer(table), .pointer(tokens), .pointer(x), .int32(Int32(hidden)), .pointer(sums),
                                               .int32(Int32(slots)), .int32(Int32(rows)), .pointer(xw), .pointer(norm)])
    }

    /// y[tokens][out] = x[tokens][k] · W[out][k]ᵀ for tokens <= 4; mode 0: bf16 y, 1: fp32 y, 2: fp32 y +=.
    func gemv(weight: UInt64, input: UInt64, output: UInt64, tokens: Int, out: Int, k: Int, mode: Int, stream: CUDAStream) throws {
        precondition(tokens >= 1 && tokens <= 4 && k % 8 == 0, "gemv takes 1-4 rows and k a multiple of 8")
        let rowsPerBlock = 4 * 2
        try gemvKernel.launch(grid: ((out + rowsPerBlock - 1) / rowsPerBlock, 1, 1), block: (128, 1, 1), stream: stream,
                              arguments: [.pointer(weight), .pointer(input), .pointer(output), .int32(Int32(tokens)),
                                          .int32(Int32(out)), .int32(Int32(k)), .int32(Int32(mode))])
    }

    /// Most token rows the model sends to `skinny` (the kernel takes up to 64): measured against
    /// cuBLASLt on H100 (docs/perf.md), it wins by 12/8/5% at 5/8/16 rows and loses at 32 and 64.
    static let skinnyMaxTokens = 16

    /// output[tokens, out] (bf16 =, fp32 =, fp32 +=: mode 0, 1, 2) = input[tokens, k] · weight[out, k]ᵀ on
    /// tensor cores for up to 64 token rows (`vt_skinny`): 16 weight rows a CTA, k split over its 8 warps.
    func skinny(weight: UInt64, input: UInt64, output: UInt64, tokens: Int, out: Int, k: Int, mode: Int, stream: CUDAStream) throws {
        precondition(tokens >= 1 && tokens <= 64 && k % 32 == 0, "skinny takes 1-64 rows and k a multiple of 32")
        try skinnyKernel.launch(grid: ((out + 15) / 16, 1, 1), block: (256, 1, 1), stream: stream,
                                arguments: [.pointer(weight), .pointer(input), .pointer(output), .int32(Int32(out)), .int32(Int32(k)),
                                            .int32(Int32(tokens)), .int32(Int32(mode))])
    }

    private func grid(_ count: Int) -> Int { max(1, min(65_535, (count + 255) / 256)) }

    func embed(table: UInt64, tokens: UInt64, x: UInt64, rows: Int, hidden: Int, stream: CUDAStream) throws {
        try embedKernel.launch(grid: (rows, 1, 1), block: (256, 1, 1), stream: stream,
                               arguments: [.pointer(table), .pointer(tokens), .pointer(x), .int32(Int32(hidden))])
    }

    /// tokens[dst] = the id in the `src`-th record of `picks` (`strideBytes` apart), for each of
    /// the `count` (dst, src) int32 pairs at `pairs`.
    func feedTokens(tokens: UInt64, pairs: UInt64, count: Int, picks: UInt64, strideBytes: Int, stream: CUDAStream) throws {
        guard count > 0 else { return }
        precondition(strideBytes % 4 == 0, "records must be int32-aligned")
        try feedKernel.launch(grid: ((count + 127) / 128, 1, 1), block: (128, 1, 1), stream: stream,
                              arguments: [.pointer(tokens), .pointer(pairs), .pointer(picks), .int32(Int32(strideBytes / 4)), .int32(Int32(count))])
    }

    func rmsNorm(x: UInt64, weight: UInt64, out: UInt64, rows: Int, rowIndex: UInt64?, hidden: Int, eps: Float, stream: CUDAStream) throws {
        try rmsNormKernel.launch(grid: (rows, 1, 1), block: (hidden >= 2048 ? 512 : 256, 1, 1), stream: stream,
                                 arguments: [.pointer(x), .pointer(weight), .pointer(out), .pointer(rowIndex ?? 0),
                                             .int32(Int32(hidden)), .float32(eps)])
    }

    func ropeSplit(qkv: UInt64, bias: UInt64?, positions: UInt64, inverseFrequencies: UInt64, q: UInt64, rowAddresses: UInt64,
                   rows: Int, hq: Int, hkv: Int, d: Int, stream: CUDAStream) throws {
        try ropeKernel.launch(grid: (rows, 1, 1), block: (256, 1, 1), stream: stream,
                              arguments: [.pointer(qkv), .pointer(bias ?? 0), .pointer(positions), .pointer(inverseFrequencies),
                                          .pointer(q), .pointer(rowAddresses), .int32(Int32(hq)), .int32(Int32(hkv)), .int32(Int32(d))])
    }

    func siluMultiply(gateUp: UInt64, bias: UInt64?, out: UInt64, rows: Int, f: Int, stream: CUDAStream) throws {
        precondition(f % 8 == 0, "SwiGLU works on 8-element vectors")
        let total = rows * f
        try siluKernel.launch(grid: (grid(total / 8), 1, 1), block: (256, 1, 1), stream: stream,
                              arguments: [.pointer(gateUp), .pointer(bias ?? 0), .pointer(out), .int32(Int32(f)), .uint64(UInt64(total))])
    }

    func addBias(x: UInt64, bias: UInt64, width: Int, count: Int, stream: CUDAStream) throws {
        try biasKernel.launch(grid: (grid(count), 1, 1), block: (256, 1, 1), stream: stream,
                              arguments: [.pointer(x), .pointer(bias), .int32(Int32(width)), .uint64(UInt64(count))])
    }

    func argmax(logits: UInt64, rows: Int, vocab: Int, limit: Int, out: UInt64, stream: CUDAStream) throws {
        try argmaxKernel.launch(grid: (rows, 1, 1), block: (1024, 1, 1), stream: stream,
                                arguments: [.pointer(logits), .int32(Int32(vocab)), .int32(Int32(limit)), .pointer(out)])
    }

    func fillNormal(address: UInt64, count: Int, seed: UInt32, std: Float, stream: CUDAStream) throws {
        try fillKernel.launch(grid: (min(8192, (count + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                              arguments: [.pointer(address), .uint64(UInt64(count)), .uint32(seed), .float32(0), .float32(std)])
    }
}
