/// A trie over byte strings for leftmost-longest matching of added tokens and of
/// SentencePiece's user-defined symbols.
struct ByteTrie: Sendable {
    private var children: [[UInt8: Int32]] = [[:]]
    private var values: [Int32] = [-1]
    /// Whether any key starts with this byte (a fast reject for most positions).
    private var firstBytes = [Bool](repeating: false, count: 256)

    var isEmpty: Bool { children[0].isEmpty }

    mutating func insert(_ key: [UInt8], value: Int32) {
        guard let first = key.first else { return }
        firstBytes[Int(first)] = true
        var node = 0
        for b in key {
            if let next = children[node][b] {
                node = Int(next)
            } else {
                children.append([:])
                values.append(-1)
                children[node][b] = Int32(children.count - 1)
                node = children.count - 1
            }
        }
        if values[node] < 0 { values[node] = value }
    }

    /// The longest key starting at `i`: (length, value).
    func longestMatch(_ bytes: UnsafeBufferPointer<UInt8>, at i: Int) -> (Int, Int32)? {
        guard firstBytes[Int(bytes[i])] else { return nil }
        var node = 0
        var best: (Int, Int32)? = nil
        var j = i
        while j < bytes.count, let next = children[node][bytes[j]] {
            node = Int(next)
            j += 1
            if values[node] >= 0 { best = (j - i, values[node]) }
        }
        return best
    }
}
