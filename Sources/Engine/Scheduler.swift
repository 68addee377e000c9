/// One request's place in the engine: its tokens (prompt, then output), how many of them
/// the KV cache holds, and its generation state.
final class EngineSequence {
    let id: RequestID
    /// Prompt followed by every generated token.
    var tokens: [Int]
    /// Tokens whose K/V are in the cache. A decode step computes the one token past this.
    var computed = 0
    var status: RequestStatus = .waiting
    var state: SequenceState
    /// Whether the cache has an entry for it (from admission, or from a prefetch while it still
    /// waits, until it finishes, is preempted or gives the prefetch back).
    var hasKV = false
    /// Waiting, but given KV and a ledger reservation for its first prompt chunk a step early, so
    /// the mapper maps it while the previous step runs. Given back first when memory is short.
    var prefetched = false
    /// A prefetch further back than the next step: its cached prefix is aliased (and being
    /// mapped), nothing else is reserved yet. Its first prompt chunk is reserved when it comes
    /// within the next step's reach.
    var aliasedAhead = false
    var preemptions = 0
    /// Tokens picked by a queued step that have not reached the host yet (0 or 1): the request
    /// is one longer than `tokens`, and its next decode is fed that pick on the device.
    var pendingTokens = 0
    let arrivalNanos: UInt64
    /// The prefix cache's partition (`GenerationRequest.cacheSalt`, "" without one).
    let salt: String
    /// `GenerationRequest.priority`: lower first under the priority policy.
    let priority: Int
    /// Its prompt's log-probabilities, when the request asked for them.
    var promptScores: PromptScores?
    /// Whether it may start from a cached prefix: not while its prompt scores are incomplete,
    /// since cached tokens are never computed and so never scored.
    var readsPrefixCache: Bool { promptScores.map(\.isComplete) ?? true }
    /// Its prompt chunks still return every position's logits (to score the prompt).
    var scoresPrompt: Bool { promptScores.map { !$0.isComplete } ?? false }
    /// A hash of its salt and first `block` tokens (they never change), kept once computed.
    private var firstBlockHash: (block: Int, hash: Int)?

    func firstBlockKey(_ block: Int) -> Int {
        if let known = firstBlockHash, known.block == block { return known.hash }
        var hasher = Hasher()
        hasher.combine(salt)
        for token in tokens.prefix(block) { hasher.combine(token) }
        let hash = hasher.finalize()
        firstBlockHash = (block, hash)
        return hash
    }
    var firstScheduledNanos: UInt64?
    var firstTokenNanos: UInt64?

    /// Its latencies so far, ending now.
    func timing(now: UInt64) -> RequestTiming {
        func seconds(_ t: UInt64) -> Double { Double(t &- arrivalNanos) / 1e9 }
        return RequestTiming(queue: seconds(firstScheduledNanos ?? now), firstToken: firstTokenNanos.map(seconds), total: seconds(now),
                             outputTokens: state.output.count)
    }

    init(id: RequestID, prompt: [Int], state: SequenceState, arrivalNanos: UInt64, salt: String = "", priority: Int = 0) {
        self.priority = priority
        self.id = id
        tokens = prompt
        self.state = state
        self.arrivalNanos = arrivalNanos
        self.salt = salt
    }

    /// Tokens not yet in the cache: the prompt (or, after preemption, everything) still to
    /// prefill, or the one token a decode step feeds.
    var uncomputed: Int { knownLength - computed }

    /// Its length counting the pick in flight.
    var knownLength: Int { tokens.count + pendingTokens }

    /// Whether the pick in flight is its last (its output limit): it has nothing left to schedule
    /// and ends when that pick arrives.
    var awaitsLastPick: Bool { pendingTokens > 0 && state.output.count + pendingTokens >= state.outputLimit }
}

/// One row of a step: `count` tokens of request `id` from position `start`. When `samples`,
/// the row ends the request's known tokens, so its last position's logits pick the next token;
/// a prefill chunk that stops short of the end samples nothing.
public struct ScheduledRow: Sendable, Equatable {
    public var id: RequestID
    public var start: Int
    public var count: Int
    public var samples: Bool
    /// Decode: one token after a sampled one.
    public var isDecode: Bool { count == 1 && start > 0 && samples }
}

/// What the scheduler decided for one step: plain data, no tensors.
public struct SchedulerOutput: Sendable {
    public var rows: [ScheduledRow] = []
    /// Running requests that gave their KV back this step (newest first) and wait again.
    public var preempted: [RequestID] = []
    /// Requests that enter the running batch this step (new or resumed): they need a KV entry
    /// unless a prefetch gave them one.
    public var admitted: [RequestID] = []
    /// Requests admitted (or given KV while waiting) from a cached prefix, with its tokens.
    public var prefixHits: [(id: RequestID, tokens: Int)] = []
    /// Waiting requests whose prefetched KV was taken back: for memory a running request needed,
    /// or because more of their prompt is cached (or being computed) than they attached ahead.
    public var released: [RequestID] = []
    /// The cached tokens those requests had attached (counted as hits when they attached: a
    /// request that attaches again counts its hit again).
    public var releasedHitTokens = 0
    public var tokenCount: Int { rows.reduce(0) { $0 + $1.count } }
}

/// The step loop's decisions, first come first served under a token budget and a sequence cap
/// (vLLM v1's shape): every running request first, in admission order, each taking what it
/// has left to compute (one token when decoding, a chunk of its prompt when prefilling) within
/// the budget; then waiting requests, oldest first, while the budget, the cap and the KV
/// budget allow. When a running request cannot grow, the newest running request is preempted
/// (its KV freed; it resumes later by recomputing its tokens), which may be itself.
struct Scheduler {
    let maxNumSeqs: Int
    let maxNumBatchedTokens: Int
    let policy: SchedulePolicy
    /// The most logits rows a step may return: a row gives one, a chunk that scores its prompt
    /// one per token (the GPU's logits workspace; unbounded on the CPU).
    let maxLogitRows: Int
    private(set) var waiting: [EngineSequence] = []
    private(set) var running: [EngineSequence] = []

    /// Prompt tokens a step takes sized to the prompt work waiting (`EngineOptions.stepOverheadTokens`).
    let stepOverheadTokens: Int?
    /// The fewest prompt tokens a step sized to the work takes (an eighth of the maximum).
    var minPromptTokens: Int { max(1, maxNumBatchedTokens / 8) }

    init(maxNumSeqs: Int, maxNumBatchedTokens: Int, policy: SchedulePolicy = .fcfs, maxLogitRows: Int = .max,
         stepOverheadTokens: Int? = nil) {
        self.maxNumSeqs = maxNumSeqs
        self.maxNumBatchedTokens = maxNumBatchedTokens
        self.policy = policy
        self.maxLogitRows = maxLogitRows
        self.stepOverheadTokens = stepOverheadTokens
    }

    /// The step's token budget. Fixed: `maxNumBatchedTokens`. Sized to the work: the decodes, plus
    /// prompt tokens B = sqrt(D x T) within [minPromptTokens, max], D the prompt tokens left to
    /// compute (running prefills, waiting requests less their cached prefixes), T a step's fixed
    /// cost in prompt tokens. The prompts waiting get their first tokens one step at a time, all
    /// of a step's at its end: a mean wait of about (D/B + 1)/2 steps of B tokens each, least at
    /// B = sqrt(D x T). A deep queue keeps whole steps (throughput); a wave of short prompts gets
    /// shorter ones, and its first tokens sooner.
    func stepBudget(prefix: PrefixCache?) -> Int {
        guard let overhead = stepOverheadTokens else { return maxNumBatchedTokens }
        var decodes = 0
        var demand = 0
        // Past this much work the budget is the maximum: stop counting.
        let enough = maxNumBatchedTokens * maxNumBatchedTokens / max(1, overhead)
        for sequence in running where !sequence.awaitsLastPick {
            if sequence.uncomputed == 1 { decodes += 1 } else { demand += sequence.uncomputed }
        }
        for sequence in waiting {
            guard demand < enough else { break }
            let cached = (sequence.hasKV || sequence.status == .preempted) ? 0 : (prefix?.lookup(sequence).tokens ?? 0)
            demand += max(1, sequence.uncomputed - cached)
        }
        let prompt = Int(Double(demand * overhead).squareRoot())
        return min(maxNumBatchedTokens, decodes + max(minPromptTokens, prompt))
    }

    var isIdle: Bool { waiting.isEmpty && running.isEmpty }

    /// Running requests that hold a seat: one waiting only for its last pick (in flight) has
    /// nothing left to compute and gives its seat to a waiting request already.
    var seatsTaken: Int { running.reduce(0) { $0 + ($1.awaitsLastPick ? 0 : 1) } }

    /// Queues a new request: last (fcfs), or (lof) after every waiting request that may generate
    /// as many tokens or more. Preempted requests stay at the head either way.
    mutating func enqueue(_ sequence: EngineSequence) {
        switch policy {
        case .fcfs, .lpm:
            waiting.append(sequence)
        case .lof:
            let limit = sequence.state.outputLimit
            let at = waiting.firstIndex { $0.status != .preempted && $0.state.outputLimit < limit } ?? waiting.count
            waiting.insert(sequence, at: at)
        case .priority:
            insertInPriorityOrder(sequence, into: &waiting)
        }
    }

    /// The priority policy's order: lower `priority` first, then arrival (ids grow with it).
    static func precedes(_ a: EngineSequence, _ b: EngineSequence) -> Bool {
        (a.priority, a.id) < (b.priority, b.id)
    }

    private func insertInPriorityOrder(_ sequence: EngineSequence, into queue: inout [EngineSequence]) {
        let at = queue.firstIndex { Self.precedes(sequence, $0) } ?? queue.count
        queue.insert(sequence, at: at)
    }

    /// Most waiting requests `lpm` reorders by their cached prefix each step.
    static let lpmWaitingLimit = 128

    /// lpm: waiting requests with memory already (preempted, prefetched) first, in their order;
    /// then the longest cached prefix first, arrival order among equals (a stable sort).
    mutating func orderByCachedPrefix(_ prefix: PrefixCache) {
        struct Key { let sequence: EngineSequence; let placed: Bool; let cached: Int; let index: Int }
        let keyed = waiting.enumerated().map { index, sequence -> Key in
            let placed = sequence.status == .preempted || sequence.hasKV
            return Key(sequence: sequence, placed: placed, cached: placed ? 0 : prefix.lookup(sequence).tokens, index: index)
        }
        waiting = keyed.sorted { (a: Key, b: Key) -> Bool in
            if a.placed != b.placed { return a.placed }
            if !a.placed && a.cached != b.cached { return a.cached > b.cached }
            return a.index < b.index
        }.map(\.sequence)
    }

    /// Takes a request out of either queue (abort, finish); returns it if it was there.
    mutating func remove(_ id: RequestID) -> EngineSequence? {
        if let i = running.firstIndex(where: { $0.id == id }) { return running.remove(at: i) }
        if let i = waiting.firstIndex(where: { $0.id == id }) { return waiting.remove(at: i) }
        return nil
    }

    /// - Parameter prefix: the prefix cache: a request without KV starts from its longest cached
    ///   prefix, and the cache's unreferenced chunks are evicted before anyone is preempted.
    mutating func schedule(ledger: inout KVLedger, prefix: PrefixCache? = nil) -> SchedulerOutput {
        var output = SchedulerOutput()
        var budget = stepBudget(prefix: prefix)
        var logitRows = maxLogitRows
        var index = 0
        // Memory for `units` more units from the prefix cache's unreferenced chunks.
        func evict(_ units: Int) -> Bool {
            guard let prefix, units > 0 else { return false }
            return prefix.evict(units: units, ledger: &ledger) > 0
        }
        running: while index < running.count && budget > 0 {
            let sequence = running[index]
            if sequence.awaitsLastPick {
                index += 1
                continue
            }
            var count = min(sequence.uncomputed, budget)
            if sequence.scoresPrompt {
                // Room for one logits row for each running request after it; none left: next step.
                let room = logitRows - (running.count - index - 1)
                guard room >= 1 else {
                    index += 1
                    continue
                }
                count = min(count, room)
            } else if logitRows < 1 {
                break running
            }
            let target = sequence.computed + count
            while !ledger.canGrow(sequence.id, to: target) {
                if evict(ledger.growthChunks(sequence.id, to: target) - ledger.freeChunks) { continue }
                if releasePrefetch(except: nil, ledger: &ledger, output: &output, prefix: prefix) { continue }
                let victim = running.removeLast()
                preempt(victim, ledger: &ledger, prefix: prefix)
                output.preempted.append(victim.id)
                if victim === sequence { break running }
            }
            ledger.grow(sequence.id, to: target)
            output.rows.append(ScheduledRow(id: sequence.id, start: sequence.computed, count: count, samples: target == sequence.knownLength))
            budget -= count
            logitRows -= sequence.scoresPrompt ? count : 1
            index += 1
        }
        // New work only when nothing had to give memory back this step.
        guard output.preempted.isEmpty else { return output }
        if policy == .lpm, let prefix, waiting.count > 1, waiting.count <= Self.lpmWaitingLimit { orderByCachedPrefix(prefix) }
        var seats = maxNumSeqs - seatsTaken
        var attached: (id: RequestID, tokens: Int)?
        var slot = 0
        // (Only worth building when someone waits.)
        var computing = waiting.isEmpty ? nil : prefix.map { runningPrefixes($0) }
        while slot < waiting.count, seats > 0, budget > 0, logitRows > 0 {
            let sequence = waiting[slot]
            // KV given ahead from what was cached then: if more is cached now, or a running request
            // is computing more of it, it starts again from there (it computed nothing yet).
            if let prefix, sequence.prefetched, isStale(sequence, prefix: prefix, computing: computing) {
                release(sequence, ledger: &ledger, output: &output, prefix: prefix)
            }
            if let prefix, let computing, !sequence.hasKV, isHeldBack(sequence, prefix: prefix, computing: computing) {
                slot += 1
                continue
            }
            if let prefix, !sequence.hasKV {
                // Start from the longest cached prefix: alias its chunks (pinned from now on).
                switch prefix.start(sequence, ledger: &ledger) {
                case .attached(let tokens): attached = (sequence.id, tokens)
                // Eviction may take the match's own chunks: look again.
                case .needs(let units): if evict(units) { continue }
                case .none: break
                }
            }
            let count = min(sequence.uncomputed, budget, sequence.scoresPrompt ? logitRows : .max)
            let target = sequence.computed + count
            guard ledger.canGrow(sequence.id, to: target) else {
                if evict(ledger.growthChunks(sequence.id, to: target) - ledger.freeChunks) { continue }
                if releasePrefetch(except: sequence, ledger: &ledger, output: &output, prefix: prefix) { continue }
                // Not admitted: a waiting request holds no pins (they would keep the cache from
                // making room for the requests that can run), unless it is a prefetch, which
                // gives them back when memory is short.
                if let prefix, attached?.id == sequence.id { prefix.giveBack(sequence, ledger: &ledger) }
                break
            }
            if let hit = attached, hit.id == sequence.id { output.prefixHits.append(hit) }
            waiting.remove(at: slot)
            ledger.grow(sequence.id, to: target)
            sequence.prefetched = false
            sequence.aliasedAhead = false
            sequence.status = .running
            if policy == .priority { insertInPriorityOrder(sequence, into: &running) } else { running.append(sequence) }
            if let prefix, sequence.tokens.count > prefix.tree.tokensPerBlock {
                computing?[sequence.firstBlockKey(prefix.tree.tokensPerBlock), default: []].append(sequence)
            }
            output.admitted.append(sequence.id)
            seats -= 1
            output.rows.append(ScheduledRow(id: sequence.id, start: sequence.computed, count: count, samples: target == sequence.knownLength))
            budget -= count
            logitRows -= sequence.scoresPrompt ? count : 1
        }
        return output
    }

    /// Running requests by their first cached block (salt and the block's tokens): the prefixes
    /// being computed now, which the tree learns when those requests leave.
    /// (Keys are hashes: a collision only costs a token comparison in `isHeldBack`.)
    func runningPrefixes(_ prefix: PrefixCache) -> [Int: [EngineSequence]] {
        let block = prefix.tree.tokensPerBlock
        var byKey: [Int: [EngineSequence]] = [:]
        for sequence in running where sequence.tokens.count > block {
            byKey[sequence.firstBlockKey(block), default: []].append(sequence)
        }
        return byKey
    }

    /// Whether a waiting request should wait for a running one that is computing a longer prefix
    /// of it than the cache holds (at least one more whole chunk): once that one leaves, this one
    /// finds the prefix cached instead of computing it a second time side by side.
    func isHeldBack(_ sequence: EngineSequence, prefix: PrefixCache, computing: [Int: [EngineSequence]]) -> Bool {
        guard sequence.readsPrefixCache else { return false }
        return sharedWithComputing(sequence, prefix: prefix, computing: computing) >= prefix.lookup(sequence).tokens + prefix.tree.tokensPerBlock
    }

    /// The longest prefix of `sequence`'s tokens, in whole blocks, that a request in `computing`
    /// (running, or admitted ahead of it) shares.
    func sharedWithComputing(_ sequence: EngineSequence, prefix: PrefixCache, computing: [Int: [EngineSequence]]) -> Int {
        let block = prefix.tree.tokensPerBlock
        guard sequence.tokens.count > block, let others = computing[sequence.firstBlockKey(block)] else { return 0 }
        let limit = sequence.tokens.count - 1
        var shared = 0
        for other in others.prefix(8) where other.salt == sequence.salt && other !== sequence {
            var n = 0
            let bound = min(limit, other.tokens.count)
            while n < bound && other.tokens[n] == sequence.tokens[n] { n += 1 }
            shared = max(shared, n / block * block)
        }
        return shared
    }

    /// Whether a waiting request given KV ahead (a prefetch, or a prefix aliased ahead) attached
    /// less than it could start from now: at least a block more is cached, or is being computed
    /// by a request in `computing`. (A group's requests queued behind full seats alias the part
    /// of their prompt cached then; the first of them to run computes the rest.)
    func isStale(_ sequence: EngineSequence, prefix: PrefixCache, computing: [Int: [EngineSequence]]?) -> Bool {
        guard sequence.hasKV, sequence.readsPrefixCache else { return false }
        let block = prefix.tree.tokensPerBlock
        if prefix.lookup(sequence).tokens >= sequence.computed + block { return true }
        guard let computing else { return false }
        return sharedWithComputing(sequence, prefix: prefix, computing: computing) >= sequence.computed + block
    }

    /// Takes back the reservation of the last prefetched waiting request (other than `except`);
    /// false when there is none.
    private mutating func releasePrefetch(except: EngineSequence?, ledger: inout KVLedger, output: inout SchedulerOutput,
                                          prefix: PrefixCache?) -> Bool {
        guard let victim = waiting.last(where: { $0.prefetched && $0 !== except }) else { return false }
        release(victim, ledger: &ledger, output: &output, prefix: prefix)
        return true
    }

    /// Takes back a waiting request's prefetched KV: it waits without any, as if never prefetched.
    private func release(_ victim: EngineSequence, ledger: inout KVLedger, output: inout SchedulerOutput, prefix: PrefixCache?) {
        if let prefix {
            // Its KV goes now (it computed nothing; what it aliased stays cached).
            output.releasedHitTokens += victim.computed
            prefix.giveBack(victim, ledger: &ledger)
        } else {
            ledger.release(victim.id)
        }
        victim.prefetched = false
        victim.aliasedAhead = false
        output.released.append(victim.id)
    }

    /// Gives a running request's memory back; it waits at the head of the queue to recompute
    /// (with a prefix cache, its computed tokens are cached, so it resumes from what survives).
    private mutating func preempt(_ sequence: EngineSequence, ledger: inout KVLedger, prefix: PrefixCache?) {
        if let prefix {
            prefix.retire(sequence, tokens: min(sequence.computed, sequence.tokens.count), ledger: &ledger)
        } else {
            ledger.release(sequence.id)
        }
        sequence.computed = 0
        sequence.status = .preempted
        sequence.preemptions += 1
        // Back at the head of the queue (fcfs and the others), or in its priority's place.
        if policy == .priority { insertInPriorityOrder(sequence, into: &waiting) } else { waiting.insert(sequence, at: 0) }
    }
}
