/// A slow, obviously-correct matcher over ``GrammarExpression``s: the oracle that the compiled
/// matcher and the schema and regex translations are tested against. Not for generation.
public struct GrammarReference: Sendable {
    public let grammar: Grammar

    public init(_ grammar: Grammar) { self.grammar = grammar }

    /// Whether the whole of `text` is in the grammar's language.
    public func accepts(_ text: String) -> Bool { accepts(Array(text.utf8)) }

    public func accepts(_ bytes: [UInt8]) -> Bool {
        guard let root = grammar.rules[grammar.root] else { return false }
        var memo: [Key: Set<Int>] = [:]
        return ends(root, bytes, from: 0, depth: 0, memo: &memo).contains(bytes.count)
    }

    /// Whether `text` can be extended to a string in the language (the empty extension included).
    public func acceptsPrefix(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard let root = grammar.rules[grammar.root] else { return false }
        var memo: [Key: Set<Int>] = [:]
        return ends(root, bytes, from: 0, depth: 0, memo: &memo, prefix: true).contains(bytes.count)
    }

    struct Key: Hashable {
        var rule: String
        var from: Int
        var prefix: Bool
    }

    /// Every end position of a match of `e` starting at `from`. In prefix mode, reaching the end
    /// of the input anywhere counts as a match ending there (the rest could follow).
    private func ends(_ e: GrammarExpression, _ s: [UInt8], from: Int, depth: Int, memo: inout [Key: Set<Int>], prefix: Bool = false) -> Set<Int> {
        precondition(depth < 10_000, "grammar recursion too deep for the reference matcher (left recursion?)")
        if prefix && from == s.count { return [from] }
        switch e {
        case .bytes(let set):
            return from < s.count && set.contains(s[from]) ? [from + 1] : []
        case .literal(let bytes):
            var i = 0
            while i < bytes.count {
                if from + i == s.count { return prefix ? [s.count] : [] }
                if s[from + i] != bytes[i] { return [] }
                i += 1
            }
            return [from + bytes.count]
        case .rule(let name):
            let key = Key(rule: name, from: from, prefix: prefix)
            if let hit = memo[key] { return hit }
            guard let body = grammar.rules[name] else { return [] }
            let result = ends(body, s, from: from, depth: depth + 1, memo: &memo, prefix: prefix)
            memo[key] = result
            return result
        case .sequence(let parts):
            var at: Set<Int> = [from]
            for part in parts {
                var next: Set<Int> = []
                for p in at { next.formUnion(ends(part, s, from: p, depth: depth + 1, memo: &memo, prefix: prefix)) }
                at = next
                if at.isEmpty { break }
            }
            return at
        case .choice(let options):
            var out: Set<Int> = []
            for o in options { out.formUnion(ends(o, s, from: from, depth: depth + 1, memo: &memo, prefix: prefix)) }
            return out
        case .repeat(let body, let lo, let hi):
            var out: Set<Int> = lo == 0 ? [from] : []
            var at: Set<Int> = [from]
            var count = 0
            var seen: Set<Int> = [from]
            while !at.isEmpty && (hi == nil || count < hi!) {
                var next: Set<Int> = []
                for p in at { next.formUnion(ends(body, s, from: p, depth: depth + 1, memo: &memo, prefix: prefix)) }
                count += 1
                if count >= lo { out.formUnion(next) }
                // Unbounded: stop once no new position appears (an empty match adds none).
                if hi == nil { next.subtract(seen); seen.formUnion(next) }
                at = next
            }
            return out
        }
    }
}
