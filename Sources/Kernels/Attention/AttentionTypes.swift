import VTensor

/// The contract every attention implementation (CPU oracle, GPU kernels over virtual tensors,
/// the paged baseline) computes, for one layer.
///
/// Tensors outside the KV cache are dense, row-major, in `dtype`:
/// - queries Q: [totalQueries][queryHeads][headDim]
/// - output O:  [totalQueries][queryHeads][headDim]
/// - new keys / values (for `writeKV`): [totalQueries][kvHeads][headDim]
///
/// Request r owns query rows `queryStart ..< queryStart + queryCount`. Its KV holds
/// `key.length` (= `value.length`) tokens; the queries are the *last* `queryCount` of them, at
/// positions `key.length - queryCount ..< key.length`. One rule covers every case:
/// - prefill: queryCount == length;
/// - decode: queryCount == 1;
/// - extend (prefix-prefill, chunked prefill, multi-turn reuse): 1 < queryCount < length.
/// The query at position p attends to key positions j with j <= p (causal) and, with a sliding
/// window W, p - j < W. Query head h reads KV head h / (queryHeads / kvHeads) (GQA; any
/// integer ratio, e.g. 7).
public struct AttentionParameters: Sendable, Equatable, Codable, CustomStringConvertible {
    public var queryHeads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var dtype: KVDType
    /// Softmax scale, usually 1 / sqrt(headDim).
    public var scale: Float
    /// Sliding window in tokens (nil: unlimited).
    public var window: Int?

    public init(queryHeads: Int, kvHeads: Int, headDim: Int, dtype: KVDType = .bf16, scale: Float? = nil, window: Int? = nil) {
        precondition(queryHeads > 0 && kvHeads > 0 && queryHeads % kvHeads == 0, "query heads must be a multiple of KV heads")
        precondition(headDim > 0, "head dim must be positive")
        precondition(window.map { $0 > 0 } ?? true, "a window must be positive")
        self.queryHeads = queryHeads
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
        self.scale = scale ?? 1 / Float(headDim).squareRoot()
        self.window = window
    }

    /// Query heads per KV head.
    public var groupSize: Int { queryHeads / kvHeads }

    public var description: String {
        "\(queryHeads)/\(kvHeads) heads x \(headDim) \(dtype.rawValue)" + (window.map { ", window \($0)" } ?? "")
    }
}

/// One request of an attention batch: where its KV lives and which query rows are its own.
public struct AttentionRequest: Sendable, Equatable, Codable {
    public var key: KVView
    public var value: KVView
    public var queryStart: Int
    public var queryCount: Int

    public init(key: KVView, value: KVView, queryStart: Int, queryCount: Int) {
        precondition(key.length == value.length, "K and V must hold the same number of tokens")
        precondition(queryCount >= 0 && queryCount <= key.length, "queries must be the last tokens of the KV")
        self.key = key
        self.value = value
        self.queryStart = queryStart
        self.queryCount = queryCount
    }

    /// KV length.
    public var length: Int { key.length }
    /// Position of this request's first query token.
    public var firstQueryPosition: Int { key.length - queryCount }
}

/// Half-precision conversions shared by the CPU implementations (round to nearest even).
public enum HalfFloat {
    @inline(__always)
    public static func bf16ToFloat(_ bits: UInt16) -> Float { Float(bitPattern: UInt32(bits) << 16) }

    @inline(__always)
    public static func floatToBF16(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(bits >> 16) | 0x40 }
        let rounding = ((bits >> 16) & 1) + 0x7FFF
        return UInt16((bits &+ rounding) >> 16)
    }

    @inline(__always)
    public static func fp16ToFloat(_ bits: UInt16) -> Float { Float(Float16(bitPattern: bits)) }

    @inline(__always)
    public static func floatToFP16(_ value: Float) -> UInt16 { Float16(value).bitPattern }

    /// Reads element `index` of a `dtype` array at `base` as Float.
    @inline(__always)
    public static func load(_ base: UnsafeRawPointer, _ index: Int, _ dtype: KVDType) -> Float {
        switch dtype {
        case .bf16: return bf16ToFloat(base.load(fromByteOffset: 2 * index, as: UInt16.self))
        case .fp16: return fp16ToFloat(base.load(fromByteOffset: 2 * index, as: UInt16.self))
        case .fp32: return base.load(fromByteOffset: 4 * index, as: Float.self)
        }
    }

    /// Writes element `index` of a `dtype` array at `base`.
    @inline(__always)
    public static func store(_ value: Float, _ base: UnsafeMutableRawPointer, _ index: Int, _ dtype: KVDType) {
        switch dtype {
        case .bf16: base.storeBytes(of: floatToBF16(value), toByteOffset: 2 * index, as: UInt16.self)
        case .fp16: base.storeBytes(of: floatToFP16(value), toByteOffset: 2 * index, as: UInt16.self)
        case .fp32: base.storeBytes(of: value, toByteOffset: 4 * index, as: Float.self)
        }
    }
}
