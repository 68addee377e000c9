import GPU
import VTensor

/// Where K/V rows are, shared by every request of a launch: strides and the block size (with
/// its fast divisor). Virtual views: blocks are chunks; paged: blocks are pages, reached
/// through each request's block table.
public struct DecodeKVGeometry: Sendable, Equatable {
    public var tokenStride: Int
    public var headStride: Int
    public var blockStride: Int
    public var tokensPerBlock: Int
    public var divisor: DecodeFastDivisor

    public init(tokenStride: Int, headStride: Int, blockStride: Int, tokensPerBlock: Int) {
        precondition(tokenStride % 16 == 0 && headStride % 16 == 0 && blockStride % 16 == 0, "K/V rows must be 16-byte aligned")
        self.tokenStride = tokenStride
        self.headStride = headStride
        self.blockStride = blockStride
        self.tokensPerBlock = tokensPerBlock
        divisor = DecodeFastDivisor(tokensPerBlock)
    }

    /// The geometry every view of `requests` shares (precondition: they share one).
    public init(_ requests: [AttentionRequest]) {
        let first = requests.first?.key ?? KVView(base: 0, tokenStride: 16, headStride: 16, blockStride: 16, tokensPerBlock: 1, length: 0, readableTokens: 0)
        for request in requests {
            for view in [request.key, request.value] {
                precondition(view.tokenStride == first.tokenStride && view.headStride == first.headStride &&
                             view.blockStride == first.blockStride && view.tokensPerBlock == first.tokensPerBlock,
                             "every K/V view of a batch must share its strides")
                precondition(view.base % 16 == 0, "K/V bases must be 16-byte aligned")
            }
        }
        self.init(tokenStride: first.tokenStride, headStride: first.headStride, blockStride: first.blockStride,
                  tokensPerBlock: first.tokensPerBlock)
    }

    public init(_ pool: PagedKVPool) {
        self.init(tokenStride: pool.tokenStride, headStride: pool.headStride, blockStride: pool.pageStride, tokensPerBlock: pool.pageTokens)
    }

    /// Kernel arguments: tokenStride, headStride, blockStride, tokensPerBlock, multiplier, shift.
    var arguments: [KernelArgument] {
        [.uint64(UInt64(tokenStride)), .uint64(UInt64(headStride)), .uint64(UInt64(blockStride)),
         .uint32(UInt32(tokensPerBlock)), .uint32(divisor.multiplier), .uint32(divisor.shift)]
    }
}

/// The per-request table the KV-write and decode kernels read: 32 bytes a request,
/// (a, b, firstPosition, queryStart, queryCount, 0) with a, b = K base, V base (virtual) or
/// block table, 0 (paged).
public enum DecodeRequestTable {
    public static let entryBytes = 32

    public static func pack(_ entries: [(a: UInt64, b: UInt64, length: Int, queryStart: Int, queryCount: Int)]) -> [UInt8] {
        var bytes = [UInt8]()
        bytes.reserveCapacity(entries.count * entryBytes)
        func append<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        for e in entries {
            precondition(e.length < Int(Int32.max) && e.queryStart < Int(Int32.max), "request too large for the kernels")
            append(e.a)
            append(e.b)
            append(Int32(e.length - e.queryCount))
            append(Int32(e.queryStart))
            append(Int32(e.queryCount))
            append(Int32(0))
        }
        return bytes
    }

    public static func pack(_ requests: [AttentionRequest]) -> [UInt8] {
        pack(requests.map { ($0.key.base, $0.value.base, $0.length, $0.queryStart, $0.queryCount) })
    }

    public static func pack(_ requests: [PagedRequest]) -> [UInt8] {
        pack(requests.map { ($0.blockTable, 0, $0.length, $0.queryStart, $0.queryCount) })
    }
}

/// Writes the new K and V rows of a batch ([totalQueries][kvHeads][headDim], dense, in device
/// memory) into the cache at each request's last `queryCount` positions: decode (one row a
/// request), prefill and extend alike. 16-byte copies; one program per addressing mode (the
/// row bytes are a run-time argument).
public final class KVWriteKernel: @unchecked Sendable {
    public let paged: Bool
    public let module: KernelModule
    let kernel: KernelFunction
    let fill: KernelFunction
    private var staging: DeviceBuffer?

    public static func program(paged: Bool) -> KernelSource {
        KernelSource(name: "vtensor_kv_write.cu", source: source, options: ["-DPAGED=\(paged ? 1 : 0)"])
    }

    public static var catalog: [KernelSource] { [program(paged: false), program(paged: true)] }

    public init(compiler: KernelCompiler, paged: Bool = false) throws {
        self.paged = paged
        let program = Self.program(paged: paged)
        module = try compiler.module(source: program.source, name: program.name, options: program.options)
        kernel = try module.function(named: "vt_kv_write")
        fill = try module.function(named: "vt_fill_random16")
    }

    /// Virtual-tensor views. The context must be current; the request table is copied on
    /// `stream` (stream-ordered, so the staging buffer is reused safely).
    public func write(_ p: AttentionParameters, requests: [AttentionRequest], keys: UInt64, values: UInt64, stream: CUDAStream) throws {
        precondition(!paged, "this kernel writes through block tables")
        try launch(p, table: DecodeRequestTable.pack(requests), counts: requests.map(\.queryCount), geometry: DecodeKVGeometry(requests),
                   kPool: 0, vPool: 0, keys: keys, values: values, stream: stream)
    }

    /// Paged: rows go to `pool` through each request's block table.
    public func write(_ p: AttentionParameters, requests: [PagedRequest], pool: PagedKVPool, keys: UInt64, values: UInt64, stream: CUDAStream) throws {
        precondition(paged, "this kernel writes through views")
        precondition(pool.kvHeads == p.kvHeads && pool.headDim == p.headDim && pool.dtype == p.dtype, "pool does not match the parameters")
        try launch(p, table: DecodeRequestTable.pack(requests), counts: requests.map(\.queryCount), geometry: DecodeKVGeometry(pool),
                   kPool: pool.keys, vPool: pool.values, keys: keys, values: values, stream: stream)
    }

    private func launch(_ p: AttentionParameters, table: [UInt8], counts: [Int], geometry: DecodeKVGeometry, kPool: UInt64, vPool: UInt64,
                        keys: UInt64, values: UInt64, stream: CUDAStream) throws {
        let rowBytes = p.headDim * p.dtype.bytes
        precondition(rowBytes % 16 == 0, "rows must be whole 16-byte vectors")
        guard let most = counts.max(), most > 0 else { return }
        precondition(counts.count < 65_536, "at most 65535 requests a launch")
        if (staging?.bytes ?? 0) < table.count {
            staging = try DeviceBuffer(context: module.context, bytes: max(4096, table.count * 2))
        }
        try table.withUnsafeBytes { try module.context.copyHostToDeviceAsync(destination: staging!.address, source: $0, stream: stream) }
        let perRequest = most * p.kvHeads * (rowBytes / 16)
        let blocksX = min(1024, (perRequest + 255) / 256)
        try kernel.launch(grid: (blocksX, counts.count, 1), block: (256, 1, 1), stream: stream,
                          arguments: [.pointer(staging!.address), .pointer(keys), .pointer(values), .pointer(kPool), .pointer(vPool)]
                              + geometry.arguments + [.int32(Int32(p.kvHeads)), .int32(Int32(rowBytes / 16))])
    }

    /// Fills `count` (even) 16-bit elements at `address` with uniform values in
    /// [-amplitude, amplitude) of `dtype` (bf16 or fp16): finite, never all zero.
    public func fillRandom(address: UInt64, count: Int, dtype: KVDType, seed: UInt32, amplitude: Float = 1, stream: CUDAStream) throws {
        precondition(dtype != .fp32 && count % 2 == 0, "fills 16-bit pairs")
        guard count > 0 else { return }
        let pairs = count / 2
        try fill.launch(grid: (min(16_384, (pairs + 255) / 256), 1, 1), block: (256, 1, 1), stream: stream,
                        arguments: [.pointer(address), .uint64(UInt64(pairs)), .uint32(seed), .int32(dtype == .bf16 ? 1 : 0), .float32(amplitude)])
    }

    static let source = #"""
typedef unsigned int u32;
typedef unsigned long long u64;

struct KVRequest { u64 a, b; int first, queryStart, queryCount, reserved; };

__device__ __forceinline__ u32 fast_div(u32 n, u32 magic, u32 shift) { return (u32)(((u64)n * magic) >> shift); }

/* Block y = request; threads stride over (query, head, 16-byte vector). */
extern "C" __global__ void vt_kv_write(const KVRequest *__restrict__ requests, const uint4 *__restrict__ keys,
                                       const uint4 *__restrict__ values, u64 kPool, u64 vPool,
                                       u64 tokenStride, u64 headStride, u64 blockStride, u32 tpb, u32 magic, u32 shift,
                                       int kvHeads, int rowVectors) {
    const KVRequest rq = requests[blockIdx.y];
    const int perToken = kvHeads * rowVectors;
    const int total = rq.queryCount * perToken;
    for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
        const int i = e / perToken, rem = e - i * perToken;
        const int h = rem / rowVectors, v = rem - h * rowVectors;
        const u32 t = (u32)(rq.first + i);
        const u32 b = fast_div(t, magic, shift);
        const u32 inBlock = t - b * tpb;
#if PAGED
        const u64 block = (u64)((const int *)rq.a)[b];
        const u64 kBase = kPool, vBase = vPool;
#else
        const u64 block = b;
        const u64 kBase = rq.a, vBase = rq.b;
        (void)kPool; (void)vPool;
#endif
        const u64 offset = block * blockStride + (u64)inBlock * tokenStride + (u64)h * headStride + 16ull * v;
        const u64 src = (u64)(rq.queryStart + i) * perToken + rem;
        *(uint4 *)(kBase + offset) = keys[src];
        *(uint4 *)(vBase + offset) = values[src];
    }
}

__device__ __forceinline__ u32 hash32(u32 seed, u64 i) {
    u64 x = (i + 1) * 0x9E3779B97F4A7C15ull ^ (((u64)seed << 32) | seed);
    x ^= x >> 31; x *= 0xBF58476D1CE4E5B9ull; x ^= x >> 29;
    return (u32)(x ^ (x >> 32));
}

/* Uniform values in [-amplitude, amplitude), two 16-bit elements a thread-step. */
extern "C" __global__ void vt_fill_random16(u32 *p, u64 pairs, u32 seed, int bf16, float amplitude) {
    for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < pairs; i += (u64)gridDim.x * blockDim.x) {
        const u32 h = hash32(seed, i);
        const float lo = ((float)(h & 0xffffu) * (1.0f / 32768.0f) - 1.0f) * amplitude;
        const float hi = ((float)(h >> 16) * (1.0f / 32768.0f) - 1.0f) * amplitude;
        u32 r;
        if (bf16) asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        else asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
        p[i] = r;
    }
}
"""#
}
