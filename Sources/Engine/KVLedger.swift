import VTensor

/// The engine's admission arithmetic: how many chunks each request holds or has asked the
/// mapper for, against the chunks the budget leaves for requests. The scheduler asks it "can
/// this request grow to N tokens?" before a step, so memory never runs out inside one.
///
/// Chunks given back (a finished, aborted or preempted request) count as free at once: their
/// physical unmap waits for in-flight work, and a mapping that needs them waits for that fence
/// (`VirtualMemory` completes retirements before it declares the budget exhausted).
struct KVLedger {
    let layout: KVLayout
    let guardTokens: Int
    /// Chunks the budget leaves for requests (the padding view and the like excluded).
    let capacityChunks: Int
    private(set) var committedChunks = 0
    private(set) var peakCommittedChunks = 0
    /// Per request: the tokens its mappings cover (or will, once the mapper is done).
    private(set) var reservedTokens: [RequestID: Int] = [:]

    init(layout: KVLayout, guardTokens: Int, capacityChunks: Int) {
        self.layout = layout
        self.guardTokens = guardTokens
        self.capacityChunks = capacityChunks
    }

    /// Chunks a request of `tokens` tokens holds (every range, guard included).
    func chunks(forTokens tokens: Int) -> Int {
        layout.rangesPerRequest * layout.chunks(forTokens: tokens + guardTokens)
    }

    /// The longest request the budget can hold when it runs alone.
    var maxTokensAlone: Int {
        let perRange = capacityChunks / layout.rangesPerRequest
        return max(0, perRange * layout.tokensPerChunk - guardTokens)
    }

    var freeChunks: Int { capacityChunks - committedChunks }

    /// Extra chunks `id` needs to cover `tokens` tokens (0 if it already does; a request not
    /// in the ledger starts from nothing).
    func growthChunks(_ id: RequestID, to tokens: Int) -> Int {
        let held = reservedTokens[id].map { chunks(forTokens: $0) } ?? 0
        return max(0, chunks(forTokens: tokens) - held)
    }

    func canGrow(_ id: RequestID, to tokens: Int) -> Bool { growthChunks(id, to: tokens) <= freeChunks }

    /// Records that `id` will cover `tokens` tokens (never shrinks: mappings stay until freed).
    mutating func grow(_ id: RequestID, to tokens: Int) {
        let extra = growthChunks(id, to: tokens)
        precondition(extra <= freeChunks, "grow past the budget: admission must ask canGrow first")
        reservedTokens[id] = max(reservedTokens[id] ?? 0, tokens)
        committedChunks += extra
        peakCommittedChunks = max(peakCommittedChunks, committedChunks)
    }

    /// `id` gave all its chunks back.
    mutating func release(_ id: RequestID) {
        guard let tokens = reservedTokens.removeValue(forKey: id) else { return }
        committedChunks -= chunks(forTokens: tokens)
    }
}
