/// Regular expressions (the common subset of Python's `re` and ECMAScript) as grammar expressions.
///
/// The whole pattern must match (Python's `re.fullmatch`): a `^` at the start of the pattern (or
/// of a top-level alternative) and a `$` at the end of one change nothing; anchors anywhere else
/// are refused.
///
/// Supported: any literal character; the escapes `\\ \. \* \+ \? \( \) \[ \] \{ \} \| \^ \$ \/ \-`
/// (any ASCII punctuation or non-ASCII character escaped stands for itself), `\n \t \r \f \v`,
/// `\0` (NUL), `\xHH`, `\uHHHH` (a surrogate pair of two `\u` escapes is one character),
/// `\u{H...}`, `\UHHHHHHHH`; the classes `\d \w \s \D \W \S`, which are ASCII only (`\d` is
/// `[0-9]`, `\w` is `[A-Za-z0-9_]`, `\s` is `[ \t\n\r\f\v]`, as with Python's `re.ASCII`); `.`
/// (any character but `\n`); bracket classes `[...]` and `[^...]` with ranges, escapes and the
/// shorthand classes inside (`\b` there is backspace; `]` first and `-` first or last are
/// literal); groups `(...)`, `(?:...)`, `(?P<name>...)`, `(?<name>...)`; alternation, empty
/// alternatives included; the quantifiers `* + ? {n} {n,} {n,m} {,m}` and their lazy forms
/// (`*?` and so on: the same language). A `{` that does not start a count is a literal.
///
/// Refused, with the offset (in Unicode scalars) of the construct: backreferences, lookaround,
/// the assertions `\b \B \A \Z \z \G`, inline flags and other `(?...)` groups, possessive
/// quantifiers, a quantifier with nothing to repeat or following another, unbalanced
/// parentheses or brackets, `{n,m}` with n > m, counts over 10 000, Unicode property escapes,
/// POSIX classes, octal escapes, unknown letter escapes.
public enum RegexGrammar {
    /// The largest count a `{n,m}` quantifier may give.
    public static let maxCount = 10_000

    /// An expression (without rule references) that matches exactly the strings, as UTF-8,
    /// that the whole of `pattern` matches. No repeat in it has a body that can match the
    /// empty string.
    public static func expression(_ pattern: String) throws -> GrammarExpression {
        var parser = RegexParser(pattern)
        let e = try parser.parse()
        return GrammarChecks.removingNullableRepeats(e)
    }
}

private struct RegexParser {
    let s: [Unicode.Scalar]
    var i = 0

    init(_ pattern: String) { s = Array(pattern.unicodeScalars) }

    static let digit: [ClosedRange<UInt32>] = [0x30...0x39]
    static let word: [ClosedRange<UInt32>] = [0x30...0x39, 0x41...0x5A, 0x5F...0x5F, 0x61...0x7A]
    static let space: [ClosedRange<UInt32>] = [0x09...0x0D, 0x20...0x20]
    static let anyButNewline = GrammarExpression.scalars([0x0A...0x0A], negated: true)

    func error(_ what: String, at offset: Int) -> GrammarError {
        GrammarError("regex: \(what) at offset \(offset)")
    }

    var peek: Unicode.Scalar? { i < s.count ? s[i] : nil }

    func peek(_ k: Int) -> Unicode.Scalar? { i + k < s.count ? s[i + k] : nil }

    mutating func parse() throws -> GrammarExpression {
        let e = try alternation(topLevel: true)
        if i < s.count {
            // Only a ')' stops an alternation early.
            throw error("unbalanced parenthesis: ')' has no matching '('", at: i)
        }
        return e
    }

    mutating func alternation(topLevel: Bool) throws -> GrammarExpression {
        var options = [try sequence(topLevel: topLevel)]
        while peek == "|" {
            i += 1
            options.append(try sequence(topLevel: topLevel))
        }
        return options.count == 1 ? options[0] : .choice(options)
    }

    mutating func sequence(topLevel: Bool) throws -> GrammarExpression {
        var items: [GrammarExpression] = []
        if topLevel && peek == "^" { i += 1 }
        while let c = peek, c != "|", c != ")" {
            if c == "$" {
                if topLevel && (peek(1) == nil || peek(1) == "|") {
                    i += 1
                    break
                }
                throw error("anchor '$' is only supported at the end of the pattern", at: i)
            }
            if c == "^" { throw error("anchor '^' is only supported at the start of the pattern", at: i) }
            if c == "*" || c == "+" || c == "?" || (c == "{" && countAhead() != nil) {
                throw error("quantifier '\(c)' has nothing to repeat", at: i)
            }
            var atom = try self.atom()
            // One quantifier, then maybe a lazy '?'.
            if let (min, max) = try quantifier() {
                if peek == "?" {
                    i += 1
                } else if peek == "+" {
                    throw error("possessive quantifier '+' is not supported", at: i)
                }
                if let q = peek, q == "*" || q == "+" || q == "?" || (q == "{" && countAhead() != nil) {
                    throw error("multiple repeat: quantifier '\(q)' follows another", at: i)
                }
                atom = min == 1 && max == 1 ? atom : .repeat(atom, min: min, max: max)
            }
            // Adjacent literals merge into one.
            if case .literal(let b) = atom, case .literal(let a)? = items.last {
                items[items.count - 1] = .literal(a + b)
            } else {
                items.append(atom)
            }
        }
        return items.count == 1 ? items[0] : .sequence(items)
    }

    /// A `{n}`, `{n,}`, `{n,m}` or `{,m}` at `i`, without consuming it: its bounds and length.
    /// (Validity of the numbers is checked by `quantifier()`.)
    func countAhead() -> (min: Int?, max: Int?, comma: Bool, length: Int)? {
        guard peek == "{" else { return nil }
        var j = i + 1
        func number() -> Int? {
            var value = 0, digits = 0
            while j < s.count, let d = Int(String(s[j])), s[j].isASCII {
                value = Swift.min(value * 10 + d, Int(Int32.max))
                digits += 1
                j += 1
            }
            return digits > 0 ? value : nil
        }
        let lo = number()
        var comma = false, hi: Int? = nil
        if j < s.count && s[j] == "," {
            comma = true
            j += 1
            hi = number()
        }
        guard j < s.count, s[j] == "}", lo != nil || hi != nil else { return nil }
        return (lo, hi, comma, j + 1 - i)
    }

    /// Consumes a quantifier if there is one.
    mutating func quantifier() throws -> (Int, Int?)? {
        guard let c = peek else { return nil }
        switch c {
        case "*": i += 1; return (0, nil)
        case "+": i += 1; return (1, nil)
        case "?": i += 1; return (0, 1)
        case "{":
            guard let q = countAhead() else { return nil }
            let start = i
            let min = q.min ?? 0
            let max = q.comma ? q.max : q.min
            if min > RegexGrammar.maxCount || (max ?? 0) > RegexGrammar.maxCount {
                throw error("repetition count \(Swift.max(min, max ?? 0)) is over the limit of \(RegexGrammar.maxCount)", at: start)
            }
            if let max, min > max {
                throw error("bad repetition {\(min),\(max)}: the minimum is greater than the maximum", at: start)
            }
            i += q.length
            return (min, max)
        default:
            return nil
        }
    }

    mutating func atom() throws -> GrammarExpression {
        let c = s[i]
        switch c {
        case "(":
            return try group()
        case "[":
            return try characterClass()
        case ".":
            i += 1
            return Self.anyButNewline
        case "\\":
            switch try escape(inClass: false) {
            case .scalar(let v): return .literal(Array(String(Unicode.Scalar(v)!).utf8))
            case .set(let ranges): return .scalars(ranges)
            }
        default:
            i += 1
            return .literal(Array(String(c).utf8))
        }
    }

    mutating func group() throws -> GrammarExpression {
        let open = i
        i += 1
        if peek == "?" {
            let next = peek(1)
            switch next {
            case ":":
                i += 2
            case "P" where peek(2) == "<":
                i += 3
                try groupName(open)
            case "P" where peek(2) == "=":
                throw error("backreference '(?P=' is not supported", at: open)
            case "<" where peek(2) == "=" || peek(2) == "!":
                throw error("lookbehind '(?<\(peek(2)!)' is not supported", at: open)
            case "<":
                i += 2
                try groupName(open)
            case "=", "!":
                throw error("lookahead '(?\(next!)' is not supported", at: open)
            case "#":
                throw error("comment group '(?#' is not supported", at: open)
            case ">":
                throw error("atomic group '(?>' is not supported", at: open)
            case "(":
                throw error("conditional group '(?(' is not supported", at: open)
            case let f? where "aiLmsux-".unicodeScalars.contains(f):
                throw error("inline flags '(?\(f)' are not supported", at: open)
            default:
                throw error("unknown group extension '(?\(next.map { String($0) } ?? "")'", at: open)
            }
        }
        let inner = try alternation(topLevel: false)
        guard peek == ")" else {
            throw error("unbalanced parenthesis: '(' is not closed", at: open)
        }
        i += 1
        return inner
    }

    /// After `(?P<` or `(?<`: a name of word characters and `>`.
    mutating func groupName(_ open: Int) throws {
        let start = i
        while let c = peek, c.properties.isAlphabetic || c == "_" || ("0"..."9").contains(c) { i += 1 }
        guard i > start, peek == ">" else { throw error("bad group name", at: open) }
        i += 1
    }

    enum ClassItem {
        case scalar(UInt32)
        case set([ClosedRange<UInt32>])
    }

    mutating func characterClass() throws -> GrammarExpression {
        let open = i
        i += 1
        var negated = false
        if peek == "^" { negated = true; i += 1 }
        var ranges: [ClosedRange<UInt32>] = []
        var first = true
        while true {
            guard let c = peek else { throw error("unbalanced bracket: '[' is not closed", at: open) }
            if c == "]" && !first { i += 1; break }
            first = false
            if c == "[" && (peek(1) == ":" || peek(1) == "=" || peek(1) == ".") {
                throw error("POSIX character class '[\(peek(1)!)' is not supported", at: i)
            }
            let itemStart = i
            let lo = try classItem()
            if peek == "-", let after = peek(1), after != "]" {
                i += 1
                let hi = try classItem()
                guard case .scalar(let a) = lo, case .scalar(let b) = hi, a <= b else {
                    throw error("bad character range '\(String(String.UnicodeScalarView(s[itemStart..<i])))'", at: itemStart)
                }
                ranges.append(a...b)
            } else {
                switch lo {
                case .scalar(let v): ranges.append(v...v)
                case .set(let r): ranges += r
                }
            }
        }
        return .scalars(ranges, negated: negated)
    }

    mutating func classItem() throws -> ClassItem {
        if s[i] == "\\" { return try escape(inClass: true) }
        i += 1
        return .scalar(s[i - 1].value)
    }

    /// An escape at `i` (the backslash).
    mutating func escape(inClass: Bool) throws -> ClassItem {
        let start = i
        guard let c = peek(1) else { throw error("trailing backslash", at: start) }
        i += 2
        switch c {
        case "d": return .set(Self.digit)
        case "D": return .set(UTF8Ranges.complement(Self.digit))
        case "w": return .set(Self.word)
        case "W": return .set(UTF8Ranges.complement(Self.word))
        case "s": return .set(Self.space)
        case "S": return .set(UTF8Ranges.complement(Self.space))
        case "n": return .scalar(0x0A)
        case "t": return .scalar(0x09)
        case "r": return .scalar(0x0D)
        case "f": return .scalar(0x0C)
        case "v": return .scalar(0x0B)
        case "b" where inClass: return .scalar(0x08)
        case "b", "B", "A", "Z", "z", "G":
            throw error("assertion '\\\(c)' is not supported", at: start)
        case "0":
            if let d = peek, ("0"..."9").contains(d) { throw error("octal escape '\\0\(d)' is not supported", at: start) }
            return .scalar(0)
        case "1"..."9":
            throw error("backreference '\\\(c)' is not supported", at: start)
        case "k" where peek == "<" || peek == "{" || peek == "'":
            throw error("backreference '\\k' is not supported", at: start)
        case "p", "P":
            throw error("Unicode property escape '\\\(c)' is not supported", at: start)
        case "x":
            return .scalar(try hex(count: 2, start: start))
        case "U":
            let v = try hex(count: 8, start: start)
            guard v <= 0x10FFFF, !(0xD800...0xDFFF).contains(v) else { throw error("bad escape: U+\(String(v, radix: 16, uppercase: true)) is not a Unicode scalar", at: start) }
            return .scalar(v)
        case "u":
            var v: UInt32
            if peek == "{" {
                i += 1
                let digitsStart = i
                v = 0
                while i - digitsStart < 6, let h = peek, h.isASCII, let d = UInt32(String(h), radix: 16) {
                    v = v * 16 + d
                    i += 1
                }
                guard i > digitsStart, peek == "}" else { throw error("bad escape '\\u{': expected 1 to 6 hex digits and '}'", at: start) }
                i += 1
            } else {
                v = try hex(count: 4, start: start)
                // A high surrogate followed by an escaped low surrogate: one character (ECMAScript).
                if (0xD800...0xDBFF).contains(v), peek == "\\", peek(1) == "u" {
                    let save = i
                    i += 2
                    if let low = try? hex(count: 4, start: save), (0xDC00...0xDFFF).contains(low) {
                        v = 0x10000 + ((v - 0xD800) << 10) + (low - 0xDC00)
                    } else {
                        i = save
                    }
                }
            }
            guard v <= 0x10FFFF, !(0xD800...0xDFFF).contains(v) else {
                throw error("bad escape: U+\(String(v, radix: 16, uppercase: true)) is not a Unicode scalar (a lone surrogate?)", at: start)
            }
            return .scalar(v)
        default:
            if c.isASCII && (c.properties.isAlphabetic || ("0"..."9").contains(c)) {
                throw error("unknown escape '\\\(c)'", at: start)
            }
            return .scalar(c.value)
        }
    }

    /// Exactly `count` hex digits at `i`.
    mutating func hex(count: Int, start: Int) throws -> UInt32 {
        var v: UInt32 = 0
        for _ in 0..<count {
            guard let h = peek, h.isASCII, let d = UInt32(String(h), radix: 16) else {
                throw error("bad escape '\\\(s[start + 1])': expected \(count) hex digits", at: start)
            }
            v = v * 16 + d
            i += 1
        }
        return v
    }
}
