import CQuant
import Foundation
import Models
import VTensor

/// A weight matrix kept in its GGUF block format (32 weights a block) for the CPU: a Q4_1
/// matrix holds 0.625 bytes a weight instead of fp32's 4. Prefill computes on the exactly
/// dequantized values (d x q + m) in Float; decode steps on int8-quantized activations.
public struct QuantizedMatrix: Sendable {
    public enum Format: Sendable {
        case q4_0, q4_1, q8_0

        /// The C kernels' name for it.
        var kernelFormat: Int32 {
            switch self {
            case .q4_0: return Int32(VT_WEIGHTS_Q4_0)
            case .q4_1: return Int32(VT_WEIGHTS_Q4_1)
            case .q8_0: return Int32(VT_WEIGHTS_Q8_0)
            }
        }
    }

    public let format: Format
    public let rows: Int
    public let cols: Int
    /// Row-major blocks: rows x (cols / 32) x blockBytes, either in `owned` or in the mapped file
    /// `mapping` keeps alive (read in place: the blocks cost the process no copy).
    private let owned: [UInt8]
    private let mapping: GGUFFile?
    /// The blocks' address inside `mapping` (0: they are `owned`).
    private let mappedAddress: UInt

    /// Bytes of blocks.
    public var byteCount: Int { rows * rowBytes }

    /// The blocks, row-major.
    public func withBlocks<R>(_ body: (UnsafePointer<UInt8>) throws -> R) rethrows -> R {
        if let mapped = UnsafePointer<UInt8>(bitPattern: mappedAddress) {
            return try withExtendedLifetime(mapping) { try body(mapped) }
        }
        return try owned.withUnsafeBytes { try body($0.baseAddress!.assumingMemoryBound(to: UInt8.self)) }
    }

    public static func blockBytes(_ format: Format) -> Int {
        switch format {
        case .q4_0: return 18
        case .q4_1: return 20
        case .q8_0: return 34
        }
    }

    public var rowBytes: Int { cols / 32 * Self.blockBytes(format) }

    init(format: Format, rows: Int, cols: Int, bytes: [UInt8]) {
        precondition(cols % 32 == 0 && bytes.count == rows * cols / 32 * Self.blockBytes(format), "malformed quantized matrix")
        self.init(format: format, rows: rows, cols: cols, owned: bytes, mapping: nil, mappedAddress: 0)
    }

    private init(format: Format, rows: Int, cols: Int, owned: [UInt8], mapping: GGUFFile?, mappedAddress: UInt) {
        self.format = format
        self.rows = rows
        self.cols = cols
        self.owned = owned
        self.mapping = mapping
        self.mappedAddress = mappedAddress
    }

    /// The tensor's blocks when its type is one this path handles; nil otherwise.
    /// - Parameter rotateHalfHeads: undo llama.cpp's Q/K row permutation for that many heads.
    public init?(file: GGUFFile, info: GGUFTensorInfo, rotateHalfHeads: Int? = nil) {
        let format: Format
        switch info.type {
        case .q4_0: format = .q4_0
        case .q4_1: format = .q4_1
        case .q8_0: format = .q8_0
        default: return nil
        }
        guard info.shape.count == 2, info.shape[0] > 0, info.shape[1] % 32 == 0 else { return nil }
        let rows = info.shape[0], cols = info.shape[1]
        let data = file.data(of: info)
        let rowBytes = cols / 32 * Self.blockBytes(format)
        guard data.count == rows * rowBytes else { return nil }
        guard let heads = rotateHalfHeads else {
            self.init(format: format, rows: rows, cols: cols, owned: [], mapping: file, mappedAddress: UInt(bitPattern: data.baseAddress))
            return
        }
        var bytes = [UInt8](repeating: 0, count: data.count)
        do {
            // Row h*hd + j*hd/2 + i of the result is row h*hd + 2i + j of the file (as GGUFFile.unpermuteQK).
            guard heads > 0, rows % heads == 0, (rows / heads) % 2 == 0 else { return nil }
            let hd = rows / heads, half = hd / 2
            bytes.withUnsafeMutableBytes { dst in
                for h in 0..<heads {
                    for i in 0..<half {
                        for j in 0..<2 {
                            let from = h * hd + 2 * i + j, to = h * hd + j * half + i
                            dst.baseAddress!.advanced(by: to * rowBytes)
                                .copyMemory(from: data.baseAddress!.advanced(by: from * rowBytes), byteCount: rowBytes)
                        }
                    }
                }
            }
        }
        self.init(format: format, rows: rows, cols: cols, bytes: bytes)
    }

    /// y[t][rowOffset + r] = x[t] . row r, for `n` token rows of x (stride cols) and y (stride yStride).
    func multiply(x: UnsafePointer<Float>, n: Int, y: UnsafeMutablePointer<Float>, yStride: Int, rowOffset: Int, threads: Int) {
        Self.multiply([self], x: x, n: n, y: y, yStride: yStride, threads: threads, firstRowOffset: rowOffset)
    }

    /// The matrices stacked by rows (Q, K, V; gate, up) against the same x, in one parallel
    /// region: one hand-off to the worker threads instead of one per matrix. Up to
    /// `dotProductRows` token rows (decode) quantize x to int8 blocks and take integer dot
    /// products with the weight blocks (`vt_gemv_q8`, as llama.cpp's Q8 activations); more
    /// (prefill) go through `vt_gemm` in Float, which dequantizes a panel of rows at a time.
    static func multiply(_ parts: [QuantizedMatrix], x: UnsafePointer<Float>, n: Int, y: UnsafeMutablePointer<Float>, yStride: Int,
                         threads: Int, firstRowOffset: Int = 0) {
        guard let cols = parts.first?.cols, n > 0 else { return }
        precondition(parts.allSatisfy { $0.cols == cols }, "stacked matrices must share their width")
        let blocks = cols / 32
        let direct = n <= dotProductRows
        var q = [Int8](repeating: 0, count: direct ? n * cols : 0)
        var scales = [Float](repeating: 0, count: direct ? 2 * n * blocks : 0)
        var sums = [Int32](repeating: 0, count: direct ? n * blocks : 0)
        if direct {
            q.withUnsafeMutableBufferPointer { qb in
                scales.withUnsafeMutableBufferPointer { sb in
                    sums.withUnsafeMutableBufferPointer { ib in
                        for t in 0..<n {
                            vt_quantize_q8(x + t * cols, Int32(cols), qb.baseAddress! + t * cols, sb.baseAddress! + t * blocks,
                                           sb.baseAddress! + (n + t) * blocks, ib.baseAddress! + t * blocks)
                        }
                    }
                }
            }
        }
        let totalRows = parts.reduce(0) { $0 + $1.rows }
        // Several parts a thread: a thread the OS holds back delays at most one small part.
        let chunks = max(1, min(threads > 1 ? threads * WorkerPool.partsPerThread : 1, totalRows / 16))
        let xa = UInt(bitPattern: x), ya = UInt(bitPattern: y)
        q.withUnsafeBufferPointer { qb in
            scales.withUnsafeBufferPointer { sb in
                sums.withUnsafeBufferPointer { ib in
                    let qa = qb.baseAddress.map { UInt(bitPattern: $0) } ?? 0
                    let sa = sb.baseAddress.map { UInt(bitPattern: $0) } ?? 0
                    let ia = ib.baseAddress.map { UInt(bitPattern: $0) } ?? 0
                    let work: @Sendable (Int) -> Void = { chunk in
                        let x = UnsafePointer<Float>(bitPattern: xa)!, y = UnsafeMutablePointer<Float>(bitPattern: ya)!
                        let first = totalRows * chunk / chunks, last = totalRows * (chunk + 1) / chunks
                        var partStart = 0
                        for part in parts {
                            let lo = max(first, partStart), hi = min(last, partStart + part.rows)
                            if lo < hi {
                                part.withBlocks { base in
                                    let out = y + firstRowOffset + partStart
                                    if direct {
                                        let d = UnsafePointer<Float>(bitPattern: sa)!
                                        vt_gemv_q8(part.format.kernelFormat, base, part.rowBytes, Int32(cols), UnsafePointer<Int8>(bitPattern: qa)!,
                                                   d, d + n * blocks, UnsafePointer<Int32>(bitPattern: ia)!, Int32(n), out, yStride,
                                                   Int32(lo - partStart), Int32(hi - partStart))
                                    } else {
                                        vt_gemm(part.format.kernelFormat, base, part.rowBytes, Int32(cols), x, cols, Int32(n), out, yStride,
                                                Int32(lo - partStart), Int32(hi - partStart))
                                    }
                                }
                            }
                            partStart += part.rows
                        }
                    }
                    WorkerPool.shared.run(parts: chunks, maxThreads: threads, work)
                }
            }
        }
    }

    /// Token rows up to which products read the blocks directly (decode steps).
    static let dotProductRows = 4

    /// Row `row` in Float (an embedding lookup).
    func dequantizeRow(_ row: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(row >= 0 && row < rows, "row \(row) outside 0..<\(rows)")
        withBlocks { vt_dequantize_row(format.kernelFormat, $0 + row * rowBytes, Int32(cols), out) }
    }

}

/// The matrices of a GGUF model in their block formats, per layer and part (Q, K, V; gate, up),
/// where every part of a matrix has a supported format; nil parts fall back to Float.
public struct QuantizedWeights: Sendable {
    public struct Layer: Sendable {
        public var qkv: [QuantizedMatrix]?
        public var output: QuantizedMatrix?
        public var gateUp: [QuantizedMatrix]?
        public var down: QuantizedMatrix?
    }
    public let layers: [Layer]
    /// The LM head (the embedding table when tied).
    public let lmHead: QuantizedMatrix?
    /// The token embedding table, looked up a row at a time.
    public let embedding: QuantizedMatrix?
    /// Whether `lmHead` is the file's `output.weight` (not the tied embedding).
    let lmHeadIsOwnTensor: Bool

    /// Bytes of blocks held (the tied embedding and LM head once).
    public var bytes: Int {
        decodeBytes + (lmHeadIsOwnTensor || lmHead == nil ? embedding?.byteCount ?? 0 : 0)
    }

    /// Bytes of blocks a decode step reads: every layer's matrices and the LM head.
    public var decodeBytes: Int {
        var n = lmHead?.byteCount ?? 0
        for l in layers {
            n += (l.qkv ?? []).reduce(0) { $0 + $1.byteCount } + (l.output?.byteCount ?? 0)
            n += (l.gateUp ?? []).reduce(0) { $0 + $1.byteCount } + (l.down?.byteCount ?? 0)
        }
        return n
    }

    /// Reads the block-format matrices of `file` (nil when none qualifies).
    public init?(file: GGUFFile, config: ModelConfig) {
        let permuted = (file.string("general.architecture") ?? "llama") == "llama"
        func matrix(_ name: String, heads: Int? = nil) -> QuantizedMatrix? {
            guard let info = try? file.tensor(named: name) else { return nil }
            return QuantizedMatrix(file: file, info: info, rotateHalfHeads: permuted ? heads : nil)
        }
        func all(_ parts: [QuantizedMatrix?]) -> [QuantizedMatrix]? {
            let present = parts.compactMap { $0 }
            return present.count == parts.count ? present : nil
        }
        layers = (0..<config.numHiddenLayers).map { i in
            let p = "blk.\(i)."
            return Layer(qkv: all([matrix(p + "attn_q.weight", heads: config.numAttentionHeads),
                                   matrix(p + "attn_k.weight", heads: config.numKeyValueHeads), matrix(p + "attn_v.weight")]),
                         output: matrix(p + "attn_output.weight"),
                         gateUp: all([matrix(p + "ffn_gate.weight"), matrix(p + "ffn_up.weight")]),
                         down: matrix(p + "ffn_down.weight"))
        }
        embedding = matrix("token_embd.weight")
        let own = matrix("output.weight")
        lmHeadIsOwnTensor = own != nil
        lmHead = own ?? (config.tieWordEmbeddings ? embedding : nil)
        if lmHead == nil && embedding == nil
            && layers.allSatisfy({ $0.qkv == nil && $0.output == nil && $0.gateUp == nil && $0.down == nil }) { return nil }
    }

    /// The Hugging Face names of the tensors these blocks stand for: a model that keeps the
    /// blocks need not hold them in Float as well.
    public var coveredTensorNames: Set<String> {
        var names: Set<String> = []
        for (i, l) in layers.enumerated() {
            let p = "model.layers.\(i)."
            if l.qkv != nil { names.formUnion(["q_proj", "k_proj", "v_proj"].map { p + "self_attn.\($0).weight" }) }
            if l.output != nil { names.insert(p + "self_attn.o_proj.weight") }
            if l.gateUp != nil { names.formUnion([p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]) }
            if l.down != nil { names.insert(p + "mlp.down_proj.weight") }
        }
        if embedding != nil { names.insert("model.embed_tokens.weight") }
        if lmHeadIsOwnTensor { names.insert("lm_head.weight") }
        return names
    }

    /// Weights (elements) the covered tensors hold.
    public var coveredParameterCount: Int {
        var n = (embedding.map { $0.rows * $0.cols } ?? 0) + (lmHeadIsOwnTensor ? lmHead.map { $0.rows * $0.cols } ?? 0 : 0)
        for l in layers {
            for m in (l.qkv ?? []) + (l.gateUp ?? []) + [l.output, l.down].compactMap({ $0 }) { n += m.rows * m.cols }
        }
        return n
    }
}
