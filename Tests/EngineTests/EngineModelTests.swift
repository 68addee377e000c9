import Foundation
import Models
import Runtime
import Testing
import VTensor
@testable import Engine

/// The engine over a real forward pass (a tiny random Llama on the CPU): what it generates for
/// each request in mixed, chunked, preempted and aborted batches equals what the model makes
/// for that request alone.
@Suite struct EngineModelTests {
    static let config: ModelConfig = {
        let json = """
            {"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
             "num_key_value_heads":2,"head_dim":16,"vocab_size":256,"max_position_embeddings":96,"rms_norm_eps":1e-5,
             "rope_theta":10000,"eos_token_id":0}
            """
        return try! ModelConfig.decode(Data(json.utf8))
    }()
    static let weights = ModelWeights.dummy(config: config, seed: 5, std: 0.5)

    /// A CPU model over a host KV cache of 4 KiB chunks (8 tokens a chunk), `budgetChunks` of them;
    /// chunks a step fills whole map as slabs of up to `freshSlabChunks`.
    static func model(budgetChunks: Int = 64, freshSlabChunks: Int = 0) throws -> CPUModel {
        let backend = try HostBackend(chunkSize: 4096, capacityBytes: 4096 * (budgetChunks + 4))
        let memory = try VirtualMemory(backend: backend, budget: .bytes(4096 * budgetChunks), lowWatermark: 0, freshSlabChunks: freshSlabChunks)
        let cache = try KVCache(shape: CPUModel.kvShape(config), memory: memory, maxTokensPerRequest: config.maxPositionEmbeddings)
        return try CPUModel(weights: weights, cache: cache, threads: 2)
    }

    /// Greedy tokens for one request run alone, step by step on its own model, and the smallest
    /// gap between the best and second-best logit on the way (how clear each choice was).
    static func alone(_ prompt: [Int], maxTokens: Int, maxLength: Int) throws -> (tokens: [Int], margin: Float) {
        let model = try model()
        try model.addSequence(0)
        var logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: prompt)])[0]
        var tokens: [Int] = []
        var margin = Float.infinity
        while true {
            let order = logits.indices.sorted { logits[$0] > logits[$1] }
            margin = min(margin, logits[order[0]] - logits[order[1]])
            tokens.append(order[0])
            if order[0] == 0 || tokens.count >= min(maxTokens, maxLength - prompt.count) { break }
            logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: [order[0]])])[0]
        }
        return (tokens, margin)
    }

    static func prompts(_ count: Int, lengths: ClosedRange<Int>, seed: UInt64) -> [[Int]] {
        var random = TestRandom(seed: seed)
        return (0..<count).map { _ in (0..<Int.random(in: lengths, using: &random)).map { _ in Int.random(in: 1..<256, using: &random) } }
    }

    func runAll(_ engine: Engine, _ requests: [GenerationRequest]) throws -> [RequestID: (tokens: [Int], finish: FinishReason?)] {
        var results: [RequestID: (tokens: [Int], finish: FinishReason?)] = [:]
        for request in requests { results[try engine.add(request)] = ([], nil) }
        engine.runUntilIdle { outputs in
            for output in outputs {
                results[output.id]!.tokens += output.tokens.map(\.id)
                if output.isFinal { results[output.id]!.finish = output.finish }
            }
        }
        return results
    }

    /// Seven ragged requests, four at a time, 16 tokens a step: prompts are split over steps
    /// while other requests decode, and late requests wait for a free slot.
    @Test(arguments: [true, false])
    func mixedChunkedBatchesMatchEachRequestAlone(asyncMapping: Bool) throws {
        let model = try Self.model()
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0],
                                options: EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 16, asyncMapping: asyncMapping))
        let prompts = Self.prompts(7, lengths: 3...40, seed: 1)
        let maxTokens = [9, 14, 5, 20, 11, 3, 17]
        let requests = zip(prompts, maxTokens).map { GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: $1)) }
        let results = try runAll(engine, requests)
        for (id, request) in zip(results.keys.sorted(), requests) {
            let reference = try Self.alone(request.prompt, maxTokens: request.parameters.maxTokens!, maxLength: engine.maxSequenceLength)
            #expect(reference.margin > 1e-3, "choose a case with clear top-1 margins (got \(reference.margin))")
            #expect(results[id]!.tokens == reference.tokens)
            #expect(results[id]!.finish == (reference.tokens.last == 0 ? .stop : .length))
        }
        let stats = engine.statistics
        #expect(stats.prefillRows > 7, "prompts were split into chunks")
        #expect(stats.maxTokensInStep <= 16)
        #expect(model.cache.requestIDs.isEmpty)
    }

    /// A KV budget of 16 chunks (128 tokens) for six requests that need up to 50 tokens each:
    /// the newest running request is preempted, recomputes later, and still makes its tokens.
    @Test func preemptedRequestsResumeWithTheSameTokens() throws {
        let model = try Self.model(budgetChunks: 16)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 6, maxNumBatchedTokens: 64))
        let prompts = Self.prompts(6, lengths: 20...30, seed: 2)
        let requests = prompts.map { GenerationRequest(prompt: $0, parameters: SamplingParameters(temperature: 0, maxTokens: 20)) }
        let results = try runAll(engine, requests)
        #expect(engine.statistics.preemptions > 0)
        #expect(engine.statistics.resumptions == engine.statistics.preemptions)
        for (id, request) in zip(results.keys.sorted(), requests) {
            var reference = try Self.alone(request.prompt, maxTokens: 20, maxLength: engine.maxSequenceLength)
            // No end-of-sequence for this engine: the reference keeps going past token 0 too.
            if reference.tokens.last == 0 && reference.tokens.count < 20 {
                reference = try Self.aloneIgnoringEOS(request.prompt, maxTokens: 20)
            }
            #expect(results[id]!.tokens == reference.tokens)
            #expect(results[id]!.finish == .length)
        }
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try model.cache.memory.drain()
        #expect(model.cache.memory.accounting.inUse == 0)
    }

    static func aloneIgnoringEOS(_ prompt: [Int], maxTokens: Int) throws -> (tokens: [Int], margin: Float) {
        let model = try model()
        try model.addSequence(0)
        var logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: prompt)])[0]
        var tokens: [Int] = []
        while tokens.count < maxTokens {
            let best = logits.indices.max { logits[$0] < logits[$1] }!
            tokens.append(best)
            if tokens.count == maxTokens { break }
            logits = try model.reserveAndForward([ForwardInput(id: 0, tokens: [best])])[0]
        }
        return (tokens, 0)
    }

    /// A conversation's next turn resends the whole conversation: the engine finds the last
    /// turn's K/V cached (prompt and answer), computes only the new tokens, and generates what
    /// the whole prompt makes alone. Another salt finds nothing; a branch inside a chunk reuses
    /// the chunks before it. Also where the chunks a step fills whole map as slabs (which map only
    /// whole: the branch, sharing part of one, gets copies, and the K/V it reads is the same).
    @Test(arguments: [0, 4]) func nextTurnsStartFromTheCachedConversation(freshSlabChunks: Int) throws {
        let model = try Self.model(budgetChunks: 64, freshSlabChunks: freshSlabChunks)
        var options = EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 64)
        options.prefixCacheIdleChunks = 64  // keep everything between turns (the engine idles after each)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: options)
        let parameters = SamplingParameters(temperature: 0, maxTokens: 6, ignoreEOS: true)
        var conversation = Self.prompts(1, lengths: 21...21, seed: 9)[0]
        var hits: [Int] = []
        for turn in 0..<3 {
            let before = engine.statistics
            let result = try runAll(engine, [GenerationRequest(prompt: conversation, parameters: parameters)]).values.first!
            let reference = try Self.aloneIgnoringEOS(conversation, maxTokens: 6).tokens
            #expect(result.tokens == reference, "turn \(turn)")
            let after = engine.statistics
            hits.append(after.prefixHitTokens - before.prefixHitTokens)
            #expect(after.promptTokensComputed - before.promptTokensComputed == conversation.count - hits.last!)
            conversation += result.tokens + [7 + turn, 40 + turn, 90]
        }
        // Turn 1 reads turn 0's 21 + 5 computed tokens (its last answer token was never fed back); turn 2 likewise.
        #expect(hits == [0, 26, 26 + 3 + 6])
        // Turns 1 and 2 continued the turn before whole: each took its ranges over (no mapping).
        #expect(model.cache.takeovers == 2)
        // Another tenant sends the same conversation: nothing shared.
        let before = engine.statistics.prefixHitTokens
        _ = try runAll(engine, [GenerationRequest(prompt: conversation, parameters: parameters, cacheSalt: "other")])
        #expect(engine.statistics.prefixHitTokens == before)
        // A branch after 20 tokens (inside the third 8-token chunk): 20 tokens reused, the rest computed.
        var branch = Array(conversation.prefix(20)) + [200, 201, 202]
        let branched = try runAll(engine, [GenerationRequest(prompt: branch, parameters: parameters)]).values.first!
        #expect(engine.statistics.prefixHitTokens == before + 20)
        #expect(branched.tokens == (try Self.aloneIgnoringEOS(branch, maxTokens: 6).tokens))
        #expect((model.cache.memory.accounting.freshRuns > 0) == (freshSlabChunks > 0))
        #expect(model.cache.memory.audit() == [])
        branch.removeAll()
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try model.cache.memory.drain()
        #expect(model.cache.memory.accounting.inUse == 0)
    }

    /// Seeded sampling gives each request the same tokens in a batch as alone: each draws from
    /// its own random stream, one step per token.
    @Test func seededSamplingIsIndependentOfTheBatch() throws {
        let prompts = Self.prompts(4, lengths: 4...12, seed: 3)
        func run(maxNumSeqs: Int) throws -> [[Int]] {
            let model = try Self.model()
            let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                    options: EngineOptions(maxNumSeqs: maxNumSeqs, maxNumBatchedTokens: 8))
            let requests = prompts.enumerated().map {
                GenerationRequest(prompt: $0.element, parameters: SamplingParameters(temperature: 1.3, topK: 20, seed: 100 + $0.offset, maxTokens: 12))
            }
            let results = try runAll(engine, requests)
            return results.keys.sorted().map { results[$0]!.tokens }
        }
        #expect(try run(maxNumSeqs: 4) == (try run(maxNumSeqs: 1)))
    }

    /// An abort from another thread while the loop runs: that request ends with `abort`, the
    /// others are untouched, and its memory comes back. (The victim's handler holds the engine
    /// thread after its third token until the test thread has aborted it, so the abort lands
    /// mid-generation every time.)
    @Test func abortFromAnotherThread() throws {
        let model = try Self.model()
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 32))
        let loop = EngineLoop(engine: engine)
        let prompts = Self.prompts(3, lengths: 5...15, seed: 4)
        final class Collector: @unchecked Sendable {
            let lock = NSLock()
            var tokens: [[Int]] = [[], [], []]
            var finishes: [FinishReason?] = [nil, nil, nil]
            let thirdToken = DispatchSemaphore(value: 0), aborted = DispatchSemaphore(value: 0), done = DispatchGroup()
        }
        let c = Collector()
        var ids: [RequestID] = []
        for (index, prompt) in prompts.enumerated() {
            c.done.enter()
            ids.append(try loop.submit(GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 40))) { output in
                let count = c.lock.withLock { () -> Int in
                    c.tokens[index] += output.tokens.map(\.id)
                    if output.isFinal { c.finishes[index] = output.finish }
                    return c.tokens[index].count
                }
                if index == 1 && count == 3 && !output.isFinal {
                    c.thirdToken.signal()
                    c.aborted.wait()
                }
                if output.isFinal { c.done.leave() }
            })
        }
        c.thirdToken.wait()
        #expect(loop.abort(ids[1]))
        c.aborted.signal()
        c.done.wait()
        #expect(c.finishes == [.length, .abort, .length])
        #expect(c.tokens[1].count == 3)
        for i in [0, 2] {
            #expect(c.tokens[i] == (try Self.aloneIgnoringEOS(prompts[i], maxTokens: 40).tokens))
        }
        let reference = try Self.aloneIgnoringEOS(prompts[1], maxTokens: 40).tokens
        #expect(Array(reference.prefix(3)) == c.tokens[1])
        #expect(!loop.abort(ids[1]), "an aborted request is no longer live")
        loop.shutdown()
        #expect(engine.statistics.aborted == 1)
        #expect(model.cache.requestIDs.isEmpty)
        // What the three computed (the aborted one's included) was cached; idle, the cache keeps
        // at most its idle share (an eighth of the budget here) until it is reset.
        try model.cache.memory.drain()
        let stats = engine.statistics
        #expect(stats.prefixKeptChunks > 0 && stats.prefixHeldChunks > 0 && stats.prefixHeldChunks <= model.cache.memory.accounting.budgetChunks / 8)
        #expect(model.cache.memory.accounting.inUse == stats.prefixHeldChunks)
        #expect(engine.resetPrefixCache())
        _ = engine.step()
        try model.cache.memory.drain()
        #expect(model.cache.memory.accounting.inUse == 0 && engine.statistics.prefixHeldChunks == 0)
    }

    /// Every last output carries the request's latencies: queue <= first token <= end, and the
    /// token count; a request aborted while waiting has no first token.
    @Test func finalOutputsCarryTheirTiming() throws {
        let model = try Self.model()
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 1, maxNumBatchedTokens: 16))
        let first = try engine.add(GenerationRequest(prompt: Self.prompts(1, lengths: 20...20, seed: 9)[0], parameters: SamplingParameters(temperature: 0, maxTokens: 5)))
        let second = try engine.add(GenerationRequest(prompt: [3, 4, 5], parameters: SamplingParameters(temperature: 0, maxTokens: 5)))
        var finals: [RequestID: RequestOutput] = [:]
        _ = engine.step()
        engine.abort(second)  // still waiting behind the first (one sequence at a time)
        engine.runUntilIdle { outputs in for output in outputs where output.isFinal { finals[output.id] = output } }
        let done = try #require(finals[first]?.timing)
        #expect(done.outputTokens == 5)
        #expect(done.queue >= 0 && done.queue <= done.firstToken! && done.firstToken! <= done.total)
        #expect(done.interToken != nil)
        let aborted = try #require(finals[second]?.timing)
        #expect(finals[second]?.finish == .abort)
        #expect(aborted.firstToken == nil && aborted.outputTokens == 0)
    }

    /// Bad input gets a clear error or a clean finish, never a crash or a leak.
    @Test func badInput() throws {
        let model = try Self.model()
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [0], options: EngineOptions(maxModelLen: 40))
        #expect(engine.maxSequenceLength == 40)
        func message(_ body: () throws -> Void) -> String {
            do { try body(); return "" } catch { return String(describing: error) }
        }
        #expect(message { try engine.add(GenerationRequest(prompt: [])) }.contains("the prompt is empty"))
        #expect(message { try engine.add(GenerationRequest(prompt: Array(repeating: 5, count: 40))) }.contains("leaving no room to generate"))
        #expect(message { try engine.add(GenerationRequest(prompt: [5, 256])) }.contains("outside the vocabulary"))
        #expect(message { try engine.add(GenerationRequest(prompt: [5], parameters: SamplingParameters(temperature: 0, maxTokens: 0))) }.contains("max_tokens"))
        var stopString = SamplingParameters(temperature: 0)
        stopString.stopStrings = ["x"]
        #expect(message { try engine.add(GenerationRequest(prompt: [5], parameters: stopString)) }.contains("stop strings need a tokenizer"))
        #expect(engine.statistics.requestsRejected == 5)
        #expect(!engine.abort(12345))
        // A batch (a response's choices) is queued whole or not at all.
        let added = engine.statistics.requestsAdded
        #expect(message { try engine.add([GenerationRequest(prompt: [5]), GenerationRequest(prompt: [])]) }.contains("the prompt is empty"))
        #expect(engine.statistics.requestsRejected == 7 && engine.statistics.requestsAdded == added)
        let batch = try engine.add([4, 5, 6].map { GenerationRequest(prompt: [$0, 9], parameters: SamplingParameters(temperature: 0, maxTokens: 2)) })
        #expect(batch.count == 3 && Set(batch).count == 3)
        _ = engine.step()
        #expect(engine.statistics.admitted == 3, "a batch joins one step")
        for id in batch { engine.abort(id) }
        engine.runUntilIdle { _ in }

        // max_tokens past the context: the request stops at the context with reason `length`.
        let results = try runAll(engine, [GenerationRequest(prompt: Array(repeating: 7, count: 30),
                                                            parameters: SamplingParameters(temperature: 0, maxTokens: 500, ignoreEOS: true))])
        let only = results.values.first!
        #expect(only.tokens.count == 10)
        #expect(only.finish == .length)
        #expect(!engine.abort(results.keys.first!), "a finished request cannot be aborted")

        // A budget that cannot hold one request of two tokens (one chunk of 8 tokens, 7 of them
        // guard), a cache that already holds a request, and options that make no sense.
        let starved = try FakeModel(context: 32, budgetChunks: 1, guardTokens: 7)
        #expect(message { _ = try Engine(model: starved, tokenizer: nil, eosTokenIds: []) }.contains("KV budget too small"))
        let used = try FakeModel(context: 32, budgetChunks: 8)
        try used.addSequence(1)
        #expect(message { _ = try Engine(model: used, tokenizer: nil, eosTokenIds: []) }.contains("already holds requests"))
        #expect(message { _ = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 0)) }
                    .contains("--max-num-seqs"))
    }
}

/// A model that holds its `holdAt`-th step until `gate` is signalled: the test decides when the
/// request may go on, however the threads are scheduled.
final class GatedModel: LanguageModel, @unchecked Sendable {
    let inner: any LanguageModel
    let holdAt: Int
    let gate = DispatchSemaphore(value: 0)
    private var steps = 0
    init(_ inner: any LanguageModel, holdAt: Int) { self.inner = inner; self.holdAt = holdAt }
    var config: ModelConfig { inner.config }
    var kvStorage: KVStorage { inner.kvStorage }
    var maxSequenceTokens: Int { inner.maxSequenceTokens }
    func forward(_ inputs: [ForwardInput]) throws -> [[Float]] {
        steps += 1
        if steps == holdAt { gate.wait() }
        return try inner.forward(inputs)
    }
}

/// The loop's async streams: a consumer whose task is cancelled (a client that disconnects)
/// aborts its request at the next step; its KV goes back.
@Suite struct EngineLoopStreamTests {
    @Test func cancellingTheConsumerAbortsTheRequest() async throws {
        // Step 4 waits until the client has gone: the request cannot finish before the abort.
        let model = GatedModel(try EngineModelTests.model(), holdAt: 4)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [],
                                options: EngineOptions(maxNumSeqs: 4, maxNumBatchedTokens: 32))
        let loop = EngineLoop(engine: engine)
        let (id, stream) = try loop.stream(GenerationRequest(prompt: [5, 6, 7, 8], parameters: SamplingParameters(temperature: 0, maxTokens: 80)))
        let consumer = Task {
            var seen = 0
            for await output in stream {
                seen += output.tokens.count
                if seen == 2 { withUnsafeCurrentTask { $0?.cancel() } }  // the client goes away
            }
            return seen
        }
        let seen = await consumer.value
        model.gate.signal()
        #expect(seen >= 2 && seen < 80)
        var waited = 0
        while engine.hasWork && waited < 2000 {
            try await Task.sleep(nanoseconds: 2_000_000)
            waited += 1
        }
        #expect(!engine.hasWork, "the request was still running after its client left")
        #expect(engine.statistics.aborted == 1)
        #expect(engine.statistics.generatedTokens < 80)
        #expect(!loop.abort(id))
        loop.shutdown()
        #expect(model.kvStorage.requestIDs.isEmpty)
    }
}
