import Support

/// Cached KV prefixes: a tree over blocks of token ids, one block per KV chunk, so a node is
/// exactly the chunk holding its tokens' K/V (SGLang's radix tree at the granularity the
/// virtual tensors share memory in). Pure bookkeeping: the tree never touches memory; it says
/// which chunks a new request can alias, which chunks of a finished request it keeps, and which
/// chunks to give back under pressure, and the caller maps and unmaps.
///
/// - A node's block is `tokensPerBlock` token ids, or fewer for a *partial* leaf (the last chunk
///   of a sequence that ended inside it). A match may end inside a block: the tokens shared
///   with the longest common prefix of a child count, and the request that aliases that chunk
///   copies it when it first writes there (the KV cache's copy on write).
/// - Every path starts at the root of its salt (`cache_salt`): different salts never share.
/// - A request holds a reference on every node of the path it matched, from admission until it
///   finishes, so a path's reference counts never grow from root to leaf: a node nobody
///   references heads a subtree nobody references, and those are the ones eviction may take,
///   leaves first, least recently used first.
struct PrefixTree {
    /// Where a node's chunk lives: chunk `chunk` of the caller's holder `holder`.
    struct Location: Hashable, Sendable {
        var holder: Int
        var chunk: Int
    }

    /// What a lookup found: the nodes of the path (root side first) and how many of the
    /// sequence's tokens their chunks hold; the last node may match only partly.
    struct Match: Equatable {
        var nodes: [Int] = []
        var tokens = 0
        /// Locations of the matched nodes, in path order (chunk i of the sequence is `locations[i]`).
        var locations: [Location] = []
    }

    /// What an insertion decided about a finished sequence's chunks.
    struct Insertion: Equatable {
        /// Chunk indices of the holder the tree now keeps (new nodes).
        var kept: [Int] = []
        /// Chunk indices of the holder that existing nodes moved to (`relocating`).
        var relocated: [Int] = []
        /// Chunk indices of the holder the tree does not need (blocks it already had): unmap them.
        var unneeded: [Int] = []
        /// Where moved nodes lived before, and where nodes the insertion made redundant lived (a
        /// partial leaf that a new full block of the same tokens supersedes): give those back.
        var displaced: [Location] = []
        /// Nodes the insertion removed (the superseded partial leaves).
        var removed = 0
        /// Holders left with no node: free them.
        var emptyHolders: [Int] = []
    }

    private final class Node {
        let id: Int
        let block: [Int]
        var location: Location
        weak var parent: Node?
        var children: [[Int]: Node] = [:]
        var references = 0
        var lastUse: UInt64

        init(id: Int, block: [Int], location: Location, parent: Node?, lastUse: UInt64) {
            self.id = id
            self.block = block
            self.location = location
            self.parent = parent
            self.lastUse = lastUse
        }
    }

    let tokensPerBlock: Int
    private var roots: [String: Node] = [:]
    private var nodes: [Int: Node] = [:]
    private var nextID = 1
    private var clock: UInt64 = 0
    /// Candidates for eviction, (last use, node), oldest first after sorting; entries go stale
    /// when a node is used again, referenced, given a child or removed, and are checked on pop.
    private var candidates = MinHeap<(UInt64, Int)>(by: { $0.0 != $1.0 ? $0.0 < $1.0 : $0.1 < $1.1 })
    /// Nodes per holder, so the caller learns when a holder keeps nothing.
    private var nodesPerHolder: [Int: Int] = [:]
    /// Nodes no running request references.
    private(set) var unreferencedCount = 0

    init(tokensPerBlock: Int) {
        precondition(tokensPerBlock > 0, "a block holds at least one token")
        self.tokensPerBlock = tokensPerBlock
    }

    /// Chunks the tree holds.
    var count: Int { nodes.count }

    /// Chunks that eviction could give back now or after their descendants (unreferenced).
    var evictableCount: Int { unreferencedCount }

    private mutating func root(_ salt: String) -> Node {
        if let root = roots[salt] { return root }
        let root = Node(id: 0, block: [], location: Location(holder: -1, chunk: -1), parent: nil, lastUse: 0)
        roots[salt] = root
        return root
    }

    /// The longest cached prefix of `tokens` (at most `limit` tokens: a request must compute at
    /// least its last token itself), without taking references.
    func lookup(_ tokens: [Int], salt: String = "", limit: Int) -> Match {
        var match = Match()
        guard var node = roots[salt] else { return match }
        let limit = min(limit, tokens.count)
        while match.tokens < limit {
            let start = match.tokens
            let end = min(start + tokensPerBlock, limit)
            if end - start == tokensPerBlock, let child = node.children[Array(tokens[start..<end])] {
                match.nodes.append(child.id)
                match.locations.append(child.location)
                match.tokens = end
                node = child
                continue
            }
            // The child sharing the most leading tokens, partial blocks included.
            var best: (node: Node, shared: Int)?
            for child in node.children.values {
                var shared = 0
                while shared < child.block.count && start + shared < end && child.block[shared] == tokens[start + shared] { shared += 1 }
                if shared > 0 && (shared > (best?.shared ?? 0) || (shared == best?.shared && child.block.count > best!.node.block.count)) {
                    best = (child, shared)
                }
            }
            if let best {
                match.nodes.append(best.node.id)
                match.locations.append(best.node.location)
                match.tokens = start + best.shared
            }
            break
        }
        return match
    }

    /// Takes a reference on every node of `match` (a request now maps their chunks) and marks
    /// them used now.
    mutating func acquire(_ match: Match) {
        clock += 1
        for id in match.nodes {
            guard let node = nodes[id] else { preconditionFailure("acquire of node \(id), which is gone") }
            if node.references == 0 { unreferencedCount -= 1 }
            node.references += 1
            node.lastUse = clock
        }
    }

    /// Gives back the references `acquire(match)` took.
    mutating func release(_ match: Match) {
        clock += 1
        for id in match.nodes.reversed() {
            guard let node = nodes[id] else { preconditionFailure("release of node \(id), which is gone") }
            precondition(node.references > 0, "release of node \(id) without a reference")
            node.references -= 1
            node.lastUse = clock
            if node.references == 0 {
                unreferencedCount += 1
                if node.children.isEmpty { candidates.push((clock, id)) }
            }
        }
    }

    /// Adds the K/V of a sequence that leaves (finished, aborted or preempted): its first
    /// `tokens.count` tokens live in chunks `0...` of `holder`. Blocks the tree lacks become
    /// nodes kept at the holder's chunks; blocks it has already are the holder's to give back,
    /// except nodes in `relocating` (the caller knows the holder holds the very same chunk),
    /// which move to the holder, so a conversation's chunks gather in its latest holder and
    /// the next round can take that one over whole. A partial last block is kept as a partial
    /// leaf unless a sibling already covers it; a longer block (full or partial) supersedes an
    /// unreferenced partial leaf sibling that it extends.
    mutating func insert(_ tokens: [Int], salt: String = "", holder: Int, relocating: Set<Int> = []) -> Insertion {
        clock += 1
        var result = Insertion()
        var node = root(salt)
        var start = 0
        var chunk = 0
        while start < tokens.count {
            let end = min(start + tokensPerBlock, tokens.count)
            let block = Array(tokens[start..<end])
            if let child = node.children[block] {
                if relocating.contains(child.id) {
                    result.displaced.append(child.location)
                    countOut(child.location.holder, emptyHolders: &result.emptyHolders)
                    child.location = Location(holder: holder, chunk: chunk)
                    nodesPerHolder[holder, default: 0] += 1
                    result.relocated.append(chunk)
                } else {
                    result.unneeded.append(chunk)
                }
                child.lastUse = clock
                if child.references == 0 && child.children.isEmpty { candidates.push((clock, child.id)) }
                node = child
            } else if block.count < tokensPerBlock && node.children.values.contains(where: { $0.block.starts(with: block) }) {
                // A longer block already holds these tokens' K/V.
                result.unneeded.append(chunk)
                break
            } else {
                if let partial = node.children.values.first(where: {
                    $0.block.count < block.count && $0.children.isEmpty && $0.references == 0 && block.starts(with: $0.block)
                }) {
                    // The new block holds the partial leaf's tokens and more: the leaf is redundant
                    // (and often the same chunk: a request that took a holder over appends in place).
                    node.children[partial.block] = nil
                    nodes[partial.id] = nil
                    unreferencedCount -= 1
                    result.displaced.append(partial.location)
                    result.removed += 1
                    countOut(partial.location.holder, emptyHolders: &result.emptyHolders)
                }
                let child = Node(id: nextID, block: block, location: Location(holder: holder, chunk: chunk), parent: node, lastUse: clock)
                nextID += 1
                node.children[block] = child
                nodes[child.id] = child
                nodesPerHolder[holder, default: 0] += 1
                unreferencedCount += 1
                result.kept.append(chunk)
                node = child
            }
            start = end
            chunk += 1
        }
        if node.children.isEmpty, node.id != 0, node.references == 0 { candidates.push((clock, node.id)) }
        // A holder that lost its last node here but gained one back is not empty after all.
        result.emptyHolders.removeAll { nodesPerHolder[$0] != nil }
        return result
    }

    /// One node fewer at `holder`; notes the holder when it has none left.
    private mutating func countOut(_ holder: Int, emptyHolders: inout [Int]) {
        let left = nodesPerHolder[holder, default: 1] - 1
        if left == 0 {
            nodesPerHolder[holder] = nil
            emptyHolders.append(holder)
        } else {
            nodesPerHolder[holder] = left
        }
    }

    /// Removes up to `count` unreferenced leaves, least recently used first (a parent becomes a
    /// leaf, and a candidate, once its last child goes). Returns their locations and the
    /// holders left with no node: the caller unmaps those chunks and frees those holders.
    mutating func evict(_ count: Int) -> (locations: [Location], emptyHolders: [Int]) {
        var locations: [Location] = []
        var empty: [Int] = []
        while locations.count < count, let (stamp, id) = candidates.pop() {
            // Stale entries: the node went, is referenced, has children, or was used since
            // (then it has a newer entry of its own).
            guard let node = nodes[id], node.lastUse == stamp, node.references == 0, node.children.isEmpty else { continue }
            remove(node, into: &locations, emptyHolders: &empty)
        }
        return (locations, empty)
    }

    /// Removes every node at `holder` that nobody references and that is a leaf, or becomes one
    /// as the others go (deepest first), whatever their last use: a packed holder's slab goes back
    /// to the device whole, so once eviction takes one of its blocks it takes all it can.
    mutating func evictHolder(_ holder: Int) -> (locations: [Location], emptyHolders: [Int]) {
        var locations: [Location] = []
        var empty: [Int] = []
        for node in nodes.values.filter({ $0.location.holder == holder }).sorted(by: { $0.location.chunk > $1.location.chunk })
        where node.references == 0 && node.children.isEmpty && nodes[node.id] != nil {
            remove(node, into: &locations, emptyHolders: &empty)
        }
        return (locations, empty)
    }

    /// Takes an unreferenced leaf out of the tree.
    private mutating func remove(_ node: Node, into locations: inout [Location], emptyHolders empty: inout [Int]) {
        nodes[node.id] = nil
        unreferencedCount -= 1
        if let parent = node.parent {
            parent.children[node.block] = nil
            if parent.id != 0 && parent.children.isEmpty && parent.references == 0 { candidates.push((parent.lastUse, parent.id)) }
        }
        locations.append(node.location)
        countOut(node.location.holder, emptyHolders: &empty)
    }

    /// Every node's tokens from its root (tests' brute-force model).
    func pathsForTesting(salt: String) -> [[Int]] {
        var out: [[Int]] = []
        func visit(_ node: Node, _ prefix: [Int]) {
            for child in node.children.values {
                out.append(prefix + child.block)
                visit(child, prefix + child.block)
            }
        }
        if let root = roots[salt] { visit(root, []) }
        return out
    }

    /// Every node: its salt, its own block's tokens and where it lives (tests).
    func nodesForTesting() -> [(salt: String, tokens: [Int], holder: Int, chunk: Int)] {
        var out: [(salt: String, tokens: [Int], holder: Int, chunk: Int)] = []
        func visit(_ node: Node, _ salt: String) {
            for child in node.children.values {
                out.append((salt, child.block, child.location.holder, child.location.chunk))
                visit(child, salt)
            }
        }
        for (salt, root) in roots { visit(root, salt) }
        return out
    }

    /// Moves the nodes `ids` to the same chunks of `holder` (a packed copy of their blocks now
    /// lives there). Returns where they lived before and the holders left with no node.
    mutating func relocate(_ ids: [Int], to holder: Int) -> (displaced: [Location], emptyHolders: [Int]) {
        var displaced: [Location] = []
        var empty: [Int] = []
        for id in ids {
            guard let node = nodes[id] else { preconditionFailure("relocate of node \(id), which is gone") }
            displaced.append(node.location)
            countOut(node.location.holder, emptyHolders: &empty)
            node.location = Location(holder: holder, chunk: node.location.chunk)
            nodesPerHolder[holder, default: 0] += 1
        }
        empty.removeAll { nodesPerHolder[$0] != nil }
        return (displaced, empty)
    }

    /// How many requests reference node `id` now (0 for a node that is gone).
    func references(of id: Int) -> Int { nodes[id]?.references ?? 0 }

    /// Where node `id` lives now (nodes move when `insert` relocates them), nil once it is gone.
    func location(of id: Int) -> Location? { nodes[id]?.location }

    /// Every node's location, for audits.
    var allLocations: [Location] { nodes.values.map(\.location) }

    /// Checks the tree's invariants (tests): references never grow from root to leaf, the
    /// counts agree, every non-root block is full except leaves, and holders are counted right.
    func audit() -> [String] {
        var problems: [String] = []
        var unreferenced = 0
        var perHolder: [Int: Int] = [:]
        var seen = 0
        func visit(_ node: Node, depth: Int) {
            for (key, child) in node.children {
                seen += 1
                if key != child.block { problems.append("node \(child.id) filed under another block") }
                if nodes[child.id] !== child { problems.append("node \(child.id) missing from the index") }
                if child.references > node.references && node.id != 0 {
                    problems.append("node \(child.id) has \(child.references) references, its parent \(node.references)")
                }
                if child.block.count < tokensPerBlock && !child.children.isEmpty { problems.append("partial node \(child.id) has children") }
                if child.block.isEmpty || child.block.count > tokensPerBlock { problems.append("node \(child.id) holds \(child.block.count) tokens") }
                if child.location.chunk != depth { problems.append("node \(child.id) at depth \(depth) lives in chunk \(child.location.chunk)") }
                if child.references == 0 { unreferenced += 1 }
                perHolder[child.location.holder, default: 0] += 1
                visit(child, depth: depth + 1)
            }
        }
        for root in roots.values { visit(root, depth: 0) }
        if seen != nodes.count { problems.append("\(nodes.count) nodes indexed, \(seen) reachable") }
        if unreferenced != unreferencedCount { problems.append("\(unreferencedCount) unreferenced counted, \(unreferenced) found") }
        if perHolder != nodesPerHolder { problems.append("nodes per holder \(nodesPerHolder), found \(perHolder)") }
        return problems
    }
}
