/// The constant text of a Jinja template: the text outside tags and the string literals inside
/// `{{ ... }}` and `{% ... %}` tags, with escapes decoded, each with its UTF-8 offset in the
/// source. Comments (`{# ... #}`) are skipped. Enough to recognise a chat template's format
/// and read the fixed strings it emits (a default system prompt, a date line); not an evaluator.
struct JinjaLiteral: Equatable {
    var offset: Int
    var text: String
    /// True for a quoted string inside a tag, false for text between tags.
    var quoted: Bool
}

enum JinjaScanner {
    static func literals(in source: String) -> [JinjaLiteral] {
        let s = Array(source.utf8)
        var result: [JinjaLiteral] = []
        var i = 0
        var textStart = 0
        func flushText(upTo end: Int) {
            if end > textStart {
                result.append(JinjaLiteral(offset: textStart, text: String(decoding: s[textStart..<end], as: UTF8.self),
                                           quoted: false))
            }
        }
        while i < s.count {
            guard s[i] == UInt8(ascii: "{"), i + 1 < s.count,
                  [UInt8(ascii: "{"), UInt8(ascii: "%"), UInt8(ascii: "#")].contains(s[i + 1]) else {
                i += 1
                continue
            }
            flushText(upTo: i)
            let kind = s[i + 1]
            let close: UInt8 = kind == UInt8(ascii: "{") ? UInt8(ascii: "}") : kind  // "}}", "%}" or "#}"
            i += 2
            if kind == UInt8(ascii: "#") {
                while i + 1 < s.count && !(s[i] == UInt8(ascii: "#") && s[i + 1] == UInt8(ascii: "}")) { i += 1 }
                i = Swift.min(i + 2, s.count)
                textStart = i
                continue
            }
            // Inside a tag: collect quoted strings until the closing delimiter.
            while i < s.count {
                let c = s[i]
                if c == UInt8(ascii: "'") || c == UInt8(ascii: "\"") {
                    let start = i
                    var bytes: [UInt8] = []
                    i += 1
                    while i < s.count && s[i] != c {
                        if s[i] == UInt8(ascii: "\\") && i + 1 < s.count {
                            bytes.append(contentsOf: unescape(s[i + 1]))
                            i += 2
                        } else {
                            bytes.append(s[i])
                            i += 1
                        }
                    }
                    i += 1  // the closing quote
                    result.append(JinjaLiteral(offset: start, text: String(decoding: bytes, as: UTF8.self), quoted: true))
                    continue
                }
                if c == close && i + 1 < s.count && s[i + 1] == UInt8(ascii: "}") {
                    i += 2
                    break
                }
                i += 1
            }
            textStart = i
        }
        flushText(upTo: s.count)
        return result
    }

    /// Python's (and so Jinja's) meaning of a backslash escape; unknown ones keep the backslash.
    private static func unescape(_ c: UInt8) -> [UInt8] {
        switch c {
        case UInt8(ascii: "n"): [10]
        case UInt8(ascii: "t"): [9]
        case UInt8(ascii: "r"): [13]
        case UInt8(ascii: "\\"), UInt8(ascii: "'"), UInt8(ascii: "\""): [c]
        default: [UInt8(ascii: "\\"), c]
        }
    }
}
