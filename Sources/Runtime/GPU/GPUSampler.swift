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

    /// The mask kernel (structured output): a module of its own, compiled on the first step that
    /// brings a mask, so the sampling of other steps never depends on it.
    public static var maskProgram: KernelSource { KernelSource(name: "vtensor_sampling_masks.cu", source: SamplingKernelSource.maskText, options: []) }

    public let maxRows: Int
    let context: CUDAContext
    let compiler: KernelCompiler
    let kernel: KernelFunction
    let module: KernelModule
    private let rowsBuffer: DeviceBuffer
    private let outBuffer: DeviceBuffer
    private var penaltyBuffer: DeviceBuffer
    /// Per row the index of its mask (-1: none), and the masks: made on the first masked step.
    private var maskKernel: (module: KernelModule, function: KernelFunction)?
    private var maskRowsBuffer: DeviceBuffer?
    private var maskBuffer: DeviceBuffer?
    /// Two of each, used by alternate steps, so queueing step N+1's draws never waits for step
    /// N's copies (which run at N's end) and N's results stay readable while N+1's land.
    private let stagings: [UploadStaging]
    private let results: [DownloadBuffer]
    private var round = 0

    /// A queued sampling round: its results arrive with ``collect(_:)``.
    public struct Pending: Sendable {
        let slot: Int
        let rows: Int
        let wantsLogprobs: [Bool]
    }

    /// Where the kernel writes row r's result record (``DeviceDraw/outBytes`` a row; the picked
    /// id is its first int32). A later step's tokens may be read from here on the device.
    public var resultsAddress: UInt64 { outBuffer.address }

    public init(compiler: KernelCompiler, maxRows: Int) throws {
        precondition(maxRows > 0, "a sampler needs room for at least one row")
        self.maxRows = maxRows
        self.compiler = compiler
        context = compiler.context
        let p = Self.program
        module = try compiler.module(source: p.source, name: p.name, options: p.options)
        kernel = try module.function(named: "vt_sample")
        rowsBuffer = try DeviceBuffer(context: context, bytes: maxRows * DeviceDraw.rowBytes)
        outBuffer = try DeviceBuffer(context: context, bytes: maxRows * DeviceDraw.outBytes)
        penaltyBuffer = try DeviceBuffer(context: context, bytes: 64 << 10)
        let cudaContext = context
        stagings = try (0..<2).map { _ in try UploadStaging(context: cudaContext) }
        results = try (0..<2).map { _ in try DownloadBuffer(context: cudaContext, bytes: maxRows * DeviceDraw.outBytes) }
    }

    /// Device memory the sampler holds.
    public var bytes: Int { rowsBuffer.bytes + outBuffer.bytes + penaltyBuffer.bytes + (maskRowsBuffer?.bytes ?? 0) + (maskBuffer?.bytes ?? 0) }

    /// Samples row r of `logits` ([rows][stride] fp32, ids below `limit`) with `draws[r]`, on
    /// `stream`, and waits for the results. The context must be current.
    public func sample(logits: UInt64, stride: Int, limit: Int, draws: [DeviceDraw], stream: CUDAStream) throws -> [SampledToken] {
        try collect(queue(logits: logits, stride: stride, limit: limit, draws: draws, stream: stream))
    }

    /// Queues the draws and the copy of their results to the host; returns at once. At most two
    /// rounds may be pending: collect a round before queueing the one after the next.
    public func queue(logits: UInt64, stride: Int, limit: Int, draws: [DeviceDraw], stream: CUDAStream) throws -> Pending {
        precondition(draws.count <= maxRows, "\(draws.count) rows exceed the sampler's \(maxRows)")
        precondition(limit > 0 && limit <= stride, "the vocabulary limit must be within the row")
        let slot = round % 2
        round += 1
        let pending = Pending(slot: slot, rows: draws.count, wantsLogprobs: draws.map { $0.parameters.logprobs != nil })
        guard !draws.isEmpty else { return pending }
        let (rows, pairs) = DeviceDraw.pack(draws)
        let pairBytes = pairs.count * 4
        if pairBytes > penaltyBuffer.bytes {
            // The old buffer may still be read by a queued round: replacing it waits for the stream.
            try stream.synchronize()
            penaltyBuffer = try DeviceBuffer(context: context, bytes: pairBytes * 3 / 2)
        }
        let masked = draws.contains { $0.allowed != nil }
        let (maskRows, maskWords) = masked ? DeviceDraw.packMasks(draws, limit: limit) : ([], [])
        let maskRowBytes = maskRows.count * 4, maskBytes = maskWords.count * 8
        if masked { try prepareMasks(bytes: maskBytes, stream: stream) }
        let staging = stagings[slot]
        // Rows, pairs, then (when masked) the mask index per row and the masks, 8-byte aligned.
        let maskRowsAt = rows.count + pairBytes, masksAt = (maskRowsAt + maskRowBytes + 7) / 8 * 8
        let host = try staging.begin(bytes: masked ? masksAt + maskBytes : rows.count + pairBytes)
        rows.withUnsafeBytes { host.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        pairs.withUnsafeBytes { if let base = $0.baseAddress { (host + rows.count).copyMemory(from: base, byteCount: $0.count) } }
        try staging.upload(offset: 0, count: rows.count, to: rowsBuffer.address, stream: stream)
        try staging.upload(offset: rows.count, count: pairBytes, to: penaltyBuffer.address, stream: stream)
        if masked, let maskRowsBuffer, let maskBuffer, let maskKernel {
            maskRows.withUnsafeBytes { (host + maskRowsAt).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            maskWords.withUnsafeBytes { if let base = $0.baseAddress { (host + masksAt).copyMemory(from: base, byteCount: $0.count) } }
            try staging.upload(offset: maskRowsAt, count: maskRowBytes, to: maskRowsBuffer.address, stream: stream)
            try staging.upload(offset: masksAt, count: maskBytes, to: maskBuffer.address, stream: stream)
            try maskKernel.function.launch(grid: (draws.count, 1, 1), block: (256, 1, 1), stream: stream,
                                           arguments: [.pointer(logits), .int32(Int32(stride)), .int32(Int32(limit)),
                                                       .pointer(maskBuffer.address), .pointer(maskRowsBuffer.address)])
        }
        try staging.end(stream: stream)
        try kernel.launch(grid: (draws.count, 1, 1), block: (1024, 1, 1), stream: stream,
                          arguments: [.pointer(logits), .int32(Int32(stride)), .int32(Int32(limit)), .pointer(rowsBuffer.address),
                                      .pointer(penaltyBuffer.address), .pointer(outBuffer.address)])
        try results[slot].download(from: outBuffer.address, bytes: draws.count * DeviceDraw.outBytes, stream: stream)
        return pending
    }

    /// Compiles the mask kernel and makes its buffers on first use; grows the mask buffer to `bytes`.
    private func prepareMasks(bytes: Int, stream: CUDAStream) throws {
        if maskKernel == nil {
            let p = Self.maskProgram
            let module = try compiler.module(source: p.source, name: p.name, options: p.options)
            maskKernel = (module, try module.function(named: "vt_apply_masks"))
        }
        if maskRowsBuffer == nil { maskRowsBuffer = try DeviceBuffer(context: context, bytes: maxRows * 4) }
        if (maskBuffer?.bytes ?? 0) < max(bytes, 8) {
            // The old buffer may still be read by a queued round: replacing it waits for the stream.
            if maskBuffer != nil { try stream.synchronize() }
            maskBuffer = try DeviceBuffer(context: context, bytes: max(bytes * 3 / 2, 64 << 10))
        }
    }

    /// Waits for a queued round's results and reads them.
    public func collect(_ pending: Pending) throws -> [SampledToken] {
        guard pending.rows > 0 else { return [] }
        let buffer = results[pending.slot]
        try buffer.wait()
        let raw = UnsafeRawBufferPointer(start: buffer.pointer, count: pending.rows * DeviceDraw.outBytes)
        return (0..<pending.rows).map { DeviceDraw.unpack(raw, row: $0, wantsLogprobs: pending.wantsLogprobs[$0]) }
    }
}
