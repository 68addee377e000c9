import Testing
@testable import Kernels
import VTensor

/// A batch on the host backend: real KV cache layout, random data (never zeros).
struct HostBatch {
    let p: AttentionParameters
    let cache: KVCache
    let requests: [AttentionRequest]
    var queries: [UInt8]
    var newKeys: [UInt8]
    var newValues: [UInt8]
    var totalQueries: Int { requests.reduce(0) { $0 + $1.queryCount } }

    /// `shapes`: (KV length, query count) per request.
    /// `chunkSize`: the host backend's chunk, which sets the tokens of a KV block.
    init(_ p: AttentionParameters, shapes: [(length: Int, queries: Int)], layout: KVLayoutKind = .default, seed: UInt64 = 1,
         chunkSize: Int = 64 << 10) throws {
        self.p = p
        let host = try HostBackend(chunkSize: chunkSize, capacityBytes: 1 << 30)
        let memory = try VirtualMemory(backend: host, budget: .bytes(1 << 30))
        let shape = KVShape(layers: 2, kvHeads: p.kvHeads, headDim: p.headDim, dtype: p.dtype)
        cache = try KVCache(shape: shape, layout: layout, memory: memory, maxTokensPerRequest: 4096)
        var rng = SplitMix64(seed: seed)
        let made = try addRequests(to: cache, shapes: shapes, layer: 1)
        let start = made.reduce(0) { $0 + $1.queryCount }
        requests = made
        func randomBytes(_ count: Int) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: count * p.dtype.bytes)
            bytes.withUnsafeMutableBytes { raw in
                for i in 0..<count {
                    HalfFloat.store(Float(rng.nextDouble() * 2 - 1), raw.baseAddress!, i, p.dtype)
                }
            }
            return bytes
        }
        queries = randomBytes(start * p.queryHeads * p.headDim)
        // Fill every cached token: the prefix with random rows, then the new rows via writeKV.
        for request in made {
            for t in 0..<request.firstQueryPosition {
                for h in 0..<p.kvHeads {
                    for view in [request.key, request.value] {
                        let row = randomBytes(p.headDim)
                        row.withUnsafeBytes { UnsafeMutableRawPointer(bitPattern: UInt(view.address(token: t, head: h)))!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                    }
                }
            }
        }
        newKeys = randomBytes(start * p.kvHeads * p.headDim)
        newValues = randomBytes(start * p.kvHeads * p.headDim)
        newKeys.withUnsafeBytes { k in
            newValues.withUnsafeBytes { v in
                CPUAttention.writeKV(p, requests: made, keys: k.baseAddress!, values: v.baseAddress!)
            }
        }
    }

    /// `kernels`: run the tiled fp32 path with these kernels instead of letting `run` choose.
    func runCPU(threads: Int = 1, kernels: CPUAttention.TiledKernels? = nil) -> [Float] {
        var out = [UInt8](repeating: 0xFF, count: totalQueries * p.queryHeads * p.headDim * p.dtype.bytes)
        queries.withUnsafeBytes { q in
            out.withUnsafeMutableBytes { o in
                if let kernels {
                    CPUAttention.runTiled(p, requests: requests, queries: q.baseAddress!.assumingMemoryBound(to: Float.self),
                                          output: o.baseAddress!.assumingMemoryBound(to: Float.self), threads: threads, kernels: kernels)
                } else {
                    CPUAttention.run(p, requests: requests, queries: q.baseAddress!, output: o.baseAddress!, threads: threads)
                }
            }
        }
        return out.withUnsafeBytes { o in (0..<(out.count / p.dtype.bytes)).map { HalfFloat.load(o.baseAddress!, $0, p.dtype) } }
    }

    /// Naive float64 attention, written separately from the oracle: all scores, then softmax.
    func reference() -> [Double] {
        let d = p.headDim
        var out = [Double](repeating: .nan, count: totalQueries * p.queryHeads * d)
        queries.withUnsafeBytes { qRaw in
            for request in requests {
                for i in 0..<request.queryCount {
                    let position = request.length - request.queryCount + i
                    for h in 0..<p.queryHeads {
                        let g = h / (p.queryHeads / p.kvHeads)
                        let q = (0..<d).map { Double(HalfFloat.load(qRaw.baseAddress!, ((request.queryStart + i) * p.queryHeads + h) * d + $0, p.dtype)) }
                        var keys: [Int] = []
                        for j in 0...position where p.window == nil || position - j < p.window! { keys.append(j) }
                        let scores = keys.map { j -> Double in
                            let k = UnsafeRawPointer(bitPattern: UInt(request.key.address(token: j, head: g)))!
                            return (0..<d).reduce(0.0) { $0 + q[$1] * Double(HalfFloat.load(k, $1, p.dtype)) } * Double(p.scale)
                        }
                        let top = scores.max()!
                        let weights = scores.map { Glibc.exp($0 - top) }
                        let total = weights.reduce(0, +)
                        for x in 0..<d {
                            var acc = 0.0
                            for (n, j) in keys.enumerated() {
                                let v = UnsafeRawPointer(bitPattern: UInt(request.value.address(token: j, head: g)))!
                                acc += weights[n] * Double(HalfFloat.load(v, x, p.dtype))
                            }
                            out[((request.queryStart + i) * p.queryHeads + h) * d + x] = acc / total
                        }
                    }
                }
            }
        }
        return out
    }
}

func relativeError(_ out: [Float], _ ref: [Double]) -> Double {
    var diff = 0.0, norm = 0.0
    for (o, r) in zip(out, ref) {
        diff += (Double(o) - r) * (Double(o) - r)
        norm += r * r
    }
    return (diff / norm).squareRoot()
}

import Glibc

@Suite struct CPUAttentionTests {
    static let cases: [(String, AttentionParameters, [(length: Int, queries: Int)])] = [
        ("prefill ragged, GQA 4", AttentionParameters(queryHeads: 8, kvHeads: 2, headDim: 64, dtype: .fp32), [(1, 1), (17, 17), (40, 40)]),
        ("decode ragged, group 7", AttentionParameters(queryHeads: 14, kvHeads: 2, headDim: 32, dtype: .fp32), [(1, 1), (33, 1), (130, 1)]),
        ("extend + decode mixed", AttentionParameters(queryHeads: 4, kvHeads: 4, headDim: 64, dtype: .fp32), [(70, 13), (50, 1), (20, 20)]),
        ("window", AttentionParameters(queryHeads: 6, kvHeads: 3, headDim: 32, dtype: .fp32, window: 7), [(30, 30), (45, 5)]),
    ]

    @Test(arguments: 0..<cases.count)
    func oracleMatchesAFloat64Reference(index: Int) throws {
        let (name, p, shapes) = Self.cases[index]
        let batch = try HostBatch(p, shapes: shapes, seed: UInt64(index + 1))
        let error = relativeError(batch.runCPU(), batch.reference())
        #expect(error < 1e-5, "\(name): relative error \(error)")
    }

    @Test(arguments: [KVDType.bf16, .fp16])
    func halfPrecisionWithinRounding(dtype: KVDType) throws {
        let p = AttentionParameters(queryHeads: 8, kvHeads: 2, headDim: 128, dtype: dtype)
        let batch = try HostBatch(p, shapes: [(65, 65), (200, 1), (100, 37)], seed: 9)
        let error = relativeError(batch.runCPU(threads: 2), batch.reference())
        #expect(error < 1e-2, "relative error \(error)")
        #expect(error > 0, "a half-precision output cannot match float64 exactly")
    }

    @Test(arguments: KVLayoutKind.allCases)
    func everyLayoutGivesTheSameResult(layout: KVLayoutKind) throws {
        let p = AttentionParameters(queryHeads: 4, kvHeads: 2, headDim: 64, dtype: .fp32)
        let batch = try HostBatch(p, shapes: [(300, 3), (90, 90)], layout: layout, seed: 4)
        #expect(relativeError(batch.runCPU(), batch.reference()) < 1e-5)
    }

    @Test func writeKVPlacesRowsAtTheLastPositions() throws {
        let p = AttentionParameters(queryHeads: 2, kvHeads: 2, headDim: 16, dtype: .bf16)
        let batch = try HostBatch(p, shapes: [(10, 3), (5, 5)], seed: 3)
        let rowBytes = p.headDim * 2
        for request in batch.requests {
            for i in 0..<request.queryCount {
                for h in 0..<p.kvHeads {
                    let written = UnsafeRawPointer(bitPattern: UInt(request.key.address(token: request.firstQueryPosition + i, head: h)))!
                    let source = ((request.queryStart + i) * p.kvHeads + h) * rowBytes
                    let expected = Array(batch.newKeys[source..<(source + rowBytes)])
                    #expect(Array(UnsafeRawBufferPointer(start: written, count: rowBytes)) == expected)
                }
            }
        }
    }

    @Test func bf16RoundsToNearestEven() {
        #expect(HalfFloat.floatToBF16(1.0) == 0x3F80)
        #expect(HalfFloat.bf16ToFloat(0x3F80) == 1.0)
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        #expect(HalfFloat.floatToBF16(1 + 1.0 / 256) == 0x3F80)
        #expect(HalfFloat.floatToBF16(1 + 3.0 / 256) == 0x3F82)
        #expect(HalfFloat.floatToBF16(-2.5) == 0xC020)
    }
}
