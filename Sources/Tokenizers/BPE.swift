/// How the merge priority of two adjacent symbols is found.
enum BPERanks: Sendable {
    /// A merges list (HF tokenizer.json, GGUF gpt2): key `left id << 32 | right id`, value
    /// `rank << 32 | merged id`; a lower rank merges first.
    case pairs([UInt64: UInt64])
    /// The concatenated bytes of the pair, looked up in the vocabulary, give the merged id and
    /// its rank (`rankOfId`, -1 for ids that never result from a merge): tiktoken (the rank is
    /// the id) and SentencePiece (the rank orders scores, highest first).
    case tokens(rankOfId: [Int32])
}

/// What the model does with a character that is not in the vocabulary.
struct UnknownPolicy: Sendable {
    /// Ids of `<0x00>`...`<0xFF>` when byte fallback is on.
    var byteFallback: [Int32]?
    var unknownId: Int32?
    /// Consecutive unknown symbols give one unknown id.
    var fuseUnknown = false
}

/// A byte-pair-encoding model over one pre-tokenized piece: starts from bytes (byte-level BPE)
/// or characters (SentencePiece-style), then repeatedly merges the adjacent pair of the best
/// rank, leftmost first, using a binary heap of candidate pairs (stale entries are
/// re-validated when popped), so a piece of n symbols costs O(n log n).
struct BPEModel: Sendable {
    enum Units: Sendable { case bytes, characters }

    /// Token bytes → id for the model vocabulary.
    let vocab: ByteStringTable
    let ranks: BPERanks
    let units: Units
    /// Id of each single-byte token (byte units), -1 where missing.
    let byteIds: [Int32]
    /// Llama 3's `ignore_merges`: a piece that is a whole token is that token.
    let ignoreMerges: Bool
    let unknown: UnknownPolicy
    /// SentencePiece user-defined symbols: matched whole and never merged.
    let frozen: ByteTrie

    init(vocab: ByteStringTable, ranks: BPERanks, units: Units, ignoreMerges: Bool = false,
         unknown: UnknownPolicy = UnknownPolicy(), frozen: ByteTrie = ByteTrie()) {
        self.vocab = vocab
        self.ranks = ranks
        self.units = units
        self.ignoreMerges = ignoreMerges
        self.unknown = unknown
        self.frozen = frozen
        var byteIds = [Int32](repeating: -1, count: 256)
        if units == .bytes {
            for b in 0..<256 { byteIds[b] = vocab.find([UInt8(b)]) ?? -1 }
        }
        self.byteIds = byteIds
    }

    private static let dead: Int32 = -2

    func encode(_ piece: UnsafeBufferPointer<UInt8>, into out: inout [Int32]) {
        let n = piece.count
        guard n > 0 else { return }
        if ignoreMerges, let id = vocab.find(piece) {
            out.append(id)
            return
        }
        // Symbols as parallel arrays; a merged-away symbol has id `dead`.
        var ids: [Int32] = []
        var starts: [Int32] = []
        var ends: [Int32] = []
        var isFrozen: [Bool] = []
        ids.reserveCapacity(n)
        starts.reserveCapacity(n)
        ends.reserveCapacity(n)
        switch units {
        case .bytes:
            for i in 0..<n {
                ids.append(byteIds[Int(piece[i])])
                starts.append(Int32(i))
                ends.append(Int32(i + 1))
            }
        case .characters:
            var i = 0
            while i < n {
                if !frozen.isEmpty, let (len, id) = frozen.longestMatch(piece, at: i) {
                    ids.append(id)
                    starts.append(Int32(i))
                    ends.append(Int32(i + len))
                    if isFrozen.isEmpty { isFrozen = [Bool](repeating: false, count: ids.count - 1) }
                    isFrozen.append(true)
                    i += len
                    continue
                }
                let len = min(UTF8Scan.length(lead: piece[i]), n - i)
                ids.append(vocab.find(UnsafeBufferPointer(rebasing: piece[i..<(i + len)])) ?? -1)
                starts.append(Int32(i))
                ends.append(Int32(i + len))
                if !isFrozen.isEmpty { isFrozen.append(false) }
                i += len
            }
        }
        let count = ids.count
        var next = [Int32](unsafeUninitializedCapacity: count) { buf, c in
            for i in 0..<count { buf[i] = i + 1 < count ? Int32(i + 1) : -1 }
            c = count
        }
        var prev = [Int32](unsafeUninitializedCapacity: count) { buf, c in
            for i in 0..<count { buf[i] = Int32(i - 1) }
            c = count
        }

        // The rank and merged id of the pair (left, right), if they merge.
        func pair(_ l: Int, _ r: Int) -> (UInt32, Int32)? {
            if !isFrozen.isEmpty && (isFrozen[l] || isFrozen[r]) { return nil }
            switch ranks {
            case .pairs(let merges):
                let a = ids[l], b = ids[r]
                guard a >= 0, b >= 0 else { return nil }
                guard let v = merges[UInt64(UInt32(a)) << 32 | UInt64(UInt32(b))] else { return nil }
                return (UInt32(v >> 32), Int32(truncatingIfNeeded: v & 0xFFFF_FFFF))
            case .tokens(let rankOfId):
                let slice = UnsafeBufferPointer(rebasing: piece[Int(starts[l])..<Int(ends[r])])
                guard let id = vocab.find(slice) else { return nil }
                let rank = rankOfId[Int(id)]
                guard rank >= 0 else { return nil }
                return (UInt32(rank), id)
            }
        }

        var heap = MinHeap()
        for i in 0..<(count - 1) {
            if let (rank, _) = pair(i, i + 1) { heap.push(UInt64(rank) << 32 | UInt64(i)) }
        }
        while let top = heap.pop() {
            let left = Int(top & 0xFFFF_FFFF)
            let rank = UInt32(top >> 32)
            guard ids[left] != Self.dead else { continue }
            let right = Int(next[left])
            guard right >= 0, let (r, merged) = pair(left, right), r == rank else { continue }
            ids[left] = merged
            ends[left] = ends[right]
            ids[right] = Self.dead
            let after = next[right]
            next[left] = after
            if after >= 0 { prev[Int(after)] = Int32(left) }
            let before = Int(prev[left])
            if before >= 0, let (rb, _) = pair(before, left) { heap.push(UInt64(rb) << 32 | UInt64(before)) }
            if after >= 0, let (ra, _) = pair(left, Int(after)) { heap.push(UInt64(ra) << 32 | UInt64(left)) }
        }

        var i = 0
        var lastWasUnknown = false
        while i >= 0 && i < count {
            let id = ids[i]
            if id >= 0 {
                out.append(id)
                lastWasUnknown = false
            } else if let fallback = unknown.byteFallback,
                      (Int(starts[i])..<Int(ends[i])).allSatisfy({ fallback[Int(piece[$0])] >= 0 }) {
                for k in Int(starts[i])..<Int(ends[i]) { out.append(fallback[Int(piece[k])]) }
                lastWasUnknown = false
            } else if let unk = unknown.unknownId {
                if !(unknown.fuseUnknown && lastWasUnknown) { out.append(unk) }
                lastWasUnknown = true
            }
            i = Int(next[i])
        }
    }
}

/// A binary min-heap of packed (rank, position) keys.
struct MinHeap {
    private var items: [UInt64] = []

    mutating func push(_ x: UInt64) {
        items.append(x)
        var i = items.count - 1
        while i > 0 {
            let p = (i - 1) / 2
            guard items[p] > items[i] else { break }
            items.swapAt(p, i)
            i = p
        }
    }

    mutating func pop() -> UInt64? {
        guard let top = items.first else { return nil }
        let last = items.removeLast()
        if !items.isEmpty {
            items[0] = last
            var i = 0
            let n = items.count
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < n && items[l] < items[m] { m = l }
                if r < n && items[r] < items[m] { m = r }
                if m == i { break }
                items.swapAt(i, m)
                i = m
            }
        }
        return top
    }
}
