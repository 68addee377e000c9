import Foundation
import Models
import Runtime
import VTensor

/// A model whose "forward pass" writes each new token id into its K slot in the KV cache and
/// picks the next token from the whole history read back from that memory: if the engine maps
/// the wrong chunks, frees memory under a request or mixes requests up, the tokens change.
/// Its next token is `FakeModel.next(after:)` of the history, so a reference needs no model.
final class FakeModel: LanguageModel {
    let config: ModelConfig
    let kvStorage: KVStorage
    /// The virtual-tensor cache (the fake's default storage).
    var kvCache: KVCache { kvStorage.virtualCache! }
    /// Paged storage: the host pool the block tables point into.
    private var pagedPool: UnsafeMutableRawPointer?
    let samplesOnDevice: Bool
    /// Queue steps as a GPU model does: `queueStep` substitutes each fed placeholder with the
    /// previous queued step's pick (the engine never sees it) and holds the picks until `collect`.
    let queuesSteps: Bool
    private var queued = QueuedPicks()
    /// Per queued row that samples: its request and how many generated tokens its draw's
    /// penalty pairs count (so a test sees whether a draw knew the previous pick).
    private(set) var penaltyLog: [(id: Int, counted: Int)] = []
    /// Per queued row that samples under `min_tokens`: its request and whether its draw banned
    /// the stop ids (a bias of minus infinity).
    private(set) var minTokensLog: [(id: Int, banned: Bool)] = []
    var maxSequenceTokens: Int { kvStorage.maxTokensPerRequest }
    /// Device draws keep off ids with a bias of minus infinity (a grammar's refusals): the
    /// history's next token when allowed, else the lowest allowed id.
    var honorsRefusals = false
    /// Each queued step also runs this long as device work on the host backend (a lease that
    /// ends by itself): memory given back meanwhile retires behind it, as behind a GPU step.
    var stepWorkNanos: UInt64 = 0
    /// Tokens written per step, to check budgets from the model's side too.
    private(set) var stepTokenCounts: [Int] = []

    /// vocabulary 50 (token 0 is end-of-sequence); 2 layers x 2 KV heads x 16 fp32 = 512 bytes a token.
    static func config(context: Int) throws -> ModelConfig {
        let json = """
            {"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":2,
             "num_key_value_heads":2,"head_dim":16,"vocab_size":50,"max_position_embeddings":\(context),"rms_norm_eps":1e-5,
             "rope_theta":10000,"eos_token_id":0}
            """
        return try ModelConfig.decode(Data(json.utf8))
    }

    /// A KV cache on host memory with `chunkBytes` chunks (4 KiB: 8 tokens a chunk) and a budget of `budgetChunks`.
    /// `faults`: wrap the host backend to make chosen driver calls fail.
    static func cache(config: ModelConfig, chunkBytes: Int = 4096, budgetChunks: Int, maxTokens: Int, guardTokens: Int = 0,
                      ordersWork: Bool = false, accessPerRun: Bool = false, faults: Bool = false, freshSlabChunks: Int = 0) throws -> KVCache {
        let host = try HostBackend(chunkSize: chunkBytes, capacityBytes: chunkBytes * (budgetChunks + 8), ordersWork: ordersWork)
        let backend: any MemoryBackend = faults ? FaultInjectingBackend(wrapping: host) : host
        let memory = try VirtualMemory(backend: backend, budget: .bytes(chunkBytes * budgetChunks), lowWatermark: 0, accessPerRun: accessPerRun,
                                       unmapPerRun: accessPerRun, freshSlabChunks: freshSlabChunks)
        let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .fp32)
        return try KVCache(shape: shape, layout: .default, memory: memory, maxTokensPerRequest: maxTokens, guardTokens: guardTokens)
    }

    /// - Parameter pagedPages: store KV in the paged baseline's pool of this many 4-token pages
    ///   (host memory) instead of virtual tensors.
    /// - Parameter ordersWork: the host backend models one ordered stream (retiring mappings
    ///   are taken back into use, as on CUDA).
    /// - Parameter accessPerRun: the memory manager grants access, and unmaps, once per run of chunks.
    /// - Parameter freshSlabChunks: chunks a step fills whole map as slabs of up to this many.
    init(context: Int, budgetChunks: Int, samplesOnDevice: Bool = false, queuesSteps: Bool = false, guardTokens: Int = 0,
         pagedPages: Int? = nil, ordersWork: Bool = false, accessPerRun: Bool = false, faults: Bool = false, freshSlabChunks: Int = 0) throws {
        config = try Self.config(context: context)
        if let pagedPages {
            let shape = KVShape(layers: config.numHiddenLayers, kvHeads: config.numKeyValueHeads, headDim: config.headDim, dtype: .fp32)
            let paged = try PagedKVCache(shape: shape, pageTokens: 4, pageCount: pagedPages, maxTokensPerRequest: context, maxRequests: 64)
            kvStorage = .paged(paged)
            pagedPool = UnsafeMutableRawPointer.allocate(byteCount: paged.poolBytes, alignment: 64)
            pagedPool!.initializeMemory(as: UInt8.self, repeating: 0xEE, count: paged.poolBytes)
        } else {
            kvStorage = .virtual(try Self.cache(config: config, budgetChunks: budgetChunks, maxTokens: context, guardTokens: guardTokens,
                                                ordersWork: ordersWork, accessPerRun: accessPerRun, faults: faults, freshSlabChunks: freshSlabChunks))
        }
        self.samplesOnDevice = samplesOnDevice || queuesSteps
        self.queuesSteps = queuesSteps
    }

    func queueStep(_ inputs: [ForwardInput], feeds: [StepFeed], draws: [DeviceDraw], vocabularyLimit: Int) throws -> QueuedStep {
        precondition(queuesSteps && draws.count == inputs.count)
        let step = try queueForward(inputs, feeds: feeds)
        try queueSampling(step, draws: draws, vocabularyLimit: vocabularyLimit)
        return step
    }

    /// A step whose forward pass is queued and whose draws are not: its ids and the history's picks.
    private var forwardOnly: (serial: Int, ids: [Int], picks: [Int])?
    var queuesSamplingLate: Bool { queuesSteps }

    func queueForward(_ inputs: [ForwardInput], feeds: [StepFeed]) throws -> QueuedStep {
        precondition(queuesSteps)
        guard forwardOnly == nil else { throw RuntimeError.invalidRequest("the step before waits for its sampling") }
        let inputs = try queued.feeding(inputs, feeds)
        forwardOnly = (queued.upcomingSerial, inputs.map(\.id), try run(inputs))
        if stepWorkNanos > 0, let host = kvStorage.virtualCache?.memory.backend as? HostBackend {
            _ = host.beginWork(until: monotonicNanos() + stepWorkNanos)
        }
        return QueuedStep(serial: queued.upcomingSerial, rows: inputs.count)
    }

    func queueSampling(_ step: QueuedStep, draws: [DeviceDraw], vocabularyLimit: Int) throws {
        guard let pending = forwardOnly, pending.serial == step.serial, draws.count == pending.ids.count else {
            throw RuntimeError.invalidRequest("no forward pass of step \(step.serial) waits for these draws")
        }
        forwardOnly = nil
        for (id, draw) in zip(pending.ids, draws) where draw.parameters.hasPenalties {
            penaltyLog.append((id, draw.penalties.reduce(0) { $0 + Int($1.y) }))
        }
        for (id, draw) in zip(pending.ids, draws) where draw.parameters.minTokens > 0 {
            minTokensLog.append((id, draw.biases.contains { $0.value == -.infinity }))
        }
        _ = queued.append(zip(pending.picks, draws).map { SampledToken(id: refusing($0, $1)) })
    }

    /// `pick`, or the lowest id the draw does not refuse when it refuses `pick` (with
    /// `honorsRefusals`): a bias of minus infinity, or a clear bit of its mask.
    private func refusing(_ pick: Int, _ draw: DeviceDraw) -> Int {
        guard honorsRefusals else { return pick }
        let refused = Set(draw.biases.filter { $0.value == -.infinity }.map(\.id))
        func allowed(_ id: Int) -> Bool { !refused.contains(id) && (draw.allowed.map { DeviceDraw.allows($0, id) } ?? true) }
        guard !allowed(pick) else { return pick }
        return (0..<config.vocabSize).first(where: allowed) ?? pick
    }

    func collect(_ step: QueuedStep) throws -> [SampledToken] { try queued.collect(step) }

    /// The next token after `history`: a hash of every token and its position.
    static func next(after history: [Int], vocabulary: Int = 50) -> Int {
        var h: UInt64 = 1469598103934665603
        for (i, t) in history.enumerated() { h = (h ^ UInt64(t &* 131 &+ i)) &* 1099511628211 }
        return Int(h % UInt64(vocabulary))
    }

    deinit { pagedPool?.deallocate() }

    /// Token t's K of head 1 in layer 1 in page `page` of the paged pool.
    func pagedKeySlot(page: Int32, token t: Int) -> UnsafeMutablePointer<Int32> {
        let paged = kvStorage.pagedCache!, shape = paged.shape
        let offset = 2 * 1 * paged.pageCount * paged.pageBytes + Int(page) * paged.pageBytes + (t % paged.pageTokens) * shape.tokenLayerBytes + shape.headBytes
        return (pagedPool! + offset).assumingMemoryBound(to: Int32.self)
    }

    /// Where token t's K of head 1 in layer 1 lives for request `id`.
    private func keySlot(_ id: Int, token t: Int) throws -> UnsafeMutablePointer<Int32> {
        if let paged = kvStorage.pagedCache {
            let pages = try paged.blockTable(of: id).pages
            let shape = paged.shape
            // Pools: [layer][K|V][page][token][head][dim].
            let keysOfLayer1 = 2 * 1 * paged.pageCount * paged.pageBytes
            let offset = keysOfLayer1 + Int(pages[t / paged.pageTokens]) * paged.pageBytes + (t % paged.pageTokens) * shape.tokenLayerBytes + shape.headBytes
            return (pagedPool! + offset).assumingMemoryBound(to: Int32.self)
        }
        let view = try kvCache.view(id, layer: 1, component: .key)
        return UnsafeMutablePointer<Int32>(bitPattern: UInt(view.address(token: t, head: 1)))!
    }

    func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        try run(inputs).map { token in
            var row = [Float](repeating: 0, count: config.vocabSize)
            row[token] = 10
            return row
        }
    }

    func forwardAndSample(_ inputs: [ForwardInput], draws: [DeviceDraw], vocabularyLimit: Int) throws -> [SampledToken] {
        precondition(draws.count == inputs.count)
        return zip(try run(inputs), draws).map { SampledToken(id: refusing($0, $1)) }
    }

    private func run(_ inputs: [ForwardInput]) throws -> [Int] {
        guard Set(inputs.map(\.id)).count == inputs.count else { throw RuntimeError.invalidRequest("a sequence twice in one step") }
        if let paged = kvStorage.pagedCache {
            // Pages shared in part: their copies first, in every layer's K and V (as the GPU model).
            for copy in paged.takePageCopies() {
                for pool in 0..<(2 * paged.shape.layers) {
                    let base = pagedPool! + pool * paged.pageCount * paged.pageBytes
                    (base + Int(copy.destination) * paged.pageBytes).copyMemory(from: base + Int(copy.source) * paged.pageBytes, byteCount: paged.pageBytes)
                }
            }
        }
        let starts = try inputs.map { try kvStorage.length(of: $0.id) }
        // Throws unless the engine mapped the new tokens' memory first (the model never maps).
        try kvStorage.setLengths(zip(inputs, starts).map { ($0.id, $1 + $0.tokens.count) })
        stepTokenCounts.append(inputs.reduce(0) { $0 + $1.tokens.count })
        return try zip(inputs, starts).map { input, start in
            for (j, token) in input.tokens.enumerated() { try keySlot(input.id, token: start + j).pointee = Int32(token) }
            let history = try (0..<(start + input.tokens.count)).map { Int(try keySlot(input.id, token: $0).pointee) }
            return Self.next(after: history)
        }
    }
}

/// The steps a stand-in queues as the GPU model does: a fed placeholder takes the pick of the
/// step queued just before, at most two steps are in flight, and they are collected in order.
struct QueuedPicks {
    private var queued: [(serial: Int, picks: [SampledToken])] = []
    private var nextSerial = 0

    var isEmpty: Bool { queued.isEmpty }
    /// The serial the next appended step gets.
    var upcomingSerial: Int { nextSerial }

    /// `inputs` with each fed one-token placeholder replaced by its pick from the step before.
    func feeding(_ inputs: [ForwardInput], _ feeds: [StepFeed]) throws -> [ForwardInput] {
        guard queued.count < 2 else { throw RuntimeError.invalidRequest("two steps already in flight") }
        var inputs = inputs
        guard !feeds.isEmpty else { return inputs }
        guard let previous = queued.last, previous.serial == nextSerial - 1 else { throw RuntimeError.invalidRequest("feeds without the step before in flight") }
        for feed in feeds {
            guard inputs[feed.input].tokens == [0], feed.previousInput < previous.picks.count else {
                throw RuntimeError.invalidRequest("a feed must name a one-token placeholder input and a row of the step before")
            }
            inputs[feed.input].tokens = [previous.picks[feed.previousInput].id]
        }
        return inputs
    }

    /// Queues a step's picks; returns its handle.
    mutating func append(_ picks: [SampledToken]) -> QueuedStep {
        queued.append((nextSerial, picks))
        nextSerial += 1
        return QueuedStep(serial: nextSerial - 1, rows: picks.count)
    }

    mutating func collect(_ step: QueuedStep) throws -> [SampledToken] {
        guard let first = queued.first, first.serial == step.serial else { throw RuntimeError.invalidRequest("steps collected out of order") }
        queued.removeFirst()
        return first.picks
    }
}

/// The tokens a request generates when run alone by the fake model's rule.
func fakeReference(prompt: [Int], maxTokens: Int, maxLength: Int, eos: Int? = 0) -> [Int] {
    var history = prompt
    var output: [Int] = []
    let limit = min(maxTokens, maxLength - prompt.count)
    while output.count < limit {
        let t = FakeModel.next(after: history)
        output.append(t)
        history.append(t)
        if t == eos { break }
    }
    return output
}
