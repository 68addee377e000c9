/// Splits template source into text and tag tokens, applying whitespace control
/// (`{%-`, `-%}`, ...), `trim_blocks` and `lstrip_blocks` as jinja2's lexer does.
enum TokenKind: Equatable {
    case text(String)
    case variableBegin, variableEnd, blockBegin, blockEnd
    case name(String)
    case string(String)
    case integer(Int)
    case float(Double)
    case op(String)
    case eof
}

struct Token {
    let kind: TokenKind
    let line: Int
    let column: Int
}

struct JinjaLexer {
    private let s: [Unicode.Scalar]
    private let options: JinjaOptions
    private var tokens: [Token] = []
    /// Line start offsets, for turning an offset into line and column.
    private var lineStarts: [Int] = [0]

    init(_ source: String, options: JinjaOptions) {
        // jinja2 normalizes newlines and drops one trailing newline (keep_trailing_newline=False).
        var scalars: [Unicode.Scalar] = []
        scalars.reserveCapacity(source.unicodeScalars.count)
        var previousCR = false
        for u in source.unicodeScalars {
            if u == "\r" { scalars.append("\n"); previousCR = true; continue }
            if u == "\n" && previousCR { previousCR = false; continue }
            previousCR = false
            scalars.append(u)
        }
        if !options.keepTrailingNewline, scalars.last == "\n" { scalars.removeLast() }
        self.s = scalars
        self.options = options
        for (i, u) in scalars.enumerated() where u == "\n" { lineStarts.append(i + 1) }
    }

    private func position(_ offset: Int) -> (Int, Int) {
        var lo = 0, hi = lineStarts.count - 1
        while lo < hi {
            let mid = (lo + hi + 1) / 2
            if lineStarts[mid] <= offset { lo = mid } else { hi = mid - 1 }
        }
        return (lo + 1, offset - lineStarts[lo] + 1)
    }

    private func error(_ message: String, at offset: Int) -> JinjaError {
        let (l, c) = position(offset)
        return JinjaError(.syntax, message, line: l, column: c)
    }

    private mutating func emit(_ kind: TokenKind, at offset: Int) {
        let (l, c) = position(offset)
        tokens.append(Token(kind: kind, line: l, column: c))
    }

    private func at(_ i: Int, _ text: String) -> Bool {
        var j = i
        for u in text.unicodeScalars {
            guard j < s.count, s[j] == u else { return false }
            j += 1
        }
        return true
    }

    private static func isSpace(_ u: Unicode.Scalar) -> Bool {
        u == " " || u == "\t" || u == "\n" || u == "\r" || u == "\u{0B}" || u == "\u{0C}"
    }

    private static func rstrip(_ t: [Unicode.Scalar]) -> [Unicode.Scalar] {
        var end = t.count
        while end > 0, isSpace(t[end - 1]) { end -= 1 }
        return Array(t[..<end])
    }

    /// Skips whitespace after a `-%}`-style end.
    private func skipSpace(from i: Int) -> Int {
        var j = i
        while j < s.count, Self.isSpace(s[j]) { j += 1 }
        return j
    }

    private mutating func emitText(_ t: [Unicode.Scalar], at offset: Int) {
        guard !t.isEmpty else { return }
        var str = ""
        str.unicodeScalars.append(contentsOf: t)
        emit(.text(str), at: offset)
    }

    mutating func tokenize() throws -> [Token] {
        var i = 0
        while i < s.count {
            // Find the next tag opening.
            var j = i
            var kind: Unicode.Scalar = " "
            while j + 1 < s.count {
                if s[j] == "{", s[j + 1] == "{" || s[j + 1] == "%" || s[j + 1] == "#" { kind = s[j + 1]; break }
                j += 1
            }
            if j + 1 >= s.count {
                emitText(Array(s[i...]), at: i)
                break
            }
            var text = Array(s[i..<j])
            let lineStarting = i == 0 || s[i - 1] == "\n"
            let sign: Unicode.Scalar? = (j + 2 < s.count && (s[j + 2] == "-" || s[j + 2] == "+")) ? s[j + 2] : nil
            if sign == "-" {
                text = Self.rstrip(text)
            } else if sign != "+", options.lstripBlocks, kind != "{" {
                var lineStart = text.count
                while lineStart > 0, text[lineStart - 1] != "\n" { lineStart -= 1 }
                if lineStart > 0 || lineStarting, lineStart < text.count, text[lineStart...].allSatisfy(Self.isSpace) {
                    text.removeSubrange(lineStart...)
                }
            }
            emitText(text, at: i)
            var p = j + 2 + (sign == nil ? 0 : 1)
            switch kind {
            case "#":
                var k = p
                while k + 1 < s.count, !(s[k] == "#" && s[k + 1] == "}") { k += 1 }
                guard k + 1 < s.count else { throw error("unterminated comment: missing '#}'", at: j) }
                i = endOfTag(closeAt: k, length: 2, trimmable: true)
            case "%":
                if let after = try rawBlock(tagStart: j, bodyStart: p) {
                    i = after
                    continue
                }
                emit(.blockBegin, at: j)
                p = try lexExpression(from: p, block: true, tagStart: j)
                i = p
            default:
                emit(.variableBegin, at: j)
                p = try lexExpression(from: p, block: false, tagStart: j)
                i = p
            }
        }
        emit(.eof, at: s.count)
        return tokens
    }

    /// Where text resumes after a tag whose closing delimiter starts at `closeAt`
    /// (a `-` or `+` just before it is part of the delimiter).
    private func endOfTag(closeAt k: Int, length: Int, trimmable: Bool) -> Int {
        let after = k + length
        if k > 0, s[k - 1] == "-" { return skipSpace(from: after) }
        if k > 0, s[k - 1] == "+" { return after }
        if trimmable, options.trimBlocks, after < s.count, s[after] == "\n" { return after + 1 }
        return after
    }

    /// `{% raw %}...{% endraw %}`: returns where text resumes, or nil when the tag is not `raw`.
    private mutating func rawBlock(tagStart: Int, bodyStart: Int) throws -> Int? {
        var k = skipSpace(from: bodyStart)
        guard at(k, "raw") else { return nil }
        k = skipSpace(from: k + 3)
        var stripContentStart = false
        if at(k, "-%}") { stripContentStart = true; k += 3 } else if at(k, "+%}") { k += 3 } else if at(k, "%}") {
            k += 2
            if options.trimBlocks, k < s.count, s[k] == "\n" { k += 1 }
        } else { return nil }
        if stripContentStart { k = skipSpace(from: k) }
        // Find `{%[-+]? endraw [-+]?%}`.
        var m = k
        while m + 1 < s.count {
            if s[m] == "{", s[m + 1] == "%" {
                var q = m + 2
                let sign: Unicode.Scalar? = (q < s.count && (s[q] == "-" || s[q] == "+")) ? s[q] : nil
                if sign != nil { q += 1 }
                q = skipSpace(from: q)
                if at(q, "endraw") {
                    q = skipSpace(from: q + 6)
                    var close: Int?
                    if at(q, "-%}") || at(q, "+%}") { close = q + 1 } else if at(q, "%}") { close = q }
                    if let close {
                        var content = Array(s[k..<m])
                        if sign == "-" { content = Self.rstrip(content) }
                        emitText(content, at: k)
                        return endOfTag(closeAt: close, length: 2, trimmable: true)
                    }
                }
            }
            m += 1
        }
        throw error("unterminated raw block: missing '{% endraw %}'", at: tagStart)
    }

    /// Lexes expression tokens until the tag's end; returns where text resumes.
    private mutating func lexExpression(from start: Int, block: Bool, tagStart: Int) throws -> Int {
        var i = start
        var depth = 0
        let close: (Unicode.Scalar, Unicode.Scalar) = block ? ("%", "}") : ("}", "}")
        while true {
            while i < s.count, Self.isSpace(s[i]) { i += 1 }
            guard i < s.count else {
                throw error("unexpected end of template: missing '\(block ? "%}" : "}}")'", at: tagStart)
            }
            // The end of the tag, possibly with whitespace control.
            if depth == 0 || block {
                var closeAt: Int?
                if s[i] == "-" || (block && s[i] == "+"), i + 2 < s.count, s[i + 1] == close.0, s[i + 2] == close.1 {
                    closeAt = i + 1
                } else if i + 1 < s.count, s[i] == close.0, s[i + 1] == close.1 {
                    closeAt = i
                }
                if let closeAt {
                    emit(block ? .blockEnd : .variableEnd, at: i)
                    return endOfTag(closeAt: closeAt, length: 2, trimmable: block)
                }
            }
            let c = s[i]
            if c == "_" || c.properties.isAlphabetic && c.isASCII {
                var j = i
                while j < s.count, s[j] == "_" || (s[j].isASCII && (s[j].properties.isAlphabetic || ("0"..."9").contains(s[j]))) { j += 1 }
                emit(.name(string(i, j)), at: i)
                i = j
            } else if ("0"..."9").contains(c) {
                i = try lexNumber(i)
            } else if c == "'" || c == "\"" {
                i = try lexString(i)
            } else {
                let two = i + 1 < s.count ? string(i, i + 2) : ""
                if ["//", "**", "==", "!=", "<=", ">="].contains(two) {
                    emit(.op(two), at: i)
                    i += 2
                } else if "+-*/%~()[]{},.:|=<>".unicodeScalars.contains(c) {
                    if c == "(" || c == "[" || c == "{" { depth += 1 }
                    if c == ")" || c == "]" || c == "}" { depth = max(0, depth - 1) }
                    emit(.op(String(c)), at: i)
                    i += 1
                } else {
                    throw error("unexpected character '\(c)'", at: i)
                }
            }
        }
    }

    private func string(_ a: Int, _ b: Int) -> String {
        var r = ""
        r.unicodeScalars.append(contentsOf: s[a..<b])
        return r
    }

    private func digits(from i: Int) -> Int {
        var j = i
        while j < s.count, ("0"..."9").contains(s[j]) || (s[j] == "_" && j + 1 < s.count && ("0"..."9").contains(s[j + 1])) { j += 1 }
        return j
    }

    private mutating func lexNumber(_ start: Int) throws -> Int {
        var j = digits(from: start)
        var isFloat = false
        if j + 1 < s.count, s[j] == ".", ("0"..."9").contains(s[j + 1]) {
            isFloat = true
            j = digits(from: j + 1)
        }
        if j < s.count, s[j] == "e" || s[j] == "E" {
            var k = j + 1
            if k < s.count, s[k] == "+" || s[k] == "-" { k += 1 }
            if k < s.count, ("0"..."9").contains(s[k]) {
                isFloat = true
                j = digits(from: k)
            }
        }
        let text = string(start, j).replacingOccurrences("_", "")
        if isFloat {
            guard let d = Double(text) else { throw error("invalid number '\(text)'", at: start) }
            emit(.float(d), at: start)
        } else {
            guard let n = Int(text) else { throw error("integer literal too large: \(text)", at: start) }
            emit(.integer(n), at: start)
        }
        return j
    }

    private mutating func lexString(_ start: Int) throws -> Int {
        let quote = s[start]
        var out = String.UnicodeScalarView()
        var i = start + 1
        while i < s.count, s[i] != quote {
            if s[i] == "\\", i + 1 < s.count {
                let e = s[i + 1]
                i += 2
                switch e {
                case "n": out.append("\n")
                case "t": out.append("\t")
                case "r": out.append("\r")
                case "0": out.append("\0")
                case "a": out.append("\u{07}")
                case "b": out.append("\u{08}")
                case "f": out.append("\u{0C}")
                case "v": out.append("\u{0B}")
                case "\\", "'", "\"": out.append(e)
                case "\n": break
                case "x", "u", "U":
                    let width = e == "x" ? 2 : e == "u" ? 4 : 8
                    guard i + width <= s.count, let v = UInt32(string(i, i + width), radix: 16), let u = Unicode.Scalar(v) else {
                        throw error("invalid \\\(e) escape in string", at: i - 2)
                    }
                    out.append(u)
                    i += width
                default:
                    out.append("\\")
                    out.append(e)
                }
            } else {
                out.append(s[i])
                i += 1
            }
        }
        guard i < s.count else { throw error("unterminated string literal", at: start) }
        emit(.string(String(out)), at: start)
        return i + 1
    }
}

extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        guard !target.isEmpty else { return self }
        return self.split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
