import Foundation

/// The pre-tokenizer regular expressions that real tokenizers use, each matched by a
/// hand-written scanner with the regex's semantics (alternatives tried in order at each
/// position, greedy repetition with backtracking, lookahead), over Unicode scalars.
///
/// A pattern string that is not one of these is rejected by name rather than approximated.
enum SplitPattern: Sendable, Equatable {
    /// GPT-2: `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
    case gpt2
    /// Llama 3 / cl100k (`maxDigits` 3) and Qwen2 (`maxDigits` 1):
    /// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
    /// `trailingWhitespace`: current tiktoken's cl100k, with `\s++$` before `\s*[\r\n]`
    /// (whitespace that ends the text is one piece, newlines included).
    case llama3(maxDigits: Int, trailingWhitespace: Bool = false)
    /// DeepSeek V3's word pattern:
    /// ``[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+``
    case deepSeekWords
    /// `\p{N}{1,max}`, or `\p{N}+` when `max` is nil.
    case digits(max: Int?)
    /// DeepSeek's CJK runs: `[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+`.
    case cjkRuns
    /// A literal string (HF `{"String": ...}` patterns).
    case literal([UInt8])

    static let gpt2Regex = #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#
    static let llama3Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let cl100kRegex = #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s"#
    static let cl100kOldRegex = #"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"#
    static let r50kRegex = #"'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"#
    static let qwen2Regex = #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
    static let deepSeekWordsRegex = ##"[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"##
    static let cjkRegex = "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+"

    static let known: [String: SplitPattern] = [
        gpt2Regex: .gpt2,
        llama3Regex: .llama3(maxDigits: 3),
        cl100kRegex: .llama3(maxDigits: 3, trailingWhitespace: true),
        cl100kOldRegex: .llama3(maxDigits: 3),
        r50kRegex: .gpt2,
        qwen2Regex: .llama3(maxDigits: 1),
        deepSeekWordsRegex: .deepSeekWords,
        #"\p{N}{1,3}"#: .digits(max: 3),
        #"\p{N}"#: .digits(max: 1),
        #"\p{N}+"#: .digits(max: nil),
        cjkRegex: .cjkRuns,
        #"[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"#: .cjkRuns,
    ]

    /// The scanner for a regex string, or an error quoting the pattern.
    static func regex(_ pattern: String, source: String) throws -> SplitPattern {
        if let p = known[pattern] { return p }
        // tokenizer.json often spells `\r` and `\n` as the characters themselves.
        let spelled = pattern.replacingOccurrences(of: "\r", with: #"\r"#).replacingOccurrences(of: "\n", with: #"\n"#)
        if let p = known[spelled] { return p }
        // `\p{N}{1,k}` for any small k.
        if pattern.hasPrefix(#"\p{N}{1,"#), pattern.hasSuffix("}"),
           let k = Int(pattern.dropFirst(9).dropLast()), k >= 1 {
            return .digits(max: k)
        }
        throw TokenizerError(source, "unsupported pre-tokenizer regex \(pattern.debugDescription) (supported: GPT-2, Llama 3/cl100k, Qwen2, DeepSeek V3 patterns, \\p{N}{1,k}, \\p{N}+)")
    }

    /// Non-overlapping matches, leftmost first, as byte ranges of `bytes`.
    func matches(in bytes: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
        if case .literal(let needle) = self { return Self.literalMatches(needle, in: bytes) }
        let text = ScalarText(bytes)
        var out: [Range<Int>] = []
        var i = 0
        let n = text.count
        while i < n {
            if let end = match(text, at: i), end > i {
                out.append(text.offsets[i]..<text.offsets[end])
                i = end
            } else {
                i += 1
            }
        }
        return out
    }

    private static func literalMatches(_ needle: [UInt8], in bytes: UnsafeBufferPointer<UInt8>) -> [Range<Int>] {
        guard !needle.isEmpty, needle.count <= bytes.count else { return [] }
        var out: [Range<Int>] = []
        var i = 0
        while i + needle.count <= bytes.count {
            var k = 0
            while k < needle.count && bytes[i + k] == needle[k] { k += 1 }
            if k == needle.count {
                out.append(i..<(i + needle.count))
                i += needle.count
            } else {
                i += 1
            }
        }
        return out
    }

    /// The end of the match starting at scalar `i`, or nil.
    private func match(_ t: ScalarText, at i: Int) -> Int? {
        typealias C = CharacterClass
        let n = t.count
        let cls = t.classes
        @inline(__always) func has(_ j: Int, _ mask: UInt16) -> Bool { j < n && cls[j] & mask != 0 }
        @inline(__always) func run(from j: Int, _ mask: UInt16) -> Int {
            var e = j
            while e < n && cls[e] & mask != 0 { e += 1 }
            return e
        }
        /// `c*` for c outside `mask` (and not whitespace when `mask` includes it).
        @inline(__always) func runNot(from j: Int, _ mask: UInt16) -> Int {
            var e = j
            while e < n && cls[e] & mask == 0 { e += 1 }
            return e
        }
        func newlines(from j: Int) -> Int { run(from: j, C.newline) }

        switch self {
        case .gpt2:
            if let e = contraction(t, at: i, caseInsensitive: false) { return e }
            let space = t.scalars[i] == 0x20
            if space && has(i + 1, C.letter) { return run(from: i + 1, C.letter) }
            if has(i, C.letter) { return run(from: i, C.letter) }
            if space && has(i + 1, C.number) { return run(from: i + 1, C.number) }
            if has(i, C.number) { return run(from: i, C.number) }
            let notOther = C.whitespace | C.letter | C.number
            if space && i + 1 < n && cls[i + 1] & notOther == 0 { return runNot(from: i + 1, notOther) }
            if cls[i] & notOther == 0 { return runNot(from: i, notOther) }
            return whitespace(t, at: i, newlineRule: false)

        case .llama3(let maxDigits, let trailingWhitespace):
            if let e = contraction(t, at: i, caseInsensitive: true) { return e }
            if cls[i] & (C.newline | C.letter | C.number) == 0 && has(i + 1, C.letter) { return run(from: i + 1, C.letter) }
            if has(i, C.letter) { return run(from: i, C.letter) }
            if has(i, C.number) {
                var e = i
                while e < n && e - i < maxDigits && cls[e] & C.number != 0 { e += 1 }
                return e
            }
            let notOther = C.whitespace | C.letter | C.number
            var j = i
            if t.scalars[i] == 0x20 && i + 1 < n && cls[i + 1] & notOther == 0 { j = i + 1 }
            if cls[j] & notOther == 0 { return newlines(from: runNot(from: j, notOther)) }
            if trailingWhitespace && has(i, C.whitespace) && run(from: i, C.whitespace) == n { return n }
            return whitespace(t, at: i, newlineRule: true)

        case .deepSeekWords:
            if has(i, C.asciiPunctuation) && has(i + 1, C.asciiLetter) { return run(from: i + 1, C.asciiLetter) }
            let lm = C.letter | C.mark
            if cls[i] & (C.newline | C.letter | C.punctuation | C.symbol) == 0 && has(i + 1, lm) { return run(from: i + 1, lm) }
            if has(i, lm) { return run(from: i, lm) }
            let ps = C.punctuation | C.symbol
            var j = i
            if t.scalars[i] == 0x20 && has(i + 1, ps) { j = i + 1 }
            if has(j, ps) { return newlines(from: run(from: j, ps)) }
            return whitespace(t, at: i, newlineRule: true)

        case .digits(let max):
            guard has(i, C.number) else { return nil }
            var e = i
            while e < n && cls[e] & C.number != 0 && (max == nil || e - i < max!) { e += 1 }
            return e

        case .cjkRuns:
            return has(i, C.cjk) ? run(from: i, C.cjk) : nil

        case .literal:
            return nil
        }
    }

    /// `'s|'t|'re|'ve|'m|'ll|'d`, optionally case-insensitive (Unicode simple case folding:
    /// `ſ` matches `s`).
    private func contraction(_ t: ScalarText, at i: Int, caseInsensitive: Bool) -> Int? {
        guard t.scalars[i] == 0x27, i + 1 < t.count else { return nil }
        func folded(_ j: Int) -> UInt32? {
            guard j < t.count else { return nil }
            let v = t.scalars[j]
            guard caseInsensitive else { return v }
            if v >= 0x41 && v <= 0x5A { return v + 0x20 }
            if v == 0x17F { return 0x73 }  // ſ folds to s
            return v
        }
        let a = folded(i + 1)
        switch a {
        case 0x73, 0x74, 0x6D, 0x64: return i + 2  // s t m d
        case 0x72, 0x76: return folded(i + 2) == 0x65 ? i + 3 : nil  // re ve
        case 0x6C: return folded(i + 2) == 0x6C ? i + 3 : nil  // ll
        default: return nil
        }
    }

    /// `\s*[\r\n]+` (when `newlineRule`), then `\s+(?!\S)`, then `\s+`.
    private func whitespace(_ t: ScalarText, at i: Int, newlineRule: Bool) -> Int? {
        let cls = t.classes
        let n = t.count
        guard cls[i] & CharacterClass.whitespace != 0 else { return nil }
        var j = i
        while j < n && cls[j] & CharacterClass.whitespace != 0 { j += 1 }
        if newlineRule {
            var m = j - 1
            while m >= i {
                if cls[m] & CharacterClass.newline != 0 { return m + 1 }
                m -= 1
            }
        }
        if j == n || j - i == 1 { return j }
        return j - 1
    }
}
