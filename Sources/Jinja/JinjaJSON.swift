/// Why a value cannot be written as JSON (the `tojson` filter adds where in the template).
struct PythonJSONError: Error {
    let message: String
}

/// The `tojson` filter as transformers defines it: Python's `json.dumps` with
/// `ensure_ascii=False` (non-ASCII kept), key order kept, optional indent and separators.
func writePythonJSON(
    _ value: JinjaValue, into out: inout String, indent: String?, level: Int,
    itemSeparator: String, keySeparator: String, sortKeys: Bool
) throws(PythonJSONError) {
    guard level < 500 else { throw PythonJSONError(message: "tojson: value nested too deeply") }
    func newline(_ depth: Int) {
        guard let indent else { return }
        out += "\n"
        for _ in 0..<depth { out += indent }
    }
    switch value {
    case .none: out += "null"
    case .bool(let b): out += b ? "true" : "false"
    case .int(let i): out += String(i)
    case .double(let d):
        if d.isNaN { out += "NaN" } else if d.isInfinite { out += d < 0 ? "-Infinity" : "Infinity" } else { out += formatPythonFloat(d) }
    case .string(let s): out += jsonString(s)
    case .list(let items):
        if items.isEmpty { out += "[]"; return }
        out += "["
        for (i, item) in items.enumerated() {
            if i > 0 { out += itemSeparator }
            newline(level + 1)
            try writePythonJSON(item, into: &out, indent: indent, level: level + 1, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys)
        }
        newline(level)
        out += "]"
    case .dict(let d):
        if d.isEmpty { out += "{}"; return }
        out += "{"
        var pairs = d.pairs
        if sortKeys { pairs.sort { JinjaValue.string($0.0).pythonOrder(.string($1.0)) ?? 0 < 0 } }
        for (i, (k, v)) in pairs.enumerated() {
            if i > 0 { out += itemSeparator }
            newline(level + 1)
            out += jsonString(k) + keySeparator
            try writePythonJSON(v, into: &out, indent: indent, level: level + 1, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys)
        }
        newline(level)
        out += "}"
    case .namespace(let ns):
        try writePythonJSON(.dict(ns.attributes), into: &out, indent: indent, level: level, itemSeparator: itemSeparator, keySeparator: keySeparator, sortKeys: sortKeys)
    case .undefined, .callable:
        throw PythonJSONError(message: "tojson: object of type '\(value.typeName)' is not JSON serializable")
    }
}

extension JinjaValue {
    /// Python's `json.dumps(value, ensure_ascii=False)` (what `tojson` writes with no arguments,
    /// and what vLLM's tool-call parsers put in `arguments`); nil for a value JSON cannot hold.
    public var pythonJSON: String? {
        var out = ""
        do { try writePythonJSON(self, into: &out, indent: nil, level: 0, itemSeparator: ", ", keySeparator: ": ", sortKeys: false) } catch { return nil }
        return out
    }
}

func jsonString(_ s: String) -> String {
    var out = "\""
    for u in s.unicodeScalars {
        switch u {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case "\u{08}": out += "\\b"
        case "\u{0C}": out += "\\f"
        default:
            if u.value < 0x20 { out += "\\u" + hex(u.value, width: 4) } else { out.unicodeScalars.append(u) }
        }
    }
    return out + "\""
}

/// `ensure_ascii=True`: non-ASCII characters as `\uXXXX` (UTF-16 surrogate pairs above U+FFFF).
/// Only string contents can hold them, so escaping the finished text is the same.
func asciiEscaped(_ json: String) -> String {
    var out = ""
    for u in json.unicodeScalars {
        if u.isASCII {
            out.unicodeScalars.append(u)
        } else {
            for unit in String(u).utf16 { out += "\\u" + hex(UInt32(unit), width: 4) }
        }
    }
    return out
}
