import Support
import Foundation
import Kernels
import Models
import VTensor

/// The Llama-family forward pass on the CPU in Float, over a KV cache of virtual tensors on
/// host memory (the same `KVCache` the GPU uses, on the host backend) and `CPUAttention`.
public final class CPUModel: @unchecked Sendable {
    public let weights: ModelWeights
    public let config: ModelConfig
    public let cache: KVCache
    public let threads: Int
    let rope: RoPE
    let attention: AttentionParameters
    private let lock = NSLock()
    /// Matrices in their GGUF block formats: decode steps read the blocks directly (fewer weight
    /// bytes is the whole game there); prefill dequantizes a panel of rows at a time. A Float
    /// matrix of `weights` may be empty only where a block matrix stands in for it.
    public let quantized: QuantizedWeights?

    /// A model over `cache`, which must hold fp32 K/V of this model's shape (see `makeCache`).
    public init(weights: ModelWeights, cache: KVCache, threads: Int = Processors.available, quantized: QuantizedWeights? = nil) throws {
        let c = weights.config
        guard cache.layout.shape == Self.kvShape(c) else {
            throw RuntimeError.invalidRequest("the KV cache holds \(cache.layout.shape); the model needs \(Self.kvShape(c))")
        }
        try Self.checkBlocks(quantized, cover: weights)
        self.quantized = quantized
        self.weights = weights
        config = c
        self.threads = max(1, threads)
        rope = RoPE(config: c.rope, headDim: c.headDim, frequencyFactors: weights.ropeFrequencyFactors)
        attention = AttentionParameters(queryHeads: c.numAttentionHeads, kvHeads: c.numKeyValueHeads, headDim: c.headDim,
                                        dtype: .fp32, window: c.effectiveSlidingWindow)
        self.cache = cache
    }

    /// A model with its own host-memory KV cache.
    /// - Parameters:
    ///   - kvBudgetBytes: the cap on host memory the KV cache may hold.
    ///   - maxTokensPerSequence: address space reserved per sequence (default: the model's context).
    public convenience init(weights: ModelWeights, kvBudgetBytes: Int = 2 << 30, maxTokensPerSequence: Int? = nil,
                            threads: Int = Processors.available, quantized: QuantizedWeights? = nil) throws {
        let cache = try Self.makeCache(config: weights.config, kvBudgetBytes: kvBudgetBytes, maxTokensPerSequence: maxTokensPerSequence)
        try self.init(weights: weights, cache: cache, threads: threads, quantized: quantized)
    }

    /// Every block matrix has the shape its Float twin has, and every empty Float matrix has a twin.
    static func checkBlocks(_ q: QuantizedWeights?, cover w: ModelWeights) throws {
        let c = w.config
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let qRows = c.numAttentionHeads * d, kvRows = c.numKeyValueHeads * d
        func check(_ name: String, _ floats: [Float], _ parts: [QuantizedMatrix]?, _ shapes: [(Int, Int)]) throws {
            if let parts {
                guard parts.count == shapes.count, zip(parts, shapes).allSatisfy({ $0.rows == $1.0 && $0.cols == $1.1 }) else {
                    throw RuntimeError.invalidRequest("the block matrices of \(name) have shapes \(parts.map { [$0.rows, $0.cols] }); the config implies \(shapes.map { [$0.0, $0.1] })")
                }
            } else if floats.isEmpty {
                throw RuntimeError.invalidRequest("\(name) has neither Float weights nor blocks")
            }
        }
        for (i, l) in w.layers.enumerated() {
            let b = q?.layers[i]
            try check("layer \(i) Q/K/V", l.qkv, b?.qkv, [(qRows, h), (kvRows, h), (kvRows, h)])
            try check("layer \(i) attention output", l.output, b?.output.map { [$0] }, [(h, qRows)])
            try check("layer \(i) gate/up", l.gateUp, b?.gateUp, [(f, h), (f, h)])
            try check("layer \(i) down", l.down, b?.down.map { [$0] }, [(h, f)])
        }
        try check("the token embedding", w.embedding, q?.embedding.map { [$0] }, [(c.vocabSize, h)])
        try check("the LM head", w.lmHead ?? w.embedding, q?.lmHead.map { [$0] }, [(c.vocabSize, h)])
    }

    /// The K/V shape the CPU forward pass reads and writes (fp32).
    public static func kvShape(_ c: ModelConfig) -> KVShape {
        KVShape(layers: c.numHiddenLayers, kvHeads: c.numKeyValueHeads, headDim: c.headDim, dtype: .fp32)
    }

    /// A KV cache on host memory (memfd + mmap, the same virtual-memory manager the GPU uses),
    /// capped at `kvBudgetBytes`, reserving `maxTokensPerSequence` tokens of address space a sequence.
    public static func makeCache(config c: ModelConfig, kvBudgetBytes: Int, maxTokensPerSequence: Int? = nil) throws -> KVCache {
        let backend = try HostBackend(capacityBytes: max(kvBudgetBytes, 4 << 20))
        let memory = try VirtualMemory(backend: backend, budget: .bytes(max(kvBudgetBytes, backend.chunkSize)), lowWatermark: 0)
        return try KVCache(shape: kvShape(c), layout: .default, memory: memory, maxTokensPerRequest: maxTokensPerSequence ?? c.maxPositionEmbeddings)
    }

    /// Runs the new tokens of every input through the model and returns the requested logits:
    /// per input, [new tokens or 1][vocab] flattened.
    public func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        lock.lock()
        defer { lock.unlock() }
        let c = config
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize
        let hq = c.numAttentionHeads, hkv = c.numKeyValueHeads
        let qkvWidth = (hq + 2 * hkv) * d
        let n = inputs.reduce(0) { $0 + $1.tokens.count }
        guard !inputs.isEmpty else { return [] }
        let starts = try ForwardStep.begin(inputs, cache: .virtual(cache), vocabularySize: c.vocabSize)

        var x = [Float](repeating: 0, count: n * h)
        var normed = [Float](repeating: 0, count: n * h)
        var qkv = [Float](repeating: 0, count: n * qkvWidth)
        var q = [Float](repeating: 0, count: n * hq * d)
        var k = [Float](repeating: 0, count: n * hkv * d)
        var v = [Float](repeating: 0, count: n * hkv * d)
        var attended = [Float](repeating: 0, count: n * hq * d)
        var projected = [Float](repeating: 0, count: n * h)
        var gateUp = [Float](repeating: 0, count: n * 2 * f)
        var activated = [Float](repeating: 0, count: n * f)

        // Embedding and positions.
        var positions: [Int] = []
        positions.reserveCapacity(n)
        var row = 0
        for (i, input) in inputs.enumerated() {
            for (j, token) in input.tokens.enumerated() {
                if weights.embedding.isEmpty, let table = quantized?.embedding {
                    x.withUnsafeMutableBufferPointer { table.dequantizeRow(token, into: $0.baseAddress! + row * h) }
                } else {
                    weights.embedding.withUnsafeBufferPointer { e in
                        for c in 0..<h { x[row * h + c] = e[token * h + c] }
                    }
                }
                positions.append(starts[i] + j)
                row += 1
            }
        }

        let views = try cache.layerViews(inputs.map(\.id))
        for (layerIndex, layer) in weights.layers.enumerated() {
            var requests: [AttentionRequest] = []
            var queryStart = 0
            for (i, input) in inputs.enumerated() {
                requests.append(AttentionRequest(key: views[i][layerIndex].key, value: views[i][layerIndex].value,
                                                 queryStart: queryStart, queryCount: input.tokens.count))
                queryStart += input.tokens.count
            }
            CPUOps.rmsNorm(x, weight: layer.inputNorm, n: n, width: h, eps: Float(c.rmsNormEps), into: &normed)
            let q8 = quantized?.layers[layerIndex]
            linear(normed, n: n, k: h, layer.qkv, out: qkvWidth, bias: layer.qkvBias, quantized: q8?.qkv, into: &qkv)
            // Split into per-row [heads][d] blocks and rotate Q and K.
            for r in 0..<n {
                let base = r * qkvWidth
                for i in 0..<(hq * d) { q[r * hq * d + i] = qkv[base + i] }
                for i in 0..<(hkv * d) {
                    k[r * hkv * d + i] = qkv[base + hq * d + i]
                    v[r * hkv * d + i] = qkv[base + (hq + hkv) * d + i]
                }
                q.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress! + r * hq * d, heads: hq, position: positions[r]) }
                k.withUnsafeMutableBufferPointer { rope.apply($0.baseAddress! + r * hkv * d, heads: hkv, position: positions[r]) }
            }
            CPUAttention.writeKV(attention, requests: requests, keys: k, values: v)
            q.withUnsafeBytes { qb in
                attended.withUnsafeMutableBytes { ob in
                    CPUAttention.run(attention, requests: requests, queries: qb.baseAddress!, output: ob.baseAddress!, threads: threads)
                }
            }
            linear(attended, n: n, k: hq * d, layer.output, out: h, bias: layer.outputBias, quantized: q8?.output.map { [$0] }, into: &projected)
            for i in 0..<(n * h) { x[i] += projected[i] }

            CPUOps.rmsNorm(x, weight: layer.postAttentionNorm, n: n, width: h, eps: Float(c.rmsNormEps), into: &normed)
            linear(normed, n: n, k: h, layer.gateUp, out: 2 * f, bias: layer.gateUpBias, quantized: q8?.gateUp, into: &gateUp)
            CPUOps.siluAndMultiply(gateUp, n: n, f: f, into: &activated)
            linear(activated, n: n, k: f, layer.down, out: h, bias: layer.downBias, quantized: q8?.down.map { [$0] }, into: &projected)
            for i in 0..<(n * h) { x[i] += projected[i] }
        }

        // Final norm and LM head on the rows whose logits were asked for.
        var wanted: [Int] = []
        var rowStart = 0
        for input in inputs {
            let count = input.tokens.count
            wanted += input.allLogits ? Array(rowStart..<(rowStart + count)) : [rowStart + count - 1]
            rowStart += count
        }
        var gathered = [Float](repeating: 0, count: wanted.count * h)
        for (i, r) in wanted.enumerated() {
            for c in 0..<h { gathered[i * h + c] = x[r * h + c] }
        }
        var selected = [Float](repeating: 0, count: wanted.count * h)
        CPUOps.rmsNorm(gathered, weight: weights.finalNorm, n: wanted.count, width: h, eps: Float(c.rmsNormEps), into: &selected)
        var logits = [Float](repeating: 0, count: wanted.count * c.vocabSize)
        linear(selected, n: wanted.count, k: h, weights.lmHead ?? weights.embedding, out: c.vocabSize, bias: nil,
               quantized: quantized?.lmHead.map { [$0] }, into: &logits)

        var result: [[Float]] = []
        var offset = 0
        for input in inputs {
            let rows = input.allLogits ? input.tokens.count : 1
            result.append(Array(logits[(offset * c.vocabSize)..<((offset + rows) * c.vocabSize)]))
            offset += rows
        }
        return result
    }

    private func linear(_ x: [Float], n: Int, k: Int, _ w: [Float], out: Int, bias: [Float]?, quantized parts: [QuantizedMatrix]? = nil,
                        into y: inout [Float]) {
        if let parts {
            precondition(parts.allSatisfy({ $0.cols == k }) && parts.reduce(0, { $0 + $1.rows }) == out, "block matrices checked at init")
            x.withUnsafeBufferPointer { xb in
                y.withUnsafeMutableBufferPointer { yb in
                    QuantizedMatrix.multiply(parts, x: xb.baseAddress!, n: n, y: yb.baseAddress!, yStride: out, threads: threads)
                }
            }
            if let bias { for t in 0..<n { for o in 0..<out { y[t * out + o] += bias[o] } } }
            return
        }
        x.withUnsafeBufferPointer { xb in
            w.withUnsafeBufferPointer { wb in
                y.withUnsafeMutableBufferPointer { yb in
                    if let bias {
                        bias.withUnsafeBufferPointer { bb in
                            CPUMatmul.multiply(x: xb.baseAddress!, n: n, k: k, w: wb.baseAddress!, out: out,
                                               bias: bb.baseAddress!, y: yb.baseAddress!, threads: threads)
                        }
                    } else {
                        CPUMatmul.multiply(x: xb.baseAddress!, n: n, k: k, w: wb.baseAddress!, out: out,
                                           y: yb.baseAddress!, threads: threads)
                    }
                }
            }
        }
    }
}

/// Errors of the runtime that are about a request, not a file.
public enum RuntimeError: Error, CustomStringConvertible, Equatable {
    case invalidRequest(String)
    case contextExceeded(tokens: Int, limit: Int)
    case unsupported(String)

    public var description: String {
        switch self {
        case .invalidRequest(let m): return "invalid request: \(m)"
        case .contextExceeded(let tokens, let limit):
            return "the sequence would hold \(tokens) tokens; the model's context is \(limit)"
        case .unsupported(let m): return "unsupported: \(m)"
        }
    }
}
