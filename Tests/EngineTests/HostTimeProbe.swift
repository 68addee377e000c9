import Foundation
import Models
import Runtime
import Testing
import VTensor
@testable import Engine

/// A model that does nothing: the engine's own host time per step, measured alone.
final class NullModel: LanguageModel {
    let config: ModelConfig
    let kvCache: KVCache
    var maxSequenceTokens: Int { kvCache.maxTokensPerRequest }
    var samplesOnDevice: Bool { true }
    init(config: ModelConfig, cache: KVCache) { self.config = config; kvCache = cache }
    func forward(_ inputs: [ForwardInput]) throws -> [[Float]] { fatalError() }
    func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        let starts = try inputs.map { try kvCache.length(of: $0.id) }
        try kvCache.setLengths(zip(inputs, starts).map { ($0.id, $1 + $0.tokens.count) })
        return inputs.map { SampledToken(id: ($0.tokens.last! * 7 + 3) % 1000 + 5) }
    }
}

@Suite struct HostTimeProbe {
    @Test func probe() throws {
        guard ProcessInfo.processInfo.environment["VTENSOR_PROBE"] != nil else { return }
        let config = try FakeModel.config(context: 4096)
        let backend = try HostBackend(chunkSize: 64 << 10, capacityBytes: 8 << 30)
        let memory = try VirtualMemory(backend: backend, budget: .bytes(6 << 30), lowWatermark: 0)
        let shape = KVShape(layers: 2, kvHeads: 2, headDim: 16, dtype: .fp32)
        let cache = try KVCache(shape: shape, memory: memory, maxTokensPerRequest: 4096)
        let model = NullModel(config: config, cache: cache)
        let engine = try Engine(model: model, cache: cache, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 1024, maxNumBatchedTokens: 8192, asyncMapping: true))
        for _ in 0..<1000 { try engine.add(GenerationRequest(prompt: Array(repeating: 7, count: 500), parameters: SamplingParameters(temperature: 0, maxTokens: 400, ignoreEOS: true))) }
        var times: [Double] = []
        var rows: [Int] = []
        for _ in 0..<200 {
            let t = monotonicNanos()
            _ = engine.step()
            times.append(Double(monotonicNanos() - t) / 1e6)
            rows.append(engine.lastPlan.rows.count)
        }
        let decode = zip(times, rows).filter { $0.1 == 1000 }.map(\.0).sorted()
        print("PROBE decode steps \(decode.count), median \(decode[decode.count / 2]) ms at 1000 rows; first steps \(times.prefix(8).map { String(format: "%.1f", $0) })")
    }
}
