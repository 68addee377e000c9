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
    /// `minTokens` keys and leaves each member one key of its own.
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

        var tiles: [SharedPrefix] = []
        var members = [order[0]]
        var tokens = shareable(order[0])
        func close() {
            if members.count > 1 && tokens >= minTokens { tiles.append(SharedPrefix(requests: members, tokens: tokens)) }
        }
        for index in order.dropFirst() {
            let joined = min(tokens, commonTokens(members.last!, index))
            if members.count < membersPerTile && joined >= minTokens && members.count * joined >= (members.count - 1) * tokens {
                members.append(index)
                tokens = joined
            } else {
                close()
                members = [index]
                tokens = shareable(index)
            }
        }
        close()
        return tiles
    }
}
