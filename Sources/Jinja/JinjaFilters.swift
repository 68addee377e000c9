#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The `|filter` functions, with jinja2's argument names and defaults.
struct Arguments {
    let positional: [JinjaValue]
    let keywords: [(String, JinjaValue)]

    init(_ positional: [JinjaValue], _ keywords: [(String, JinjaValue)]) {
        self.positional = positional
        self.keywords = keywords
    }

    /// The argument at `index` (counting after the filtered value) or named `name`.
    subscript(_ index: Int, _ name: String) -> JinjaValue? {
        if let kw = keywords.last(where: { $0.0 == name }) { return kw.1 }
        return index < positional.count ? positional[index] : Optional<JinjaValue>.none
    }
}

extension JinjaEvaluator {
    func applyFilter(_ name: String, _ value: JinjaValue, _ a: Arguments, at e: Expr) throws -> JinjaValue {
        func string(_ v: JinjaValue?, _ what: String) throws -> String {
            guard case .string(let s)? = v else { throw fail("filter '\(name)' expects a string for \(what)", e) }
            return s
        }
        func requireString() throws -> String {
            if case .string(let s) = value { return s }
            return value.renderedString
        }
        switch name {
        case "safe", "e", "escape", "forceescape":
            if name == "safe" { return value }
            return .string(htmlEscape(value.renderedString))
        case "string":
            return .string(value.renderedString)
        case "trim":
            let chars = a[0, "chars"]
            return .string(pyStrip(try requireString(), chars: chars.flatMap { if case .string(let c) = $0 { c } else { nil } }, left: true, right: true))
        case "upper": return .string(try requireString().uppercased())
        case "lower": return .string(try requireString().lowercased())
        case "capitalize": return .string(pyCapitalize(try requireString()))
        case "title": return .string(jinjaTitle(try requireString()))
        case "replace":
            let s = try requireString()
            let old = try string(a[0, "old"], "old"), new = try string(a[1, "new"], "new")
            var count = -1
            if case .int(let c)? = a[2, "count"] { count = c }
            return .string(pyReplace(s, old, new, count))
        case "length", "count":
            switch value {
            case .string(let s): return .int(s.unicodeScalars.count)
            case .list(let l): return .int(l.count)
            case .dict(let d): return .int(d.count)
            case .undefined: return .int(0)
            case .namespace(let ns): return .int(ns.attributes.count)
            default: throw fail("object of type '\(value.typeName)' has no len()", e)
            }
        case "default", "d":
            let fallback = a[0, "default_value"] ?? .string("")
            let boolean = a[1, "boolean"]?.isTruthy ?? false
            if value.isUndefined || (boolean && !value.isTruthy) { return fallback }
            return value
        case "list":
            return .list(try iterate(value, at: e))
        case "first":
            return try iterate(value, at: e).first ?? .undefined
        case "last":
            return try iterate(value, at: e).last ?? .undefined
        case "reverse":
            if case .string(let s) = value { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
            return .list(try iterate(value, at: e).reversed())
        case "join":
            let separator = a[0, "d"].map(\.renderedString) ?? ""
            var items = try iterate(value, at: e)
            if let attr = a[1, "attribute"] { items = try items.map { try attributePath($0, attr, at: e) } }
            return .string(items.map(\.renderedString).joined(separator: separator))
        case "items":
            switch value {
            case .dict(let d): return .list(d.pairs.map { .list([.string($0.0), $0.1]) })
            case .undefined: return .list([])
            default: throw fail("filter 'items' expects a mapping, got \(value.typeName)", e)
            }
        case "dictsort":
            guard case .dict(let d) = value else { throw fail("filter 'dictsort' expects a mapping", e) }
            let byValue = a[1, "by"].map { $0.renderedString == "value" } ?? false
            let reverse = a[2, "reverse"]?.isTruthy ?? false
            var pairs = d.pairs.map { JinjaValue.list([.string($0.0), $0.1]) }
            pairs = try sortValues(pairs, key: { v in
                guard case .list(let p) = v else { return v }
                return foldCase(byValue ? p[1] : p[0], caseSensitive: a[0, "case_sensitive"]?.isTruthy ?? false)
            }, reverse: reverse, at: e)
            return .list(pairs)
        case "tojson":
            var indent: String?
            // transformers' signature: tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False).
            switch a[1, "indent"] {
            case .int(let n)?: indent = String(repeating: " ", count: max(0, n))
            case .string(let s)?: indent = s
            default: indent = nil
            }
            var itemSep = indent == nil ? ", " : ",", keySep = ": "
            if case .list(let seps)? = a[2, "separators"], seps.count == 2 {
                itemSep = seps[0].renderedString
                keySep = seps[1].renderedString
            }
            let sortKeys = a[3, "sort_keys"]?.isTruthy ?? false
            var out = ""
            do {
                try writePythonJSON(value, into: &out, indent: indent, level: 0, itemSeparator: itemSep, keySeparator: keySep, sortKeys: sortKeys)
            } catch { throw fail(error.message, e) }
            if a[0, "ensure_ascii"]?.isTruthy ?? false { out = asciiEscaped(out) }
            return .string(out)
        case "selectattr", "rejectattr", "select", "reject":
            let byAttribute = name.hasSuffix("attr")
            let keep = name.hasPrefix("select")
            var rest = a.positional
            var attribute: JinjaValue?
            if byAttribute {
                guard !rest.isEmpty else { throw fail("filter '\(name)' needs an attribute name", e) }
                attribute = rest.removeFirst()
            }
            let testName = rest.isEmpty ? nil : rest.removeFirst().renderedString
            return .list(try iterate(value, at: e).filter { item in
                let subject = try attribute.map { try attributePath(item, $0, at: e) } ?? item
                let passed = try testName.map { try applyTest($0, subject, rest, at: e) } ?? subject.isTruthy
                return passed == keep
            })
        case "map":
            let items = try iterate(value, at: e)
            if let attr = a.keywords.last(where: { $0.0 == "attribute" })?.1 {
                let fallback = a.keywords.last(where: { $0.0 == "default" })?.1
                return .list(try items.map {
                    let v = try attributePath($0, attr, at: e)
                    return v.isUndefined ? (fallback ?? v) : v
                })
            }
            guard let filterName = a.positional.first else { throw fail("filter 'map' needs a filter name or attribute=", e) }
            let rest = Arguments(Array(a.positional.dropFirst()), a.keywords)
            return .list(try items.map { try applyFilter(filterName.renderedString, $0, rest, at: e) })
        case "unique":
            let caseSensitive = a[0, "case_sensitive"]?.isTruthy ?? false
            var seen: [JinjaValue] = [], out: [JinjaValue] = []
            for item in try iterate(value, at: e) {
                var key = item
                if let attr = a[1, "attribute"] { key = try attributePath(item, attr, at: e) }
                key = foldCase(key, caseSensitive: caseSensitive)
                if !seen.contains(where: { $0.pythonEquals(key) }) {
                    seen.append(key)
                    out.append(item)
                }
            }
            return .list(out)
        case "sort":
            let reverse = a[0, "reverse"]?.isTruthy ?? false
            let caseSensitive = a[1, "case_sensitive"]?.isTruthy ?? false
            let attribute = a[2, "attribute"]
            return .list(try sortValues(try iterate(value, at: e), key: { v in
                foldCase(try attribute.map { try self.attributePath(v, $0, at: e) } ?? v, caseSensitive: caseSensitive)
            }, reverse: reverse, at: e))
        case "min", "max":
            let caseSensitive = a[0, "case_sensitive"]?.isTruthy ?? false
            let attribute = a[1, "attribute"]
            let sorted = try sortValues(try iterate(value, at: e), key: { v in
                foldCase(try attribute.map { try self.attributePath(v, $0, at: e) } ?? v, caseSensitive: caseSensitive)
            }, reverse: false, at: e)
            return (name == "min" ? sorted.first : sorted.last) ?? .undefined
        case "sum":
            var total = a[1, "start"] ?? .int(0)
            for item in try iterate(value, at: e) {
                let v = try a[0, "attribute"].map { try attributePath(item, $0, at: e) } ?? item
                total = try binary("+", total, v, at: e)
            }
            return total
        case "int":
            let fallback = a[0, "default"] ?? .int(0)
            switch value {
            case .int: return value
            case .bool(let b): return .int(b ? 1 : 0)
            case .double(let d): return d.isFinite && abs(d) < 9.2e18 ? .int(Int(d)) : fallback
            case .string(let s):
                let t = pyStrip(s, chars: nil, left: true, right: true).replacingOccurrences("_", "")
                var base = 10
                if case .int(let b)? = a[1, "base"] { base = b }
                if let i = Int(t, radix: base) { return .int(i) }
                if let d = Double(t), d.isFinite, abs(d) < 9.2e18 { return .int(Int(d)) }
                return fallback
            default: return fallback
            }
        case "float":
            let fallback = a[0, "default"] ?? .double(0)
            switch value {
            case .int(let i): return .double(Double(i))
            case .bool(let b): return .double(b ? 1 : 0)
            case .double: return value
            case .string(let s): return Double(pyStrip(s, chars: nil, left: true, right: true)).map { .double($0) } ?? fallback
            default: return fallback
            }
        case "abs":
            switch value {
            case .int(let i):
                guard i != Int.min else { throw fail("integer overflow", e) }
                return .int(abs(i))
            case .double(let d): return .double(abs(d))
            case .bool(let b): return .int(b ? 1 : 0)
            default: throw fail("bad operand type for abs(): '\(value.typeName)'", e)
            }
        case "round":
            var precision = 0
            if case .int(let p)? = a[0, "precision"] { precision = p }
            let method = a[1, "method"]?.renderedString ?? "common"
            let scale = pow(10.0, Double(precision))
            let x = value.doubleValue * scale
            let r: Double = method == "ceil" ? ceil(x) : method == "floor" ? floor(x) : x.rounded(.toNearestOrEven)
            return .double(r / scale)
        case "indent":
            var pad = "    "
            switch a[0, "width"] {
            case .int(let n)?: pad = String(repeating: " ", count: max(0, n))
            case .string(let s)?: pad = s
            default: break
            }
            let first = a[1, "first"]?.isTruthy ?? false
            let blank = a[2, "blank"]?.isTruthy ?? false
            let lines = value.renderedString.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            var out: [String] = []
            for (i, line) in lines.enumerated() {
                if i == 0 && !first { out.append(line); continue }
                out.append(line.isEmpty && !blank ? line : pad + line)
            }
            return .string(out.joined(separator: "\n"))
        case "wordcount":
            return .int(value.renderedString.split(whereSeparator: { $0.isWhitespace }).count)
        case "attr":
            return try attribute(value, a[0, "name"]?.renderedString ?? "", at: e)
        case "batch":
            guard case .int(let size)? = a[0, "linecount"], size > 0 else { throw fail("filter 'batch' needs a positive size", e) }
            let items = try iterate(value, at: e)
            return .list(stride(from: 0, to: items.count, by: size).map { .list(Array(items[$0..<min($0 + size, items.count)])) })
        case blockBodyName:
            return value
        default:
            throw fail("no filter named '\(name)'", e)
        }
    }

    /// jinja2's attribute getter for `map(attribute=...)` and friends: dotted paths, integer parts.
    func attributePath(_ value: JinjaValue, _ path: JinjaValue, at e: Expr) throws -> JinjaValue {
        if case .int = path { return try item(value, path, at: e) }
        var v = value
        for part in path.renderedString.split(separator: ".", omittingEmptySubsequences: false) {
            if v.isUndefined { return .undefined }
            if let i = Int(part) { v = try item(v, .int(i), at: e) } else { v = try item(v, .string(String(part)), at: e) }
        }
        return v
    }

    private func foldCase(_ v: JinjaValue, caseSensitive: Bool) -> JinjaValue {
        if !caseSensitive, case .string(let s) = v { return .string(s.lowercased()) }
        return v
    }

    private func sortValues(_ items: [JinjaValue], key: (JinjaValue) throws -> JinjaValue, reverse: Bool, at e: Expr) throws -> [JinjaValue] {
        let keyed = try items.map { (try key($0), $0) }
        // A stable merge sort that can report incomparable values.
        var failure: JinjaError?
        let sorted = keyed.enumerated().sorted { x, y in
            guard let order = x.element.0.pythonOrder(y.element.0) else {
                failure = fail("'<' not supported between instances of '\(x.element.0.typeName)' and '\(y.element.0.typeName)'", e)
                return x.offset < y.offset
            }
            if order == 0 { return x.offset < y.offset }
            return reverse ? order > 0 : order < 0
        }
        if let failure { throw failure }
        return sorted.map { $0.element.1 }
    }
}

func htmlEscape(_ s: String) -> String {
    var out = ""
    for c in s.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&#34;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

/// jinja2's `title` filter: upper-case the first letter of each word, where words start after
/// whitespace, `-`, or an opening bracket.
func jinjaTitle(_ s: String) -> String {
    var out = ""
    var startOfWord = true
    for c in s {
        out += startOfWord ? c.uppercased() : c.lowercased()
        startOfWord = c.isWhitespace || "-([{<".contains(c)
    }
    return out
}

func pyCapitalize(_ s: String) -> String {
    guard let first = s.first else { return s }
    return first.uppercased() + s.dropFirst().lowercased()
}
