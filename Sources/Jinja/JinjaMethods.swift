/// Python methods on strings, dicts and lists (`'a b'.split()`, `d.items()`), returned as bound
/// callables. Only methods that do not change the object: transformers renders in an
/// immutable sandbox.
extension JinjaEvaluator {
    func dictMethod(_ d: JinjaDict, _ name: String) -> JinjaValue? {
        let body: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue
        switch name {
        case "items": body = { _, _ in .list(d.pairs.map { .list([.string($0.0), $0.1]) }) }
        case "keys": body = { _, _ in .list(d.keys.map { .string($0) }) }
        case "values": body = { _, _ in .list(d.values) }
        case "get":
            body = { args, kwargs in
                let a = Arguments(args, kwargs)
                guard case .string(let k)? = a[0, "key"] else { return a[1, "default"] ?? .none }
                return d[k] ?? a[1, "default"] ?? .none
            }
        default: return nil
        }
        return .callable(JinjaCallable(name: name, body))
    }

    func listMethod(_ l: [JinjaValue], _ name: String) -> JinjaValue? {
        switch name {
        case "index":
            return .callable(JinjaCallable(name: name) { args, _ in
                guard let x = args.first, let i = l.firstIndex(where: { $0.pythonEquals(x) }) else {
                    throw JinjaError(.runtime, "value is not in list")
                }
                return .int(i)
            })
        case "count":
            return .callable(JinjaCallable(name: name) { args, _ in
                guard let x = args.first else { return .int(0) }
                return .int(l.filter { $0.pythonEquals(x) }.count)
            })
        default: return nil
        }
    }

    func stringMethod(_ s: String, _ name: String) -> JinjaValue? {
        func chars(_ v: JinjaValue?) -> String? { if case .string(let c)? = v { c } else { nil } }
        func text(_ v: JinjaValue?, _ what: String) throws -> String {
            guard case .string(let t)? = v else { throw JinjaError(.runtime, "str.\(name)() needs a string for \(what)") }
            return t
        }
        let body: (Arguments) throws -> JinjaValue
        switch name {
        case "strip": body = { .string(pyStrip(s, chars: chars($0[0, "chars"]), left: true, right: true)) }
        case "lstrip": body = { .string(pyStrip(s, chars: chars($0[0, "chars"]), left: true, right: false)) }
        case "rstrip": body = { .string(pyStrip(s, chars: chars($0[0, "chars"]), left: false, right: true)) }
        case "upper": body = { _ in .string(s.uppercased()) }
        case "lower": body = { _ in .string(s.lowercased()) }
        case "title": body = { _ in .string(pyTitle(s)) }
        case "capitalize": body = { _ in .string(pyCapitalize(s)) }
        case "startswith", "endswith":
            body = { a in
                let candidates: [JinjaValue]
                switch a[0, "prefix"] {
                case .list(let l)?: candidates = l
                case let v?: candidates = [v]
                case nil: throw JinjaError(.runtime, "str.\(name)() needs an argument")
                }
                for c in candidates {
                    let t = try text(c, "its argument")
                    let hit = name == "startswith"
                        ? s.unicodeScalars.starts(with: t.unicodeScalars)
                        : s.unicodeScalars.reversed().starts(with: t.unicodeScalars.reversed())
                    if hit { return .bool(true) }
                }
                return .bool(false)
            }
        case "split", "rsplit":
            body = { a in
                var maxSplit = -1
                if case .int(let m)? = a[1, "maxsplit"] { maxSplit = m }
                let parts: [String]
                if let sep = chars(a[0, "sep"]) {
                    guard !sep.isEmpty else { throw JinjaError(.runtime, "empty separator") }
                    parts = pySplit(s, sep, maxSplit, fromRight: name == "rsplit")
                } else {
                    parts = pySplitWhitespace(s, maxSplit, fromRight: name == "rsplit")
                }
                return .list(parts.map { .string($0) })
            }
        case "splitlines":
            body = { _ in .list(s.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).map { .string(String($0)) }.dropLast(s.last?.isNewline == true ? 1 : 0)) }
        case "replace":
            body = { a in
                var count = -1
                if case .int(let c)? = a[2, "count"] { count = c }
                return .string(pyReplace(s, try text(a[0, "old"], "old"), try text(a[1, "new"], "new"), count))
            }
        case "find":
            body = { a in
                let t = try text(a[0, "sub"], "sub")
                let hay = Array(s.unicodeScalars), needle = Array(t.unicodeScalars)
                if needle.isEmpty { return .int(0) }
                if hay.count >= needle.count {
                    for i in 0...(hay.count - needle.count) where Array(hay[i..<i + needle.count]) == needle { return .int(i) }
                }
                return .int(-1)
            }
        case "count":
            body = { a in
                let t = try text(a[0, "sub"], "sub")
                return .int(t.isEmpty ? s.unicodeScalars.count + 1 : s.split(separator: t, omittingEmptySubsequences: false).count - 1)
            }
        case "join":
            body = { a in
                guard case .list(let items)? = a[0, "iterable"] else { throw JinjaError(.runtime, "str.join() needs a list") }
                return .string(items.map(\.renderedString).joined(separator: s))
            }
        case "isdigit": body = { _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.numericType == .decimal }) }
        case "isalpha": body = { _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy { $0.properties.isAlphabetic }) }
        case "isspace": body = { _ in .bool(!s.isEmpty && s.unicodeScalars.allSatisfy(\.isPythonSpace)) }
        case "isupper": body = { _ in .bool(s.contains { $0.isLetter } && s == s.uppercased()) }
        case "islower": body = { _ in .bool(s.contains { $0.isLetter } && s == s.lowercased()) }
        case "format": body = { a in .string(try pyFormat(s, a)) }
        default: return nil
        }
        return .callable(JinjaCallable(name: name) { args, kwargs in try body(Arguments(args, kwargs)) })
    }
}

extension Unicode.Scalar {
    /// Python's `str.isspace()`, which `strip()` and `split()` use: Unicode's White_Space plus
    /// the information separators U+001C...U+001F.
    var isPythonSpace: Bool { properties.isWhitespace || (0x1C...0x1F).contains(value) }
}

func pyStrip(_ s: String, chars: String?, left: Bool, right: Bool) -> String {
    let set = chars.map { Set($0.unicodeScalars) }
    func strippable(_ u: Unicode.Scalar) -> Bool { set.map { $0.contains(u) } ?? u.isPythonSpace }
    let scalars = Array(s.unicodeScalars)
    var a = 0, b = scalars.count
    if left { while a < b, strippable(scalars[a]) { a += 1 } }
    if right { while b > a, strippable(scalars[b - 1]) { b -= 1 } }
    return String(String.UnicodeScalarView(scalars[a..<b]))
}

func pyReplace(_ s: String, _ old: String, _ new: String, _ count: Int) -> String {
    if old.isEmpty {
        // Python inserts `new` between characters (and at both ends).
        var out = "", n = 0
        for u in s.unicodeScalars {
            if count < 0 || n < count { out += new; n += 1 }
            out.unicodeScalars.append(u)
        }
        if count < 0 || n < count { out += new }
        return out
    }
    let parts = s.split(separator: old, omittingEmptySubsequences: false).map(String.init)
    if count < 0 || count >= parts.count - 1 { return parts.joined(separator: new) }
    return parts[0...count].joined(separator: new) + old + parts[(count + 1)...].joined(separator: old)
}

func pySplit(_ s: String, _ sep: String, _ maxSplit: Int, fromRight: Bool) -> [String] {
    let parts = s.split(separator: sep, omittingEmptySubsequences: false).map(String.init)
    guard maxSplit >= 0, parts.count - 1 > maxSplit else { return parts }
    if fromRight {
        let keep = parts.count - maxSplit
        return [parts[..<keep].joined(separator: sep)] + parts[keep...]
    }
    return Array(parts[..<maxSplit]) + [parts[maxSplit...].joined(separator: sep)]
}

func pySplitWhitespace(_ s: String, _ maxSplit: Int, fromRight: Bool) -> [String] {
    if maxSplit < 0 {
        return s.unicodeScalars.split(whereSeparator: \.isPythonSpace).map { String(String.UnicodeScalarView($0)) }
    }
    // With a limit: split at most maxSplit times; the remainder keeps its inner whitespace.
    var words: [String] = []
    var scalars = Array(fromRight ? s.unicodeScalars.reversed() : Array(s.unicodeScalars))
    while true {
        while let f = scalars.first, f.isPythonSpace { scalars.removeFirst() }
        if scalars.isEmpty { break }
        if words.count == maxSplit {
            while let l = scalars.last, l.isPythonSpace { scalars.removeLast() }
            words.append(String(String.UnicodeScalarView(scalars)))
            break
        }
        let end = scalars.firstIndex(where: \.isPythonSpace) ?? scalars.count
        words.append(String(String.UnicodeScalarView(scalars[..<end])))
        scalars.removeFirst(end)
    }
    if fromRight { return words.reversed().map { String(String.UnicodeScalarView($0.unicodeScalars.reversed())) } }
    return words
}

/// Python's `str.title()`: a letter after a non-letter is upper-cased, others lower-cased.
func pyTitle(_ s: String) -> String {
    var out = ""
    var previousCased = false
    for c in s {
        out += previousCased ? c.lowercased() : c.uppercased()
        previousCased = c.isLetter
    }
    return out
}

/// `str.format` with `{}`, `{0}` and `{name}` fields (no format specs), `{{` and `}}` escapes.
func pyFormat(_ s: String, _ a: Arguments) throws -> String {
    var out = ""
    var auto = 0
    var it = Array(s)
    var i = 0
    while i < it.count {
        let c = it[i]
        if c == "{" {
            if i + 1 < it.count, it[i + 1] == "{" { out += "{"; i += 2; continue }
            guard let close = it[i...].firstIndex(of: "}") else { throw JinjaError(.runtime, "single '{' encountered in format string") }
            var field = String(it[(i + 1)..<close])
            if let colon = field.firstIndex(of: ":") { field = String(field[..<colon]) }
            let value: JinjaValue?
            if field.isEmpty {
                value = auto < a.positional.count ? a.positional[auto] : Optional<JinjaValue>.none
                auto += 1
            } else if let n = Int(field) {
                value = n < a.positional.count ? a.positional[n] : Optional<JinjaValue>.none
            } else {
                value = a.keywords.last { $0.0 == field }?.1
            }
            guard let value else { throw JinjaError(.runtime, "format string refers to a missing argument '\(field)'") }
            out += value.renderedString
            i = close + 1
        } else if c == "}" {
            if i + 1 < it.count, it[i + 1] == "}" { out += "}"; i += 2; continue }
            throw JinjaError(.runtime, "single '}' encountered in format string")
        } else {
            out.append(c)
            i += 1
        }
    }
    it.removeAll()
    return out
}
