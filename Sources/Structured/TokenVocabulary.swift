import Tokenizers

/// A tokenizer's text tokens as bytes, sorted so that tokens sharing a prefix sit together:
/// a mask walks them in order and matches each shared prefix once, skipping every token under
/// a prefix the grammar refuses.
///
/// Special tokens (end of turn, chat markers) and ids with no bytes are not text: a grammar
/// never allows them (the end-of-sequence ids are added by the caller where the grammar may end).
public final class TokenVocabulary: Sendable {
    /// Ids `0..<size` (the tokenizer's vocabulary; a model's logits may have more rows, never allowed).
    public let size: Int
    /// Spaces the detokenizer drops from the start of the output (SentencePiece).
    public let leadingSpacesStripped: Int
    let tokenBytes: [[UInt8]]
    let isText: [Bool]
    /// Text token ids in byte order.
    let sorted: [Int32]
    /// `common[i]`: bytes `sorted[i]` shares with `sorted[i - 1]` (0 for the first).
    let common: [Int32]
    /// All sorted tokens' bytes, back to back; token i's at `offsets[i]..<offsets[i + 1]`.
    let flat: [UInt8]
    let offsets: [Int32]
    /// The most bytes of any text token (how deep a mask's walk goes).
    let longestToken: Int

    public convenience init(tokenizer: Tokenizer) {
        let ids = 0..<tokenizer.vocabularySize
        self.init(tokens: ids.map { tokenizer.bytes(of: $0) }, special: tokenizer.specialTokenIds,
                  leadingSpacesStripped: tokenizer.leadingSpacesStripped)
    }

    /// - Parameters:
    ///   - tokens: each id's bytes.
    ///   - special: ids that are not text.
    public init(tokens: [[UInt8]], special: Set<Int> = [], leadingSpacesStripped: Int = 0) {
        size = tokens.count
        self.leadingSpacesStripped = leadingSpacesStripped
        tokenBytes = tokens
        let text = tokens.indices.map { !tokens[$0].isEmpty && !special.contains($0) }
        isText = text
        let order = tokens.indices.filter { text[$0] }.sorted { a, b in
            tokens[a].lexicographicallyPrecedes(tokens[b]) || (tokens[a] == tokens[b] && a < b)
        }
        sorted = order.map { Int32($0) }
        var common: [Int32] = []
        var flat: [UInt8] = []
        var offsets: [Int32] = [0]
        common.reserveCapacity(order.count)
        for (i, id) in order.enumerated() {
            let bytes = tokens[id]
            var shared = 0
            if i > 0 {
                let before = tokens[order[i - 1]]
                while shared < min(before.count, bytes.count) && before[shared] == bytes[shared] { shared += 1 }
            }
            common.append(Int32(shared))
            flat += bytes
            offsets.append(Int32(flat.count))
        }
        self.common = common
        self.flat = flat
        self.offsets = offsets
        longestToken = order.map { tokens[$0].count }.max() ?? 0
    }

    /// The bytes of a token, or nil when it is not text.
    public func text(of id: Int) -> [UInt8]? {
        id >= 0 && id < size && isText[id] ? tokenBytes[id] : nil
    }

    public var textTokenCount: Int { sorted.count }
}

/// Which token ids may come next: one bit per id.
public struct TokenMask: Sendable, Equatable {
    public private(set) var words: [UInt64]
    public let size: Int

    public init(size: Int) {
        self.size = size
        words = [UInt64](repeating: 0, count: (size + 63) / 64)
    }

    @inline(__always)
    public func allows(_ id: Int) -> Bool {
        id >= 0 && id < size && words[id >> 6] & (UInt64(1) << UInt64(id & 63)) != 0
    }

    @inline(__always)
    public mutating func insert(_ id: Int) {
        guard id >= 0 && id < size else { return }
        words[id >> 6] |= UInt64(1) << UInt64(id & 63)
    }

    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// The allowed ids, ascending.
    public var ids: [Int] {
        var out: [Int] = []
        for (w, word) in words.enumerated() {
            var bits = word
            while bits != 0 {
                out.append(w * 64 + bits.trailingZeroBitCount)
                bits &= bits - 1
            }
        }
        return out
    }

    /// The ids below `limit` that are not allowed, ascending.
    public func refused(below limit: Int) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(max(0, limit - count))
        for id in 0..<limit where !allows(id) { out.append(id) }
        return out
    }
}
