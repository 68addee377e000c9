/// GBNF grammar text (llama.cpp's notation, which vLLM also takes as `structured_outputs.grammar`)
/// as a ``Grammar``.
///
/// A grammar is a list of rules `name ::= alternatives`; the root rule is `root`. A rule may span
/// lines: the next rule starts where a name is followed by `::=`. Names are letters, digits, `-`
/// and `_`. An alternative is a sequence of
/// - string literals `"..."` with the escapes `\n \t \r \\ \" \' \[ \] \- \/ \^`, `\xHH`,
///   `\uHHHH`, `\UHHHHHHHH`;
/// - character classes `[...]` and `[^...]` over Unicode scalars, with ranges `a-z` and the same
///   escapes (`]` must be escaped inside; a `-` first or last is literal);
/// - `.`, any one character;
/// - rule references and groups `( ... )`;
/// each optionally followed by `*`, `+`, `?`, `{m}`, `{m,}` or `{m,n}`. `#` starts a comment
/// that runs to the end of the line.
///
/// Refused, as a ``GrammarError``: syntax errors (with line:column), a reference to an undefined
/// rule, a rule defined twice, no `root` rule, left recursion. Repeats of parts that can match
/// the empty string are rewritten (``GrammarChecks/removingNullableRepeats(_:)-(Grammar)``),
/// so the result may have extra rules named `<rule>_nonempty`.
public enum GBNFGrammar {
    public static func parse(_ text: String) throws -> Grammar {
        var parser = GBNFParser(text)
        try parser.parseRules()
        var g = Grammar(root: "root")
        for rule in parser.rules { g.define(rule.name, rule.body) }
        for (name, at) in parser.references where g.rules[name] == nil {
            throw parser.error("undefined rule '\(name)'", at: at)
        }
        if g.rules["root"] == nil { throw GrammarError("GBNF: the grammar has no rule named 'root'") }
        try GrammarChecks.checkLeftRecursion(g)
        return GrammarChecks.removingNullableRepeats(g)
    }
}

private struct GBNFParser {
    let s: [Unicode.Scalar]
    var i = 0
    var rules: [(name: String, body: GrammarExpression, at: Int)] = []
    /// Each referenced rule name with the position of its first reference, in order.
    var references: [(String, Int)] = []
    var referenced: Set<String> = []

    init(_ text: String) { s = Array(text.unicodeScalars) }

    var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    func error(_ what: String, at offset: Int) -> GrammarError {
        let (line, column) = position(offset)
        return GrammarError("GBNF \(line):\(column): \(what)")
    }

    /// Line and column (both from 1; columns count Unicode scalars) of an offset.
    func position(_ offset: Int) -> (Int, Int) {
        var line = 1, column = 1
        for c in s[..<min(offset, s.count)] {
            if c == "\n" { line += 1; column = 1 } else { column += 1 }
        }
        return (line, column)
    }

    /// What is at `at`, for messages.
    func describe(_ at: Int) -> String {
        guard at < s.count else { return "the end of the grammar" }
        switch s[at] {
        case "\n": return "a line break"
        case let c: return "'\(c)'"
        }
    }

    static func isNameCharacter(_ c: Unicode.Scalar) -> Bool {
        c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "-" || c == "_")
    }

    /// Skips white space (line breaks included) and comments.
    mutating func skipSpace() {
        while let c = peek {
            if c == "#" {
                while let d = peek, d != "\n" { i += 1 }
            } else if c == " " || c == "\t" || c == "\n" || c == "\r" {
                i += 1
            } else {
                break
            }
        }
    }

    mutating func name() -> String? {
        let start = i
        while let c = peek, Self.isNameCharacter(c) { i += 1 }
        return i > start ? String(String.UnicodeScalarView(s[start..<i])) : nil
    }

    /// Whether a rule definition (`name ::=`) starts at `i`.
    func atRuleStart() -> Bool {
        var copy = self
        guard copy.name() != nil else { return false }
        copy.skipSpace()
        return copy.lookingAt("::=")
    }

    func lookingAt(_ text: String) -> Bool {
        var j = i
        for c in text.unicodeScalars {
            guard j < s.count, s[j] == c else { return false }
            j += 1
        }
        return true
    }

    mutating func parseRules() throws {
        skipSpace()
        while i < s.count {
            let start = i
            guard let name = name() else { throw error("expected a rule name, found \(describe(i))", at: i) }
            skipSpace()
            guard lookingAt("::=") else { throw error("expected '::=' after the rule name '\(name)', found \(describe(i))", at: i) }
            i += 3
            skipSpace()
            let body = try alternatives()
            if let first = rules.first(where: { $0.name == name }) {
                throw error("rule '\(name)' is defined twice (first on line \(position(first.at).0))", at: start)
            }
            rules.append((name, body, start))
            if i < s.count && !atRuleStart() {
                throw error(s[i] == ")" ? "unbalanced parenthesis: ')' has no matching '('" : "unexpected \(describe(i))", at: i)
            }
        }
    }

    mutating func alternatives() throws -> GrammarExpression {
        var options = [try sequence()]
        while peek == "|" {
            i += 1
            skipSpace()
            options.append(try sequence())
        }
        return options.count == 1 ? options[0] : .choice(options)
    }

    mutating func sequence() throws -> GrammarExpression {
        var items: [GrammarExpression] = []
        while let c = peek, c != "|", c != ")", !atRuleStart() {
            var item = try primary()
            skipSpace()
            while let q = try postfix() {
                item = q.min == 1 && q.max == 1 ? item : .repeat(item, min: q.min, max: q.max)
                skipSpace()
            }
            if case .literal(let b) = item, case .literal(let a)? = items.last {
                items[items.count - 1] = .literal(a + b)
            } else {
                items.append(item)
            }
        }
        return items.count == 1 ? items[0] : .sequence(items)
    }

    mutating func primary() throws -> GrammarExpression {
        let start = i
        switch s[i] {
        case "\"":
            return .literal(try stringLiteral())
        case "[":
            return try characterClass()
        case ".":
            i += 1
            return .anyScalar
        case "(":
            i += 1
            skipSpace()
            let inner = try alternatives()
            guard peek == ")" else {
                throw error("unbalanced parenthesis: '(' is not closed", at: start)
            }
            i += 1
            return inner
        case "*", "+", "?", "{":
            throw error("'\(s[i])' has nothing to repeat", at: i)
        default:
            guard let name = name() else { throw error("unexpected \(describe(i))", at: i) }
            if !referenced.contains(name) {
                referenced.insert(name)
                references.append((name, start))
            }
            return .rule(name)
        }
    }

    mutating func postfix() throws -> (min: Int, max: Int?)? {
        guard let c = peek else { return nil }
        switch c {
        case "*": i += 1; return (0, nil)
        case "+": i += 1; return (1, nil)
        case "?": i += 1; return (0, 1)
        case "{":
            let start = i
            i += 1
            skipSpace()
            guard let lo = try number() else { throw error("expected a number after '{'", at: i) }
            skipSpace()
            var hi: Int? = lo
            if peek == "," {
                i += 1
                skipSpace()
                hi = try number()
                skipSpace()
            }
            guard peek == "}" else { throw error("expected '}' to close the repetition count, found \(describe(i))", at: i) }
            i += 1
            if let hi, lo > hi { throw error("bad repetition {\(lo),\(hi)}: the minimum is greater than the maximum", at: start) }
            return (lo, hi)
        default:
            return nil
        }
    }

    mutating func number() throws -> Int? {
        let start = i
        var value = 0
        while let c = peek, ("0"..."9").contains(c) {
            value = min(value * 10 + Int(c.value - 0x30), Int(Int32.max))
            i += 1
        }
        guard i > start else { return nil }
        if value > RegexGrammar.maxCount {
            throw error("repetition count \(value) is over the limit of \(RegexGrammar.maxCount)", at: start)
        }
        return value
    }

    mutating func stringLiteral() throws -> [UInt8] {
        let open = i
        i += 1
        var bytes: [UInt8] = []
        while true {
            guard let c = peek, c != "\n" else { throw error("unterminated string literal", at: open) }
            if c == "\"" { i += 1; return bytes }
            let v: UInt32
            if c == "\\" {
                v = try escape()
            } else {
                v = c.value
                i += 1
            }
            bytes += Array(String(Unicode.Scalar(v)!).utf8)
        }
    }

    mutating func characterClass() throws -> GrammarExpression {
        let open = i
        i += 1
        var negated = false
        if peek == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        while true {
            guard let c = peek else { throw error("unterminated character class", at: open) }
            if c == "]" { i += 1; break }
            let itemStart = i
            let lo = try classCharacter()
            if peek == "-", i + 1 < s.count, s[i + 1] != "]" {
                i += 1
                let hi = try classCharacter()
                guard lo <= hi else {
                    throw error("bad character range '\(String(String.UnicodeScalarView(s[itemStart..<i])))'", at: itemStart)
                }
                ranges.append(lo...hi)
            } else {
                ranges.append(lo...lo)
            }
        }
        if ranges.isEmpty { throw error("empty character class", at: open) }
        return .scalars(ranges, negated: negated)
    }

    mutating func classCharacter() throws -> UInt32 {
        if s[i] == "\\" { return try escape() }
        i += 1
        return s[i - 1].value
    }

    /// An escape at `i` (the backslash): the scalar it stands for.
    mutating func escape() throws -> UInt32 {
        let start = i
        guard i + 1 < s.count else { throw error("unterminated escape", at: start) }
        let c = s[i + 1]
        i += 2
        switch c {
        case "n": return 0x0A
        case "t": return 0x09
        case "r": return 0x0D
        case "\\", "\"", "'", "[", "]", "-", "/", "^": return c.value
        case "x", "u", "U":
            let count = c == "x" ? 2 : c == "u" ? 4 : 8
            var v: UInt32 = 0
            for _ in 0..<count {
                guard let h = peek, h.isASCII, let d = UInt32(String(h), radix: 16) else {
                    throw error("bad escape '\\\(c)': expected \(count) hex digits", at: start)
                }
                v = v &* 16 &+ d
                i += 1
            }
            guard Unicode.Scalar(v) != nil else {
                throw error("bad escape: U+\(String(v, radix: 16, uppercase: true)) is not a Unicode scalar", at: start)
            }
            return v
        default:
            throw error("unknown escape '\\\(c)'", at: start)
        }
    }
}
