import Testing
@testable import Engine
import VTensor

@Suite struct PrefixTreeTests {
    @Test func sharedPrefixesBranchesInsideABlockAndSalts() {
        var tree = PrefixTree(tokensPerBlock: 4)
        let a = Array(0..<10)  // blocks [0-3] [4-7] [8 9]
        #expect(tree.insert(a, holder: 1) == .init(kept: [0, 1, 2], unneeded: []))
        // Shares 6 tokens: two blocks match in full... the second only up to token 5.
        let b = [0, 1, 2, 3, 4, 5, 99, 98, 97]
        var m = tree.lookup(b, limit: b.count - 1)
        #expect(m.tokens == 6 && m.locations == [.init(holder: 1, chunk: 0), .init(holder: 1, chunk: 1)])
        // Inserting b keeps its own second and third blocks; the first is the tree's already.
        #expect(tree.insert(b, holder: 2) == .init(kept: [1, 2], unneeded: [0]))
        m = tree.lookup(b + [5], limit: 10)
        #expect(m.tokens == 9 && m.locations.map(\.holder) == [1, 2, 2])
        // A request must compute its last token: a full match stops one short.
        m = tree.lookup(a, limit: a.count - 1)
        #expect(m.tokens == 9)
        // Another salt sees nothing.
        #expect(tree.lookup(a, salt: "tenant", limit: 9).tokens == 0)
        #expect(tree.insert(a, salt: "tenant", holder: 3).kept == [0, 1, 2])
        #expect(tree.count == 8 && tree.audit().isEmpty)
        // A partial block another block already covers is not kept.
        #expect(tree.insert([0, 1, 2, 3, 4, 5], holder: 4) == .init(kept: [], unneeded: [0, 1]))
    }

    /// A conversation's next round: the nodes it matched move to its own holder (which holds
    /// the same chunks), and its full block supersedes the partial leaf of the round before.
    @Test func relocationGathersAConversationInItsLatestHolder() {
        var tree = PrefixTree(tokensPerBlock: 4)
        let first = Array(0..<10)  // [0-3] [4-7] [8 9]
        _ = tree.insert(first, holder: 1)
        let second = first + [10, 11, 12]  // [0-3] [4-7] [8-11] [12]
        let match = tree.lookup(second, limit: second.count - 1)
        #expect(match.tokens == 10 && match.locations.map(\.holder) == [1, 1, 1])
        let result = tree.insert(second, holder: 2, relocating: Set(match.nodes))
        #expect(result.relocated == [0, 1] && result.kept == [2, 3] && result.unneeded.isEmpty)
        #expect(result.removed == 1, "the partial leaf [8 9] is superseded by [8-11]")
        #expect(Set(result.displaced) == [.init(holder: 1, chunk: 0), .init(holder: 1, chunk: 1), .init(holder: 1, chunk: 2)])
        #expect(result.emptyHolders == [1])
        #expect(tree.lookup(second + [13], limit: 13).locations.map(\.holder) == [2, 2, 2, 2])
        #expect(tree.count == 4 && tree.audit().isEmpty)
        // A referenced partial leaf is not superseded (a running request reads through it).
        _ = tree.insert([50, 51], holder: 3)
        let reader = tree.lookup([50, 51, 52], limit: 2)
        tree.acquire(reader)
        let longer = tree.insert([50, 51, 52, 53], holder: 4)
        #expect(longer.removed == 0 && longer.kept == [0] && tree.count == 6)
        tree.release(reader)
        #expect(tree.audit().isEmpty)
        // An unreferenced one is, by a partial block that extends it too.
        _ = tree.insert([60, 61], holder: 5)
        let extended = tree.insert([60, 61, 62], holder: 6)
        #expect(extended.removed == 1 && extended.kept == [0] && extended.displaced == [.init(holder: 5, chunk: 0)])
        #expect(extended.emptyHolders == [5] && tree.count == 7 && tree.audit().isEmpty)
    }

    /// A packed copy: nodes move to a new holder's same chunks (the old holder empties), and
    /// evicting that holder takes every block of it nobody references, deepest first, but none
    /// that a request reads or that another holder's block hangs from.
    @Test func relocatedNodesAndAHolderEvictedWhole() {
        var tree = PrefixTree(tokensPerBlock: 2)
        let system = Array(0..<8)  // four blocks at holder 1
        _ = tree.insert(system, holder: 1)
        let match = tree.lookup(system + [9], limit: 8)
        let moved = tree.relocate(match.nodes, to: 7)
        #expect(moved.displaced == (0..<4).map { .init(holder: 1, chunk: $0) } && moved.emptyHolders == [1])
        #expect(tree.lookup(system + [9], limit: 8).locations.map(\.holder) == [7, 7, 7, 7])
        #expect(tree.audit().isEmpty)
        // A question hangs from the third block; a request reads the first two.
        _ = tree.insert(Array(0..<6) + [40, 41], holder: 8)
        let reader = tree.lookup([0, 1, 2, 3, 99], limit: 4)
        tree.acquire(reader)
        let out = tree.evictHolder(7)
        // Only the fourth block goes: the third has a child at holder 8, the first two are read.
        #expect(out.locations == [.init(holder: 7, chunk: 3)] && out.emptyHolders.isEmpty)
        #expect(tree.count == 4 && tree.audit().isEmpty)
        tree.release(reader)
        _ = tree.evict(1)  // the question, the only leaf
        let rest = tree.evictHolder(7)
        #expect(rest.locations == [2, 1, 0].map { .init(holder: 7, chunk: $0) } && rest.emptyHolders == [7])
        #expect(tree.count == 0 && tree.audit().isEmpty)
    }

    @Test func evictionTakesUnreferencedLeavesOldestFirst() {
        var tree = PrefixTree(tokensPerBlock: 2)
        _ = tree.insert([1, 2, 3, 4, 5, 6], holder: 1)     // chain of 3
        _ = tree.insert([1, 2, 3, 4, 7, 8], holder: 2)     // branches at the third block
        _ = tree.insert([9, 9], holder: 3)
        let inUse = tree.lookup([1, 2, 3, 4, 7, 8, 0], limit: 6)
        tree.acquire(inUse)
        #expect(tree.evictableCount == 2)  // [5 6] and [9 9]
        // [5 6] was inserted before [9 9]: it goes first; the referenced path never.
        var out = tree.evict(1)
        #expect(out.locations == [.init(holder: 1, chunk: 2)] && out.emptyHolders.isEmpty)
        out = tree.evict(10)
        #expect(out.locations == [.init(holder: 3, chunk: 0)] && out.emptyHolders == [3])
        tree.release(inUse)
        // Now the whole tree can go, leaves first: [7 8], then [3 4] and [1 2].
        out = tree.evict(10)
        #expect(out.locations == [.init(holder: 2, chunk: 2), .init(holder: 1, chunk: 1), .init(holder: 1, chunk: 0)])
        #expect(Set(out.emptyHolders) == [1, 2] && tree.count == 0 && tree.audit().isEmpty)
    }

    /// Thousands of random operations against a brute-force model: every lookup returns the
    /// longest prefix any cached path shares with the sequence, the chunks it names hold exactly
    /// those tokens, referenced nodes are never evicted, and the counts stay exact.
    @Test(arguments: [1, 3, 16]) func randomOperationsAgainstAModel(tokensPerBlock: Int) {
        var rng = SplitMix64(seed: UInt64(tokensPerBlock) &* 7 &+ 1)
        var tree = PrefixTree(tokensPerBlock: tokensPerBlock)
        // What the caller's holders hold: holder -> chunk -> tokens (the "KV contents").
        var holders: [Int: [Int: [Int]]] = [:]
        var nextHolder = 1
        var held: [PrefixTree.Match] = []
        var relocations = 0, superseded = 0
        let stems: [[Int]] = (0..<6).map { _ in (0..<Int(rng.next() % 40)).map { _ in Int(rng.next() % 5) } }
        func randomSequence() -> [Int] {
            let stem = stems[Int(rng.next() % UInt64(stems.count))]
            let cut = stem.isEmpty ? 0 : Int(rng.next() % UInt64(stem.count + 1))
            return Array(stem[..<cut]) + (0..<Int(rng.next() % 30)).map { _ in Int(rng.next() % 5) }
        }
        func contents(_ match: PrefixTree.Match) -> [Int] {
            var tokens: [Int] = []
            for location in match.locations { tokens += holders[location.holder]![location.chunk]! }
            return Array(tokens.prefix(match.tokens))
        }
        for _ in 0..<1500 {
            switch rng.next() % 5 {
            case 0, 1:
                let sequence = randomSequence()
                guard !sequence.isEmpty else { continue }
                let holder = nextHolder
                nextHolder += 1
                let salt = rng.next() % 4 == 0 ? "b" : ""
                // Half the time the new holder holds the chunks it matched too (a request that
                // aliased them): those nodes may move to it.
                let relocating = rng.next() % 2 == 0 ? Set(tree.lookup(sequence, salt: salt, limit: sequence.count).nodes) : []
                let result = tree.insert(sequence, salt: salt, holder: holder, relocating: relocating)
                relocations += result.relocated.count
                superseded += result.removed
                // Every chunk of the sequence is kept, relocated or unneeded, once.
                let chunks = (sequence.count + tokensPerBlock - 1) / tokensPerBlock
                let all = result.kept + result.relocated + result.unneeded
                #expect(Set(all).count == all.count && Set(all).isSubset(of: Set(0..<chunks)))
                if relocating.isEmpty { #expect(result.relocated.isEmpty) }
                // Moved nodes and superseded partial leaves leave their old places.
                #expect(result.displaced.count == result.relocated.count + result.removed)
                for location in result.displaced {
                    #expect(holders[location.holder]?[location.chunk] != nil, "displaced \(location) held nothing")
                    holders[location.holder]?[location.chunk] = nil
                }
                for empty in result.emptyHolders {
                    #expect(holders[empty]?.isEmpty ?? true, "holder \(empty) still has chunks")
                    holders[empty] = nil
                }
                #expect(holders.filter { $0.value.isEmpty }.isEmpty, "a holder left with nothing was not reported")
                var chunkTokens: [Int: [Int]] = [:]
                for c in result.kept + result.relocated {
                    chunkTokens[c] = Array(sequence[(c * tokensPerBlock)..<min(sequence.count, (c + 1) * tokensPerBlock)])
                }
                if !chunkTokens.isEmpty { holders[holder] = chunkTokens }
            case 2:
                let sequence = randomSequence()
                let salt = rng.next() % 4 == 0 ? "b" : ""
                let limit = max(0, sequence.count - 1)
                let match = tree.lookup(sequence, salt: salt, limit: limit)
                // The model: the longest prefix any cached path of this salt shares.
                var best = 0
                for entry in tree.pathsForTesting(salt: salt) {
                    var shared = 0
                    while shared < entry.count && shared < limit && entry[shared] == sequence[shared] { shared += 1 }
                    best = max(best, shared)
                }
                #expect(match.tokens == best, "lookup found \(match.tokens) of \(sequence), the model \(best)")
                #expect(contents(match) == Array(sequence.prefix(match.tokens)))
                #expect(match.locations.count == (match.tokens + tokensPerBlock - 1) / tokensPerBlock)
                if !match.nodes.isEmpty && rng.next() % 2 == 0 {
                    tree.acquire(match)
                    held.append(match)
                }
            case 3:
                if !held.isEmpty {
                    let match = held.remove(at: Int(rng.next() % UInt64(held.count)))
                    tree.release(match)
                }
            default:
                let pinned = Set(held.flatMap(\.locations))
                let before = tree.count
                let out = tree.evict(Int(rng.next() % 4))
                #expect(tree.count == before - out.locations.count)
                #expect(pinned.isDisjoint(with: out.locations), "a referenced chunk was evicted")
                for location in out.locations { holders[location.holder]![location.chunk] = nil }
                for holder in out.emptyHolders {
                    #expect(holders[holder]?.isEmpty ?? true, "holder \(holder) still has chunks")
                    holders[holder] = nil
                }
            }
            #expect(tree.audit().isEmpty, "\(tree.audit())")
            #expect(tree.count == holders.values.reduce(0) { $0 + $1.count })
        }
        #expect(relocations > 0 && (superseded > 0 || tokensPerBlock == 1), "the run moved \(relocations) nodes and superseded \(superseded) leaves")
        for match in held { tree.release(match) }
        _ = tree.evict(Int.max)
        #expect(tree.count == 0 && tree.evictableCount == 0)
    }
}
