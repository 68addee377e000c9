import GPU

/// Small CUDA kernels for checking and measuring memory: fill and check a seeded pattern,
/// copy, spin, and a decode-style read of K/V rows through a KV view. Self-contained sources
/// (no toolkit headers), so NVRTC compiles them on any machine with a driver and libnvrtc.
public final class MemoryKernels: @unchecked Sendable {
    /// Bytes of one token's K (or V) row in one layer that `kvRead` reads.
    public let rowBytes: Int
    let fill: KernelFunction
    let check: KernelFunction
    let copyVectors: KernelFunction
    let spinKernel: KernelFunction
    let emptyKernel: KernelFunction
    let kvReadKernel: KernelFunction
    let module: KernelModule
    public let compiler: KernelCompiler
    /// Tokens each warp of `kvRead` reads; 8 warps a block.
    public static let tokensPerWarp = 8

    public init(compiler: KernelCompiler, rowBytes: Int) throws {
        precondition(rowBytes > 0 && rowBytes % 16 == 0, "K/V rows must be whole 16-byte vectors")
        self.compiler = compiler
        self.rowBytes = rowBytes
        let program = Self.program(rowBytes: rowBytes)
        module = try compiler.module(source: program.source, name: program.name, options: program.options)
        fill = try module.function(named: "vt_fill")
        check = try module.function(named: "vt_check")
        copyVectors = try module.function(named: "vt_copy")
        spinKernel = try module.function(named: "vt_spin")
        emptyKernel = try module.function(named: "vt_empty")
        kvReadKernel = try module.function(named: "vt_kv_read")
    }

    /// The program for rows of `rowBytes`.
    public static func program(rowBytes: Int) -> KernelSource {
        KernelSource(name: "vtensor_memory_kernels.cu", source: source,
                     options: ["-DROW_VEC=\(rowBytes / 16)", "-DTOK_PER_WARP=\(tokensPerWarp)"])
    }

    private func blocks(_ n: Int, perBlock: Int = 256, cap: Int = 65_535) -> Int {
        max(1, min(cap, (n + perBlock - 1) / perBlock))
    }

    /// Writes the pattern `pattern(seed, i)` into `count` 32-bit words at `address`.
    public func fillPattern(address: UInt64, words count: Int, seed: UInt32, stream: CUDAStream) throws {
        try fill.launch(grid: (blocks(count, cap: 8192), 1, 1), block: (256, 1, 1), stream: stream,
                        arguments: [.pointer(address), .uint64(UInt64(count)), .uint32(seed)])
    }

    /// Adds the number of words differing from the pattern to the 64-bit counter at `mismatches`.
    public func checkPattern(address: UInt64, words count: Int, seed: UInt32, mismatches: UInt64, stream: CUDAStream) throws {
        try check.launch(grid: (blocks(count, cap: 8192), 1, 1), block: (256, 1, 1), stream: stream,
                         arguments: [.pointer(address), .uint64(UInt64(count)), .uint32(seed), .pointer(mismatches)])
    }

    /// Copies `bytes` (a multiple of 16) with 16-byte vector loads and stores.
    public func copy(from source: UInt64, to destination: UInt64, bytes: Int, multiprocessors: Int, stream: CUDAStream) throws {
        precondition(bytes % 16 == 0, "copy size must be a multiple of 16")
        try copyVectors.launch(grid: (multiprocessors * 8, 1, 1), block: (256, 1, 1), stream: stream,
                               arguments: [.pointer(source), .pointer(destination), .uint64(UInt64(bytes / 16))])
    }

    /// One thread that busy-waits `cycles` clock cycles: a stand-in for a model step.
    public func spin(cycles: UInt64, stream: CUDAStream) throws {
        try spinKernel.launch(grid: (1, 1, 1), block: (1, 1, 1), stream: stream, arguments: [.uint64(cycles)])
    }

    /// An empty kernel, for launch-latency measurements.
    public func empty(stream: CUDAStream) throws {
        try emptyKernel.launch(grid: (1, 1, 1), block: (1, 1, 1), stream: stream, arguments: [])
    }

    /// Reads the K and V rows of `tokens` tokens of each request, as a decode step does:
    /// `bases` holds 2 x requests addresses (K then V of each request) in device memory;
    /// token t's row is at base + (t / tokensPerBlock) * blockStride + (t % tokensPerBlock) * tokenStride.
    /// `output` receives one word per warp (an XOR of what it read, so no load is dead).
    public func kvRead(bases: UInt64, requests: Int, tokens: Int, tokenStride: Int, blockStride: Int, tokensPerBlock: Int,
                       output: UInt64, stream: CUDAStream) throws {
        let tokensPerBlockOfThreads = 8 * Self.tokensPerWarp
        try kvReadKernel.launch(grid: ((tokens + tokensPerBlockOfThreads - 1) / tokensPerBlockOfThreads, requests, 1),
                                block: (256, 1, 1), stream: stream,
                                arguments: [.pointer(bases), .int32(Int32(tokens)), .uint64(UInt64(tokenStride)),
                                            .uint64(UInt64(blockStride)), .int32(Int32(tokensPerBlock)), .pointer(output)])
    }

    /// Words of output `kvRead` writes.
    public static func kvReadOutputWords(requests: Int, tokens: Int) -> Int {
        let perBlock = 8 * tokensPerWarp
        return requests * ((tokens + perBlock - 1) / perBlock) * 8
    }

    /// The pattern the kernels write, computed on the host (for read-back checks).
    public static func pattern(seed: UInt32, index: UInt64) -> UInt32 {
        var x = (index &+ 1) &* 0x9E37_79B9_7F4A_7C15 ^ (UInt64(seed) << 32 | UInt64(seed))
        x ^= x >> 31
        x &*= 0xBF58_476D_1CE4_E5B9
        x ^= x >> 29
        return UInt32(truncatingIfNeeded: x ^ (x >> 32))
    }

    static let source = """
    typedef unsigned int u32;
    typedef unsigned long long u64;

    __device__ __forceinline__ u32 vt_pattern(u32 seed, u64 i) {
        u64 x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (((u64)seed << 32) | seed);
        x ^= x >> 31;
        x *= 0xBF58476D1CE4E5B9ull;
        x ^= x >> 29;
        return (u32)(x ^ (x >> 32));
    }

    extern "C" __global__ void vt_fill(u32 *p, u64 n, u32 seed) {
        for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
            p[i] = vt_pattern(seed, i);
    }

    extern "C" __global__ void vt_check(const u32 *p, u64 n, u32 seed, u64 *mismatches) {
        u64 bad = 0;
        for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x)
            bad += p[i] != vt_pattern(seed, i);
        if (bad) atomicAdd(mismatches, bad);
    }

    extern "C" __global__ void vt_copy(const uint4 *__restrict__ src, uint4 *__restrict__ dst, u64 n) {
        const u64 stride = (u64)gridDim.x * blockDim.x;
        u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x;
        for (; i + 3 * stride < n; i += 4 * stride) {
            uint4 a = src[i], b = src[i + stride], c = src[i + 2 * stride], d = src[i + 3 * stride];
            dst[i] = a; dst[i + stride] = b; dst[i + 2 * stride] = c; dst[i + 3 * stride] = d;
        }
        for (; i < n; i += stride) dst[i] = src[i];
    }

    extern "C" __global__ void vt_spin(u64 cycles) {
        long long start = clock64();
        while ((u64)(clock64() - start) < cycles) { }
    }

    extern "C" __global__ void vt_empty() { }

    // One block: 8 warps, each reading TOK_PER_WARP consecutive tokens' K and V rows of one
    // request. All loads of a token batch are issued before any is used.
    extern "C" __global__ void vt_kv_read(const u64 *__restrict__ bases, int tokens, u64 tokenStride,
                                          u64 blockStride, int tokensPerBlock, u32 *out) {
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
        const int request = blockIdx.y;
        const int first = (blockIdx.x * 8 + warp) * TOK_PER_WARP;
        u32 acc = 0;
        for (int c = 0; c < 2; ++c) {
            const char *base = (const char *)bases[2 * request + c];
            uint4 v[TOK_PER_WARP][(ROW_VEC + 31) / 32];
            #pragma unroll
            for (int j = 0; j < TOK_PER_WARP; ++j) {
                const int t = first + j;
                const uint4 *row = (const uint4 *)(base + (u64)(t / tokensPerBlock) * blockStride
                                                        + (u64)(t % tokensPerBlock) * tokenStride);
                #pragma unroll
                for (int k = 0; k < (ROW_VEC + 31) / 32; ++k) {
                    const int e = lane + 32 * k;
                    v[j][k] = (t < tokens && e < ROW_VEC) ? row[e] : make_uint4(0, 0, 0, 0);
                }
            }
            #pragma unroll
            for (int j = 0; j < TOK_PER_WARP; ++j)
                #pragma unroll
                for (int k = 0; k < (ROW_VEC + 31) / 32; ++k)
                    acc ^= v[j][k].x ^ v[j][k].y ^ v[j][k].z ^ v[j][k].w;
        }
        for (int offset = 16; offset > 0; offset >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, offset);
        if (lane == 0) out[(blockIdx.y * gridDim.x + blockIdx.x) * 8 + warp] = acc;
    }
    """
}
