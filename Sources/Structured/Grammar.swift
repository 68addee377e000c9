/// A set of bytes: what one step of a grammar may consume.
public struct ByteSet: Hashable, Sendable, CustomStringConvertible {
    var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    public init() {}

    public init<S: Sequence>(_ bytes: S) where S.Element == UInt8 {
        for b in bytes { insert(b) }
    }

    public init(_ range: ClosedRange<UInt8>) {
        for b in range { insert(b) }
    }

    public static let all: ByteSet = { var s = ByteSet(); s.words = (~0, ~0, ~0, ~0); return s }()

    public mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << UInt64(byte & 63)
        switch byte >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    public mutating func formUnion(_ other: ByteSet) {
        words = (words.0 | other.words.0, words.1 | other.words.1, words.2 | other.words.2, words.3 | other.words.3)
    }

    public func union(_ other: ByteSet) -> ByteSet { var s = self; s.formUnion(other); return s }

    public var inverted: ByteSet { var s = ByteSet(); s.words = (~words.0, ~words.1, ~words.2, ~words.3); return s }

    public func subtracting(_ other: ByteSet) -> ByteSet {
        var s = ByteSet()
        s.words = (words.0 & ~other.words.0, words.1 & ~other.words.1, words.2 & ~other.words.2, words.3 & ~other.words.3)
        return s
    }

    @inline(__always)
    public func contains(_ byte: UInt8) -> Bool {
        let word: UInt64
        switch byte >> 6 {
        case 0: word = words.0
        case 1: word = words.1
        case 2: word = words.2
        default: word = words.3
        }
        return word & (UInt64(1) << UInt64(byte & 63)) != 0
    }

    public var isEmpty: Bool { words == (0, 0, 0, 0) }

    public var count: Int { words.0.nonzeroBitCount + words.1.nonzeroBitCount + words.2.nonzeroBitCount + words.3.nonzeroBitCount }

    public static func == (a: ByteSet, b: ByteSet) -> Bool { a.words == b.words }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0); hasher.combine(words.1); hasher.combine(words.2); hasher.combine(words.3)
    }

    public var description: String {
        var parts: [String] = []
        var b = 0
        while b < 256 {
            guard contains(UInt8(b)) else { b += 1; continue }
            var e = b
            while e + 1 < 256 && contains(UInt8(e + 1)) { e += 1 }
            parts.append(e == b ? Self.show(b) : "\(Self.show(b))-\(Self.show(e))")
            b = e + 1
        }
        return "[" + parts.joined() + "]"
    }

    private static func show(_ b: Int) -> String {
        (0x21...0x7e).contains(b) && b != 0x5d && b != 0x2d && b != 0x5c ? String(UnicodeScalar(UInt8(b))) : "\\x" + String(b, radix: 16, uppercase: true)
    }
}

/// A grammar expression over UTF-8 bytes. Text and character classes are spelled in bytes, so a
/// token's bytes can be matched one at a time even when a character spans two tokens.
public indirect enum GrammarExpression: Sendable, Hashable {
    /// One byte from the set.
    case bytes(ByteSet)
    /// These bytes, in order.
    case literal([UInt8])
    /// The rule of this name.
    case rule(String)
    /// Each in turn (empty: matches nothing, i.e. the empty string).
    case sequence([GrammarExpression])
    /// Any one of them (none: matches nothing at all).
    case choice([GrammarExpression])
    /// `min` to `max` repetitions (`max` nil: no upper bound).
    case `repeat`(GrammarExpression, min: Int, max: Int?)

    /// The empty string.
    public static let empty = GrammarExpression.sequence([])

    public static func text(_ s: String) -> GrammarExpression { .literal(Array(s.utf8)) }

    public static func optional(_ e: GrammarExpression) -> GrammarExpression { .repeat(e, min: 0, max: 1) }

    public static func star(_ e: GrammarExpression) -> GrammarExpression { .repeat(e, min: 0, max: nil) }

    public static func plus(_ e: GrammarExpression) -> GrammarExpression { .repeat(e, min: 1, max: nil) }

    /// One Unicode scalar from `ranges` (or, with `negated`, any scalar outside them), as the
    /// UTF-8 byte sequences that encode it. Surrogates (U+D800-U+DFFF) are never matched: they
    /// have no UTF-8 encoding.
    public static func scalars(_ ranges: [ClosedRange<UInt32>], negated: Bool = false) -> GrammarExpression {
        var merged = UTF8Ranges.normalize(ranges)
        if negated { merged = UTF8Ranges.complement(merged) }
        merged = UTF8Ranges.subtract(merged, 0xD800...0xDFFF)
        let alternatives = merged.flatMap { UTF8Ranges.sequences(for: $0) }
        if alternatives.isEmpty { return .choice([]) }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// Any one Unicode scalar.
    public static let anyScalar = scalars([0...0x10FFFF])
}

/// Named rules and a root: what a ``CompiledGrammar`` is built from.
public struct Grammar: Sendable, Equatable {
    public private(set) var rules: [String: GrammarExpression] = [:]
    /// Rule names in the order they were added (for printing and stable compilation).
    public private(set) var order: [String] = []
    public var root: String

    public init(root: String = "root") {
        self.root = root
    }

    public init(root: String = "root", _ expression: GrammarExpression) {
        self.root = root
        define(root, expression)
    }

    /// Adds or replaces a rule.
    public mutating func define(_ name: String, _ expression: GrammarExpression) {
        if rules[name] == nil { order.append(name) }
        rules[name] = expression
    }

    /// A rule name not yet used, starting with `base`.
    public func freshName(_ base: String) -> String {
        if rules[base] == nil { return base }
        var i = 1
        while rules["\(base)_\(i)"] != nil { i += 1 }
        return "\(base)_\(i)"
    }
}

/// Why a grammar, schema or pattern cannot be used to constrain generation.
public struct GrammarError: Error, Equatable, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Unicode scalar ranges as UTF-8 byte-sequence expressions.
enum UTF8Ranges {
    static func normalize(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        let sorted = ranges.map { min($0.lowerBound, 0x10FFFF)...min($0.upperBound, 0x10FFFF) }.sorted { $0.lowerBound < $1.lowerBound }
        var out: [ClosedRange<UInt32>] = []
        for r in sorted {
            if let last = out.last, r.lowerBound <= last.upperBound &+ 1 {
                out[out.count - 1] = last.lowerBound...max(last.upperBound, r.upperBound)
            } else {
                out.append(r)
            }
        }
        return out
    }

    static func complement(_ ranges: [ClosedRange<UInt32>]) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        var next: UInt32 = 0
        for r in ranges {
            if r.lowerBound > next { out.append(next...(r.lowerBound - 1)) }
            next = r.upperBound + 1
        }
        if next <= 0x10FFFF { out.append(next...0x10FFFF) }
        return out
    }

    static func subtract(_ ranges: [ClosedRange<UInt32>], _ hole: ClosedRange<UInt32>) -> [ClosedRange<UInt32>] {
        var out: [ClosedRange<UInt32>] = []
        for r in ranges {
            if r.upperBound < hole.lowerBound || r.lowerBound > hole.upperBound { out.append(r); continue }
            if r.lowerBound < hole.lowerBound { out.append(r.lowerBound...(hole.lowerBound - 1)) }
            if r.upperBound > hole.upperBound { out.append((hole.upperBound + 1)...r.upperBound) }
        }
        return out
    }

    /// Splits a scalar range (no surrogates) into ranges of one UTF-8 length, then into byte sequences.
    static func sequences(for range: ClosedRange<UInt32>) -> [GrammarExpression] {
        let bounds: [ClosedRange<UInt32>] = [0...0x7F, 0x80...0x7FF, 0x800...0xFFFF, 0x10000...0x10FFFF]
        var out: [GrammarExpression] = []
        for b in bounds {
            let lo = max(b.lowerBound, range.lowerBound), hi = min(b.upperBound, range.upperBound)
            guard lo <= hi else { continue }
            out += split(lo, hi)
        }
        return out
    }

    private static func encode(_ c: UInt32) -> [UInt8] { Array(String(UnicodeScalar(c)!).utf8) }

    /// Byte sequences for [lo, hi], both of the same UTF-8 length, using the standard split: a
    /// range maps to one sequence of byte ranges when every trailing byte spans 0x80-0xBF fully.
    private static func split(_ lo: UInt32, _ hi: UInt32) -> [GrammarExpression] {
        let a = encode(lo), b = encode(hi)
        let n = a.count
        if n == 1 { return [.bytes(ByteSet(a[0]...b[0]))] }
        // Find a split point so that each part is a product of byte ranges.
        for i in (1..<n).reversed() {
            let mask = (UInt32(1) << (6 * UInt32(n - i))) - 1
            if lo & ~mask != hi & ~mask {
                if lo & mask != 0 {
                    return split(lo, lo | mask) + split((lo | mask) + 1, hi)
                }
                if hi & mask != mask {
                    return split(lo, (hi & ~mask) - 1) + split(hi & ~mask, hi)
                }
            }
        }
        return [.sequence((0..<n).map { .bytes(ByteSet(a[$0]...b[$0])) })]
    }
}
