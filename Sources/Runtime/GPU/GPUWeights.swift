import Foundation
import GPU
import Kernels
import Models

/// A model's weights on the GPU: matrices in bf16 (row-major [out, in], Q/K/V and gate/up
/// stacked as in `LayerWeights`), norms and biases in fp32, all in one device allocation.
public final class GPUWeights: @unchecked Sendable {
    public struct Layer: Sendable {
        public var inputNorm: UInt64, qkv: UInt64, qkvBias: UInt64?, output: UInt64, outputBias: UInt64?
        public var postAttentionNorm: UInt64, gateUp: UInt64, gateUpBias: UInt64?, down: UInt64, downBias: UInt64?
    }

    public let config: ModelConfig
    public let buffer: DeviceBuffer
    public let embedding: UInt64
    public let layers: [Layer]
    public let finalNorm: UInt64
    /// The LM head (the embedding when tied).
    public let lmHead: UInt64
    /// d/2 fp32 RoPE inverse frequencies.
    public let inverseFrequencies: UInt64
    /// Bytes of weights a decode step reads: every matrix and vector, one embedding row.
    public let bytesReadPerToken: Int
    public var bytes: Int { buffer.bytes }

    /// Lays out every tensor of `config` in one allocation, then fills each through `fill`
    /// (called once per tensor with its name, element count, device address and dtype).
    init(context: CUDAContext, config c: ModelConfig, rope: RoPE,
         fill: (_ name: String, _ count: Int, _ address: UInt64, _ bf16: Bool) throws -> Void) throws {
        config = c
        let h = c.hiddenSize
        let plan = CheckpointLayout.entries(config: c)
        var offsets: [String: Int] = [:]
        var total = 0
        for entry in plan {
            total = (total + 255) / 256 * 256
            offsets[entry.name] = total
            total += entry.count * (entry.bf16 ? 2 : 4)
        }
        buffer = try DeviceBuffer(context: context, bytes: total)
        let base = buffer.address
        func at(_ name: String) -> UInt64 { base + UInt64(offsets[name]!) }
        func maybe(_ name: String) -> UInt64? { offsets[name].map { base + UInt64($0) } }
        embedding = at("embed")
        layers = (0..<c.numHiddenLayers).map { i in
            Layer(inputNorm: at("\(i).inputNorm"), qkv: at("\(i).qkv"), qkvBias: maybe("\(i).qkvBias"), output: at("\(i).output"),
                  outputBias: maybe("\(i).outputBias"), postAttentionNorm: at("\(i).postNorm"), gateUp: at("\(i).gateUp"),
                  gateUpBias: maybe("\(i).gateUpBias"), down: at("\(i).down"), downBias: maybe("\(i).downBias"))
        }
        finalNorm = at("finalNorm")
        lmHead = maybe("lmHead") ?? embedding
        inverseFrequencies = at("invFreq")
        for entry in plan where entry.name != "invFreq" { try fill(entry.name, entry.count, at(entry.name), entry.bf16) }
        try context.copyHostToDevice(destination: inverseFrequencies, from: rope.inverseFrequencies)
        let matrices = plan.filter { $0.bf16 && $0.name != "embed" }.reduce(0) { $0 + $1.count * 2 }
        let vectors = plan.filter { !$0.bf16 }.reduce(0) { $0 + $1.count * 4 }
        bytesReadPerToken = matrices + vectors + h * 2 + (c.tieWordEmbeddings ? c.vocabSize * h * 2 : 0)
    }

    /// Uploads a Hugging Face checkpoint's tensors straight from the mapped files
    /// (`CheckpointLayout`): bf16 tensors are copied as they are, others converted one at a time.
    public convenience init(context: CUDAContext, config: ModelConfig, rope: RoPE, checkpoint: SafeTensorsCheckpoint) throws {
        try self.init(context: context, config: config, rope: rope) { name, count, address, bf16 in
            try CheckpointLayout.forEachPart(of: .init(name: name, count: count, bf16: bf16), config: config, checkpoint: checkpoint) { offset, bytes in
                try context.copyHostToDevice(destination: address + UInt64(offset), source: bytes)
            }
        }
    }

    /// Uploads weights already in host memory.
    public convenience init(context: CUDAContext, weights w: ModelWeights, rope: RoPE) throws {
        try self.init(context: context, config: w.config, rope: rope) { name, count, address, bf16 in
            let values: [Float]
            switch name {
            case "embed": values = w.embedding
            case "finalNorm": values = w.finalNorm
            case "lmHead": values = w.lmHead!
            default:
                let parts = name.split(separator: ".")
                let l = w.layers[Int(parts[0])!]
                switch parts[1] {
                case "inputNorm": values = l.inputNorm
                case "qkv": values = l.qkv
                case "qkvBias": values = l.qkvBias!
                case "output": values = l.output
                case "outputBias": values = l.outputBias!
                case "postNorm": values = l.postAttentionNorm
                case "gateUp": values = l.gateUp
                case "gateUpBias": values = l.gateUpBias!
                case "down": values = l.down
                case "downBias": values = l.downBias!
                default: preconditionFailure("unknown weight \(name)")
                }
            }
            precondition(values.count == count, "weight \(name) has \(values.count) elements, expected \(count)")
            try Self.upload(values, to: address, bf16: bf16, context: context)
        }
    }

    static func upload(_ values: [Float], to address: UInt64, bf16: Bool, context: CUDAContext) throws {
        if bf16 {
            try context.copyHostToDevice(destination: address, from: values.map(HalfFloat.floatToBF16))
        } else {
            try context.copyHostToDevice(destination: address, from: values)
        }
    }
}
