/// A token matched whole in the input text before normalization and pre-tokenization
/// (HF's added tokens: special tokens such as `<|im_start|>` and user additions).
public struct AddedToken: Sendable, Equatable {
    public var content: String
    public var id: Int
    /// Special tokens are skipped by `decode(skipSpecialTokens: true)`.
    public var special: Bool
    /// Swallow the whitespace before / after the token.
    public var lstrip: Bool
    public var rstrip: Bool
    /// Match only when not inside a word (no letter, digit or `_` adjacent).
    public var singleWord: Bool

    public init(content: String, id: Int, special: Bool, lstrip: Bool = false, rstrip: Bool = false, singleWord: Bool = false) {
        self.content = content
        self.id = id
        self.special = special
        self.lstrip = lstrip
        self.rstrip = rstrip
        self.singleWord = singleWord
    }
}

/// Splits text into plain segments and added tokens: leftmost-longest matches of the token
/// contents, then each token's flags (strip whitespace around it, single-word check).
struct AddedTokenMatcher: Sendable {
    let tokens: [AddedToken]
    private var trie = ByteTrie()

    enum Segment: Equatable {
        case text(Range<Int>)
        case token(Int)
    }

    init(_ tokens: [AddedToken]) {
        self.tokens = tokens
        for (i, t) in tokens.enumerated() where !t.content.isEmpty {
            trie.insert(Array(t.content.utf8), value: Int32(i))
        }
    }

    var isEmpty: Bool { trie.isEmpty }

    func split(_ text: UnsafeBufferPointer<UInt8>) -> [Segment] {
        guard !trie.isEmpty else { return text.isEmpty ? [] : [.text(0..<text.count)] }
        var out: [Segment] = []
        var textStart = 0
        var i = 0
        let n = text.count
        while i < n {
            guard let (len, index) = trie.longestMatch(text, at: i) else { i += 1; continue }
            let token = tokens[Int(index)]
            var start = i, end = i + len
            if token.singleWord {
                let before = start > 0 ? Self.scalar(before: start, in: text) : nil
                let after = end < n ? UTF8Scan.decode(text, at: end).0 : nil
                if let b = before, Self.isWordScalar(b) { i = end; continue }
                if let a = after, Self.isWordScalar(a) { i = end; continue }
            }
            if token.lstrip {
                while start > textStart, let s = Self.scalar(before: start, in: text), Self.isSpace(s) {
                    start -= String(Unicode.Scalar(s)!).utf8.count
                }
            }
            if token.rstrip {
                while end < n {
                    let (s, l) = UTF8Scan.decode(text, at: end)
                    guard Self.isSpace(s) else { break }
                    end += l
                }
            }
            if start > textStart { out.append(.text(textStart..<start)) }
            out.append(.token(token.id))
            textStart = end
            i = end
        }
        if textStart < n { out.append(.text(textStart..<n)) }
        return out
    }

    private static func scalar(before i: Int, in text: UnsafeBufferPointer<UInt8>) -> UInt32? {
        var s = i - 1
        while s > 0 && text[s] & 0xC0 == 0x80 && i - s < 4 { s -= 1 }
        let (v, len) = UTF8Scan.decode(text, at: s)
        return s + len == i ? v : UInt32(text[i - 1])
    }

    private static func isSpace(_ v: UInt32) -> Bool { CharacterClass.of(v) & CharacterClass.whitespace != 0 }

    private static func isWordScalar(_ v: UInt32) -> Bool {
        v == 0x5F || CharacterClass.of(v) & (CharacterClass.letter | CharacterClass.number) != 0
    }
}
