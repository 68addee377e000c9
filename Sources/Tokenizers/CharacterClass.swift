/// The character classes the known pre-tokenizer patterns test, as bits: Unicode general
/// categories (\p{L}, \p{N}, \p{M}, \p{P}, \p{S}), White_Space (the regex `\s`), and a few
/// literal sets used by real patterns.
struct CharacterClass {
    static let letter: UInt16 = 1 << 0
    static let number: UInt16 = 1 << 1
    static let mark: UInt16 = 1 << 2
    static let punctuation: UInt16 = 1 << 3
    static let symbol: UInt16 = 1 << 4
    static let whitespace: UInt16 = 1 << 5
    /// `\r` or `\n`.
    static let newline: UInt16 = 1 << 6
    /// `[A-Za-z]`.
    static let asciiLetter: UInt16 = 1 << 7
    /// ASCII punctuation and symbols: ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``.
    static let asciiPunctuation: UInt16 = 1 << 8
    /// DeepSeek's CJK set: `[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]`.
    static let cjk: UInt16 = 1 << 9

    private static let ascii: [UInt16] = (0..<128).map { classify(slow: UInt32($0)) }

    @inline(__always)
    static func of(_ v: UInt32) -> UInt16 {
        v < 128 ? ascii[Int(v)] : classify(slow: v)
    }

    static func classify(slow v: UInt32) -> UInt16 {
        guard let scalar = Unicode.Scalar(v) else { return 0 }
        let p = scalar.properties
        var c: UInt16 = 0
        switch p.generalCategory {
        case .uppercaseLetter, .lowercaseLetter, .titlecaseLetter, .modifierLetter, .otherLetter:
            c |= letter
        case .decimalNumber, .letterNumber, .otherNumber:
            c |= number
        case .nonspacingMark, .spacingMark, .enclosingMark:
            c |= mark
        case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
             .initialPunctuation, .finalPunctuation, .otherPunctuation:
            c |= punctuation
        case .mathSymbol, .currencySymbol, .modifierSymbol, .otherSymbol:
            c |= symbol
        default:
            break
        }
        if p.isWhitespace { c |= whitespace }
        if v == 0x0A || v == 0x0D { c |= newline }
        if (0x41...0x5A).contains(v) || (0x61...0x7A).contains(v) { c |= asciiLetter }
        if (0x21...0x2F).contains(v) || (0x3A...0x40).contains(v) || (0x5B...0x60).contains(v) || (0x7B...0x7E).contains(v) {
            c |= asciiPunctuation
        }
        if (0x4E00...0x9FA5).contains(v) || (0x3040...0x309F).contains(v) || (0x30A0...0x30FF).contains(v) { c |= cjk }
        return c
    }
}

/// A piece of text decoded into scalars with their classes and byte offsets, for the pattern
/// scanners. Invalid UTF-8 bytes become one U+FFFD scalar each (never present in practice:
/// pieces come from Swift strings).
struct ScalarText {
    var scalars: [UInt32] = []
    var classes: [UInt16] = []
    /// Byte offset of each scalar, plus the total byte count at the end.
    var offsets: [Int] = []

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        scalars.reserveCapacity(bytes.count)
        classes.reserveCapacity(bytes.count)
        offsets.reserveCapacity(bytes.count + 1)
        var i = 0
        let n = bytes.count
        while i < n {
            let (v, len) = UTF8Scan.decode(bytes, at: i)
            scalars.append(v)
            classes.append(CharacterClass.of(v))
            offsets.append(i)
            i += len
        }
        offsets.append(n)
    }

    var count: Int { scalars.count }
}

enum UTF8Scan {
    /// Decodes the scalar at `i`: (value, length). Malformed input yields (U+FFFD, 1).
    @inline(__always)
    static func decode(_ b: UnsafeBufferPointer<UInt8>, at i: Int) -> (UInt32, Int) {
        let c0 = b[i]
        if c0 < 0x80 { return (UInt32(c0), 1) }
        let n = b.count
        @inline(__always) func cont(_ k: Int) -> UInt32? {
            guard i + k < n, b[i + k] & 0xC0 == 0x80 else { return nil }
            return UInt32(b[i + k] & 0x3F)
        }
        if c0 >= 0xC2 && c0 <= 0xDF, let c1 = cont(1) {
            return (UInt32(c0 & 0x1F) << 6 | c1, 2)
        }
        if c0 >= 0xE0 && c0 <= 0xEF, let c1 = cont(1), let c2 = cont(2) {
            let v = UInt32(c0 & 0x0F) << 12 | c1 << 6 | c2
            if v >= 0x800 && !(0xD800...0xDFFF).contains(v) { return (v, 3) }
        }
        if c0 >= 0xF0 && c0 <= 0xF4, let c1 = cont(1), let c2 = cont(2), let c3 = cont(3) {
            let v = UInt32(c0 & 0x07) << 18 | c1 << 12 | c2 << 6 | c3
            if v >= 0x10000 && v <= 0x10FFFF { return (v, 4) }
        }
        return (0xFFFD, 1)
    }

    /// Length of the character starting with lead byte `b` (1 for malformed leads).
    @inline(__always)
    static func length(lead b: UInt8) -> Int {
        if b < 0xC0 { return 1 }
        if b < 0xE0 { return 2 }
        if b < 0xF0 { return 3 }
        if b < 0xF8 { return 4 }
        return 1
    }

    /// Where in `bytes` an incomplete but so far well-formed UTF-8 sequence at the end starts
    /// (`bytes.count` when the end is complete or hopeless). Bytes before that point decode the
    /// same whatever follows.
    static func incompleteSuffixStart(_ bytes: [UInt8]) -> Int {
        let n = bytes.count
        var k = 1
        while k <= 3 && k <= n {
            let lead = bytes[n - k]
            if lead & 0xC0 == 0x80 { k += 1; continue }  // continuation: look further back
            let need: Int
            var second: ClosedRange<UInt8> = 0x80...0xBF
            switch lead {
            case 0xC2...0xDF: need = 2
            case 0xE0: need = 3; second = 0xA0...0xBF
            case 0xE1...0xEC, 0xEE...0xEF: need = 3
            case 0xED: need = 3; second = 0x80...0x9F
            case 0xF0: need = 4; second = 0x90...0xBF
            case 0xF1...0xF3: need = 4
            case 0xF4: need = 4; second = 0x80...0x8F
            default: return n
            }
            guard k < need else { return n }
            if k >= 2 && !second.contains(bytes[n - k + 1]) { return n }
            return n - k
        }
        return n
    }
}
