import Foundation
import Models
import XCTest
@testable import Runtime

/// The CPU forward pass against a plain float64 transcription of the Llama equations, and
/// against itself across batching and incremental decoding (which must not change logits).
final class CPUModelTests: XCTestCase {
    static func config(_ extra: String = "", type: String = "llama") throws -> ModelConfig {
        let json = """
            {"model_type":"\(type)","hidden_size":64,"intermediate_size":96,"num_hidden_layers":2,
             "num_attention_heads":4,"num_key_value_heads":2,"vocab_size":97,"max_position_embeddings":64,
             "rms_norm_eps":1e-5,"rope_theta":10000\(extra)}
            """
        return try ModelConfig.decode(Data(json.utf8))
    }

    private func model(_ config: ModelConfig, seed: UInt64 = 3) throws -> CPUModel {
        try CPUModel(weights: .dummy(config: config, seed: seed, std: 0.15), kvBudgetBytes: 64 << 20, threads: 2)
    }

    private func assertClose(_ a: [Float], _ b: [Float], _ tolerance: Double, _ message: String, file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(a.count, b.count, message, file: file, line: line)
        var diff = 0.0, norm = 0.0
        for i in a.indices { diff += Double(a[i] - b[i]) * Double(a[i] - b[i]); norm += Double(b[i]) * Double(b[i]) }
        XCTAssertLessThan((diff / max(norm, 1e-30)).squareRoot(), tolerance, message, file: file, line: line)
    }

    let tokens = [5, 17, 3, 96, 0, 44, 44, 12, 7, 81, 23, 60]

    func testMatchesFloat64Reference() throws {
        for (name, config) in [("llama", try Self.config()),
                               ("qwen2 biases", try Self.config(",\"sliding_window\":3", type: "qwen2")),
                               ("mistral window 4", try Self.config(",\"sliding_window\":4", type: "mistral")),
                               ("tied, head_dim 32", try Self.config(",\"tie_word_embeddings\":true,\"head_dim\":32")),
                               ("llama3 scaling", try Self.config(",\"rope_scaling\":{\"rope_type\":\"llama3\",\"factor\":8,\"low_freq_factor\":1,\"high_freq_factor\":4,\"original_max_position_embeddings\":16}"))] {
            let m = try model(config)
            try m.addSequence(1)
            let logits = try m.reserveAndForward([ForwardInput(id: 1, tokens: tokens, allLogits: true)])[0]
            let reference = ReferenceLlama(weights: m.weights).logits(tokens)
            assertClose(logits, reference.map(Float.init), 1e-5, name)
        }
    }

    func testWindowChangesTheResult() throws {
        let windowed = try model(try Self.config(",\"sliding_window\":4", type: "mistral"))
        let full = try model(try Self.config(type: "mistral"))
        try windowed.addSequence(0)
        try full.addSequence(0)
        let a = try windowed.reserveAndForward([ForwardInput(id: 0, tokens: tokens, allLogits: true)])[0]
        let b = try full.reserveAndForward([ForwardInput(id: 0, tokens: tokens, allLogits: true)])[0]
        let v = 97
        XCTAssertEqual(Array(a[0..<(4 * v)]), Array(b[0..<(4 * v)]), "the first 4 positions see the same keys")
        XCTAssertNotEqual(Array(a[(11 * v)...]), Array(b[(11 * v)...]))
    }

    /// Prefill then decode token by token, and chunked prefill, equal one teacher-forced pass.
    func testIncrementalEqualsFull() throws {
        let m = try model(try Self.config(",\"sliding_window\":5", type: "mistral"))
        try m.addSequence(0)
        let full = try m.reserveAndForward([ForwardInput(id: 0, tokens: tokens, allLogits: true)])[0]
        try m.addSequence(1)
        var pieces = try m.reserveAndForward([ForwardInput(id: 1, tokens: Array(tokens[0..<5]), allLogits: true)])[0]
        pieces += try m.reserveAndForward([ForwardInput(id: 1, tokens: Array(tokens[5..<8]), allLogits: true)])[0]
        for t in tokens[8...] { pieces += try m.reserveAndForward([ForwardInput(id: 1, tokens: [t])])[0] }
        assertClose(pieces, full, 1e-5, "incremental")
        XCTAssertEqual(try m.length(of: 1), tokens.count)
    }

    /// Sequences batched together give the logits they give alone.
    func testBatchEqualsSeparate() throws {
        let m = try model(try Self.config(type: "qwen2"))
        let a = Array(tokens[0..<7]), b = Array(tokens[3...])
        for id in 0..<4 { try m.addSequence(id) }
        let alone = [try m.reserveAndForward([ForwardInput(id: 0, tokens: a, allLogits: true)])[0],
                     try m.reserveAndForward([ForwardInput(id: 1, tokens: b)])[0]]
        let together = try m.reserveAndForward([ForwardInput(id: 2, tokens: a, allLogits: true), ForwardInput(id: 3, tokens: b)])
        assertClose(together[0], alone[0], 1e-6, "first")
        assertClose(together[1], alone[1], 1e-6, "second")
    }

    func testBadRequestsLeaveStateUnchanged() throws {
        let m = try model(try Self.config())
        try m.addSequence(0)
        _ = try m.reserveAndForward([ForwardInput(id: 0, tokens: [1, 2, 3])])
        XCTAssertThrowsError(try m.forward([ForwardInput(id: 0, tokens: [4, 97])])) { error in
            XCTAssertTrue("\(error)".contains("outside the vocabulary"), "\(error)")
        }
        XCTAssertThrowsError(try m.forward([ForwardInput(id: 0, tokens: Array(repeating: 1, count: 62))])) { error in
            XCTAssertEqual(error as? RuntimeError, .contextExceeded(tokens: 65, limit: 64))
        }
        XCTAssertThrowsError(try m.forward([ForwardInput(id: 0, tokens: [])]))
        XCTAssertEqual(try m.length(of: 0), 3)
        try m.freeSequence(0)
        XCTAssertEqual(m.cache.accounting.mappedChunks, 0)
    }
}

/// The Llama decoder written out directly in Double from the weights: no cache, no batching,
/// no shared code with CPUModel beyond the weights and the RoPE frequencies.
struct ReferenceLlama {
    let weights: ModelWeights

    func logits(_ tokens: [Int]) -> [Double] {
        let c = weights.config
        let h = c.hiddenSize, d = c.headDim, f = c.intermediateSize, hq = c.numAttentionHeads, hkv = c.numKeyValueHeads
        let n = tokens.count
        let inv = RoPE(config: c.rope, headDim: d).inverseFrequencies.map(Double.init)
        func norm(_ x: [Double], _ w: [Float]) -> [Double] {
            let ms = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
            return x.indices.map { x[$0] / (ms + c.rmsNormEps).squareRoot() * Double(w[$0]) }
        }
        func linear(_ x: [Double], _ w: [Float], rows: Int, rowOffset: Int = 0, bias: [Float]? = nil, biasOffset: Int = 0) -> [Double] {
            (0..<rows).map { r in
                var s = bias.map { Double($0[biasOffset + r]) } ?? 0
                for i in 0..<x.count { s += x[i] * Double(w[(rowOffset + r) * x.count + i]) }
                return s
            }
        }
        func rotate(_ v: [Double], _ position: Int) -> [Double] {
            var out = v
            for i in 0..<(d / 2) {
                let angle = Double(Float(position) * Float(inv[i]))
                out[i] = v[i] * cos(angle) - v[i + d / 2] * sin(angle)
                out[i + d / 2] = v[i + d / 2] * cos(angle) + v[i] * sin(angle)
            }
            return out
        }
        var x = tokens.map { t in (0..<h).map { Double(weights.embedding[t * h + $0]) } }
        for layer in weights.layers {
            var qs: [[[Double]]] = [], ks: [[[Double]]] = [], vs: [[[Double]]] = []
            for p in 0..<n {
                let xn = norm(x[p], layer.inputNorm)
                qs.append((0..<hq).map { rotate(linear(xn, layer.qkv, rows: d, rowOffset: $0 * d, bias: layer.qkvBias, biasOffset: $0 * d), p) })
                ks.append((0..<hkv).map { rotate(linear(xn, layer.qkv, rows: d, rowOffset: (hq + $0) * d, bias: layer.qkvBias, biasOffset: (hq + $0) * d), p) })
                vs.append((0..<hkv).map { linear(xn, layer.qkv, rows: d, rowOffset: (hq + hkv + $0) * d, bias: layer.qkvBias, biasOffset: (hq + hkv + $0) * d) })
            }
            for p in 0..<n {
                var attended: [Double] = []
                for head in 0..<hq {
                    let g = head / (hq / hkv)
                    let first = c.effectiveSlidingWindow.map { max(0, p - $0 + 1) } ?? 0
                    let scores = (first...p).map { j in (0..<d).reduce(0) { $0 + qs[p][head][$1] * ks[j][g][$1] } / Double(d).squareRoot() }
                    let m = scores.max()!
                    let e = scores.map { exp($0 - m) }
                    let total = e.reduce(0, +)
                    attended += (0..<d).map { i in (first...p).enumerated().reduce(0) { $0 + e[$1.offset] * vs[$1.element][g][i] } / total }
                }
                let o = linear(attended, layer.output, rows: h, bias: layer.outputBias)
                x[p] = x[p].indices.map { x[p][$0] + o[$0] }
            }
            for p in 0..<n {
                let xn = norm(x[p], layer.postAttentionNorm)
                let gate = linear(xn, layer.gateUp, rows: f, bias: layer.gateUpBias)
                let up = linear(xn, layer.gateUp, rows: f, rowOffset: f, bias: layer.gateUpBias, biasOffset: f)
                let act = (0..<f).map { gate[$0] / (1 + exp(-gate[$0])) * up[$0] }
                let down = linear(act, layer.down, rows: h, bias: layer.downBias)
                x[p] = x[p].indices.map { x[p][$0] + down[$0] }
            }
        }
        let head = weights.lmHead ?? weights.embedding
        return x.flatMap { linear(norm($0, weights.finalNorm), head, rows: c.vocabSize) }
    }
}
