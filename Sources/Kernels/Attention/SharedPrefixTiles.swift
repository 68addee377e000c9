extension DecodeSchedule {
    /// Tiles of requests whose first keys are one physical copy, for the cascade decode.
    ///
    /// `blocks[i]` names request i's leading blocks (chunks or pages) by physical identity: two
    /// requests with the same identity at block j read the same bytes for its tokens. Only
    /// blocks that are full and stay unchanged while the request runs belong there (the
    /// prefix it aliased), and an empty list opts a request out.
    ///
    /// Requests are sorted by their identities, so those sharing the longest prefixes sit next
    /// to each other; a run of neighbours becomes a tile while adding the next one does not
    /// lower what the tile spares, (members - 1) x shared keys. A tile shares at least
    /// `minTokens` keys and leaves each member one key of its own. Every tile reads its keys
    /// through the first request of the order that holds them (`SharedPrefix.reader`).
    public static func sharedPrefixTiles(blocks: [[UInt64]], requests: [Request], tokensPerBlock: Int, membersPerTile: Int,
                                         minTokens: Int = 64) -> [SharedPrefix] {
        precondition(blocks.count == requests.count && tokensPerBlock >= 1, "one identity list per request")
        guard membersPerTile > 1 else { return [] }
        // Keys a request can share: its identified blocks, short of its last key.
        func shareable(_ i: Int) -> Int { min(blocks[i].count * tokensPerBlock, requests[i].length - 1) }
        let candidates = requests.indices.filter {
            requests[$0].queryCount == 1 && !blocks[$0].isEmpty && shareable($0) >= minTokens
        }
        guard candidates.count > 1 else { return [] }
        let order = candidates.sorted { a, b in
            let x = blocks[a], y = blocks[b]
            for j in 0..<min(x.count, y.count) where x[j] != y[j] { return x[j] < y[j] }
            return x.count != y.count ? x.count < y.count : a < b
        }
        func commonTokens(_ a: Int, _ b: Int) -> Int {
            let x = blocks[a], y = blocks[b]
            var j = 0
            while j < x.count && j < y.count && x[j] == y[j] { j += 1 }
            return min(j * tokensPerBlock, shareable(a), shareable(b))
        }

        // Identities neighbours in the order have in common: requests sharing a prefix of them
        // are one stretch of the order.
        let sameBlocks = [0] + (1..<order.count).map { k -> Int in
            let x = blocks[order[k - 1]], y = blocks[order[k]]
            var j = 0
            while j < x.count && j < y.count && x[j] == y[j] { j += 1 }
            return j
        }

        var tiles: [SharedPrefix] = []
        var members = [order[0]]
        var start = 0  // the first member's place in the order
        var tokens = shareable(order[0])
        func close() {
            guard members.count > 1 && tokens >= minTokens else { return }
            // The reader: the first request of the order holding the tile's blocks, so every tile
            // of one prefix reads it through the same request.
            let needed = (tokens + tokensPerBlock - 1) / tokensPerBlock
            var first = start
            while first > 0 && sameBlocks[first] >= needed { first -= 1 }
            tiles.append(SharedPrefix(requests: members, tokens: tokens, reader: order[first]))
        }
        for (position, index) in order.enumerated().dropFirst() {
            let joined = min(tokens, commonTokens(members.last!, index))
            if members.count < membersPerTile && joined >= minTokens && members.count * joined >= (members.count - 1) * tokens {
                members.append(index)
                tokens = joined
            } else {
                close()
                members = [index]
                start = position
                tokens = shareable(index)
            }
        }
        close()
        return tiles
    }
}
