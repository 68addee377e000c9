import GPU
import Kernels

/// Batched sampling on the GPU: one launch picks a token for every row of a step's logits (the
/// CTA-per-row kernel of `SamplingKernelSource`), and the host reads back 176 bytes a row
/// instead of the row's logits (512 KB at a 128k vocabulary). Each row brings its
/// ``DeviceDraw`` (parameters, uniform, penalty pairs) from its sequence's ``Sampler``.
///
/// Buffers for `maxRows` rows are allocated up front; the penalty-pair buffer grows when a
/// step needs more. The penalties are applied to the logits in place.
public final class GPUSampler: @unchecked Sendable {
    public static var program: KernelSource { KernelSource(name: "vtensor_sampling.cu", source: SamplingKernelSource.text, options: []) }

    public let maxRows: Int
    let context: CUDAContext
    let kernel: KernelFunction
    let module: KernelModule
    private let rowsBuffer: DeviceBuffer
    private let outBuffer: DeviceBuffer
    private var penaltyBuffer: DeviceBuffer
    private let staging: UploadStaging

    public init(compiler: KernelCompiler, maxRows: Int) throws {
        precondition(maxRows > 0, "a sampler needs room for at least one row")
        self.maxRows = maxRows
        context = compiler.context
        let p = Self.program
        module = try compiler.module(source: p.source, name: p.name, options: p.options)
        kernel = try module.function(named: "vt_sample")
        rowsBuffer = try DeviceBuffer(context: context, bytes: maxRows * DeviceDraw.rowBytes)
        outBuffer = try DeviceBuffer(context: context, bytes: maxRows * DeviceDraw.outBytes)
        penaltyBuffer = try DeviceBuffer(context: context, bytes: 64 << 10)
        staging = try UploadStaging(context: context)
    }

    /// Device memory the sampler holds.
    public var bytes: Int { rowsBuffer.bytes + outBuffer.bytes + penaltyBuffer.bytes }

    /// Samples row r of `logits` ([rows][stride] fp32, ids below `limit`) with `draws[r]`, on
    /// `stream`, and waits for the results. The context must be current.
    public func sample(logits: UInt64, stride: Int, limit: Int, draws: [DeviceDraw], stream: CUDAStream) throws -> [SampledToken] {
        guard !draws.isEmpty else { return [] }
        precondition(draws.count <= maxRows, "\(draws.count) rows exceed the sampler's \(maxRows)")
        precondition(limit > 0 && limit <= stride, "the vocabulary limit must be within the row")
        let (rows, pairs) = DeviceDraw.pack(draws)
        let pairBytes = pairs.count * 4
        if pairBytes > penaltyBuffer.bytes {
            penaltyBuffer = try DeviceBuffer(context: context, bytes: pairBytes * 3 / 2)
        }
        let host = try staging.begin(bytes: rows.count + pairBytes)
        rows.withUnsafeBytes { host.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        pairs.withUnsafeBytes { if let base = $0.baseAddress { (host + rows.count).copyMemory(from: base, byteCount: $0.count) } }
        try staging.upload(offset: 0, count: rows.count, to: rowsBuffer.address, stream: stream)
        try staging.upload(offset: rows.count, count: pairBytes, to: penaltyBuffer.address, stream: stream)
        try staging.end(stream: stream)
        try kernel.launch(grid: (draws.count, 1, 1), block: (1024, 1, 1), stream: stream,
                          arguments: [.pointer(logits), .int32(Int32(stride)), .int32(Int32(limit)), .pointer(rowsBuffer.address),
                                      .pointer(penaltyBuffer.address), .pointer(outBuffer.address)])
        try stream.synchronize()
        let raw: [UInt8] = try context.copyDeviceToHost(source: outBuffer.address, count: draws.count * DeviceDraw.outBytes)
        return raw.withUnsafeBytes { buffer in
            draws.indices.map { DeviceDraw.unpack(buffer, row: $0, wantsLogprobs: draws[$0].parameters.logprobs != nil) }
        }
    }
}
