/// Element types the KV cache stores.
public enum KVDType: String, Codable, Sendable, CaseIterable {
    case bf16, fp16, fp32
    public var bytes: Int { self == .fp32 ? 4 : 2 }
}

/// The model dimensions that decide the KV cache's size.
public struct KVShape: Codable, Equatable, Sendable, CustomStringConvertible {
    public var layers: Int
    public var kvHeads: Int
    public var headDim: Int
    public var dtype: KVDType

    public init(layers: Int, kvHeads: Int, headDim: Int, dtype: KVDType = .bf16) {
        self.layers = layers
        self.kvHeads = kvHeads
        self.headDim = headDim
        self.dtype = dtype
    }

    /// Bytes of one head of one token (K or V, one layer).
    public var headBytes: Int { headDim * dtype.bytes }
    /// Bytes of K (or V) of one token in one layer: all KV heads.
    public var tokenLayerBytes: Int { kvHeads * headBytes }
    /// Bytes of one token over all layers, K and V.
    public var tokenBytes: Int { 2 * layers * tokenLayerBytes }

    public static let llama3_8B = KVShape(layers: 32, kvHeads: 8, headDim: 128)
    public static let yi34B = KVShape(layers: 60, kvHeads: 8, headDim: 128)
    public static let smolLM2_135M = KVShape(layers: 30, kvHeads: 3, headDim: 64)

    public var description: String { "\(layers) layers x \(kvHeads) KV heads x \(headDim) (\(dtype.rawValue))" }
}

public enum KVComponent: Int, Sendable, CaseIterable {
    case key = 0, value = 1
}

/// How a request's K and V bytes are placed in virtual memory.
///
/// Every layout blocks tokens by chunk: a chunk holds `tokensPerChunk` whole tokens and a
/// token never straddles two chunks, so sharing a prefix and copying a boundary are whole-chunk
/// operations. When the chunk size is a multiple of the block's token bytes, blocks are
/// back to back and the view is an ordinary strided tensor (`KVView.isContiguous`).
public enum KVLayoutKind: String, Codable, Sendable, CaseIterable {
    /// One range per (layer, K|V) per request: [token][head][dim]. One layer's K is contiguous
    /// (best locality); waste up to one chunk per range, i.e. 2 x layers chunks per request.
    case perLayer = "per-layer"
    /// One range per request: [token][layer][K|V][head][dim]. Waste at most one chunk per
    /// request; one layer's K is spread in small pieces at a stride of a whole token.
    case perToken = "per-token"
    /// One range per request; each chunk holds a block of tokens laid out
    /// [layer][K|V][token][head][dim]. Waste of `perToken`; one layer's K of a block is a
    /// contiguous run of tokensPerChunk x kvHeads x headDim elements.
    case blocked = "blocked"

    /// The layout used unless one is asked for. `blocked` wastes no more than `perToken` (under
    /// one chunk per request, prefixes shared at 16-token granularity for Llama-3-8B) and read
    /// as fast as a plain allocation in `vtensor bench vmm` (docs/perf.md, 2026-11-27).
    public static let `default`: KVLayoutKind = .blocked
}

/// Address arithmetic of one layout for one model shape and chunk size.
public struct KVLayout: Sendable, Equatable, CustomStringConvertible {
    public let kind: KVLayoutKind
    public let shape: KVShape
    public let chunkSize: Int
    /// Virtual ranges per request.
    public let rangesPerRequest: Int
    /// Whole tokens per chunk (per range).
    public let tokensPerChunk: Int

    public init(_ kind: KVLayoutKind, shape: KVShape, chunkSize: Int) throws {
        guard shape.layers > 0, shape.kvHeads > 0, shape.headDim > 0 else {
            throw VTensorError.layoutDoesNotFit("model shape \(shape) has a zero dimension")
        }
        self.kind = kind
        self.shape = shape
        self.chunkSize = chunkSize
        let bytesPerTokenInRange = kind == .perLayer ? shape.tokenLayerBytes : shape.tokenBytes
        rangesPerRequest = kind == .perLayer ? 2 * shape.layers : 1
        tokensPerChunk = chunkSize / bytesPerTokenInRange
        guard tokensPerChunk >= 1 else {
            throw VTensorError.layoutDoesNotFit("one token takes \(bytesPerTokenInRange) bytes in a \(kind.rawValue) range, more than a \(chunkSize)-byte chunk")
        }
    }

    /// Which range holds (layer, component), and the byte offset of token 0, head 0 in it.
    public func placement(layer: Int, component: KVComponent) -> (range: Int, offset: Int) {
        precondition(layer >= 0 && layer < shape.layers, "layer \(layer) out of range")
        let slot = 2 * layer + component.rawValue
        switch kind {
        case .perLayer: return (slot, 0)
        case .perToken: return (0, slot * shape.tokenLayerBytes)
        case .blocked: return (0, slot * tokensPerChunk * shape.tokenLayerBytes)
        }
    }

    /// Bytes from one token to the next inside a block.
    public var tokenStride: Int { kind == .perToken ? shape.tokenBytes : shape.tokenLayerBytes }
    public var headStride: Int { shape.headBytes }

    /// Chunks each range needs to hold `tokens` tokens.
    public func chunks(forTokens tokens: Int) -> Int { (tokens + tokensPerChunk - 1) / tokensPerChunk }

    /// Bytes to copy from the start of a chunk so that its first `tokens` tokens are carried
    /// over (all layers, both components, when the range holds them).
    public func boundaryCopyBytes(tokens: Int) -> Int {
        switch kind {
        case .perLayer, .perToken: return tokens * tokenStride
        case .blocked: return chunkSize  // each layer's run starts at its own offset
        }
    }

    /// Bytes of physical memory per token actually holding data, over all ranges.
    public var bytesPerToken: Int { shape.tokenBytes }

    public var description: String {
        "\(kind.rawValue): \(rangesPerRequest) range(s)/request, \(tokensPerChunk) tokens/chunk"
    }
}

/// The contract with attention kernels: where (request, layer, K|V) lives.
///
/// Byte address of token t, head h:
///   base + (t / tokensPerBlock) * blockStride + (t % tokensPerBlock) * tokenStride + h * headStride
/// Tokens 0..<length hold data. Every page a kernel may touch for tokens 0..<readableTokens is
/// mapped for as long as the kernel runs (unmaps wait on fences), so a tile may over-read up to
/// readableTokens without faulting; beyond it, reads must be masked.
public struct KVView: Equatable, Sendable, Codable {
    public var base: UInt64
    public var tokenStride: Int
    public var headStride: Int
    public var blockStride: Int
    public var tokensPerBlock: Int
    public var length: Int
    public var readableTokens: Int

    public init(base: UInt64, tokenStride: Int, headStride: Int, blockStride: Int, tokensPerBlock: Int, length: Int, readableTokens: Int) {
        self.base = base
        self.tokenStride = tokenStride
        self.headStride = headStride
        self.blockStride = blockStride
        self.tokensPerBlock = tokensPerBlock
        self.length = length
        self.readableTokens = readableTokens
    }

    /// Blocks are back to back: a plain strided tensor with `tokenStride`.
    public var isContiguous: Bool { tokensPerBlock * tokenStride == blockStride }

    public func address(token: Int, head: Int) -> UInt64 {
        base + UInt64((token / tokensPerBlock) * blockStride + (token % tokensPerBlock) * tokenStride + head * headStride)
    }
}
