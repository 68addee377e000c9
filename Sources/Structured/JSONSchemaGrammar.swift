import Tokenizers

/// How the grammars of ``JSONSchemaGrammar`` write JSON text.
public struct JSONGrammarOptions: Sendable, Equatable {
    /// Whitespace at each place JSON allows it (before the whole value and around `{ } [ ] : ,`;
    /// none after the value, so the answer ends as soon as the value is complete): nothing, one
    /// space, or a newline and up to this many spaces or tabs of indent. Compact JSON,
    /// `{"a": 1, "b": 2}` and pretty-printed JSON all fit, but a model cannot pad with runs of
    /// spaces or blank lines (small models do, when the grammar lets them). The default, 32,
    /// indents 4 spaces down to depth 8 (2 spaces: 16). 0 allows compact JSON only.
    public var maxWhitespace: Int
    /// true (the default): an object schema without `additionalProperties` allows no keys but
    /// its `properties` (OpenAI's strict mode). false: JSON Schema's default, any other key is
    /// allowed (with any value), after the listed ones.
    public var strictProperties: Bool

    public init(maxWhitespace: Int = 32, strictProperties: Bool = true) {
        self.maxWhitespace = max(0, maxWhitespace)
        self.strictProperties = strictProperties
    }
}

/// JSON Schema (the subset that a grammar expresses exactly) as a ``Grammar`` of JSON texts.
///
/// What the grammar accepts is valid under the schema, though often only a subset of the valid
/// texts: listed properties in the schema's order, one spelling per `enum`/`const` value (compact
/// JSON), canonical integers (no `-0`, no leading zeros), no exponent on bounded numbers, no
/// `\uXXXX` for characters of a `pattern` or `format` other than those that must be escaped.
/// Two known supersets: `oneOf` is `anyOf` (exclusivity is not enforced), and the keys of
/// additional properties are not kept apart from the listed ones.
///
/// Supported: boolean schemas (`true`; `false` only where it removes an optional property or
/// ends an array), `type` (one or a list; without `type`, the types that the keywords present
/// belong to, else any), `enum` and `const` (values of another `type` dropped; other keywords
/// beside them are not applied), `anyOf`, `oneOf`, `allOf` (one member that is not
/// annotation-only), local `$ref` (`#`, `#/$defs/…`, `#/definitions/…`, any JSON pointer;
/// recursion allowed, each target one rule), `properties`, `required`, `additionalProperties`,
/// `unevaluatedProperties` (as `additionalProperties`), `items`, `prefixItems`, the draft-4 tuple
/// form of `items` with `additionalItems`, `minItems`, `maxItems`, `minLength`, `maxLength`
/// (characters; an escape is one), `pattern` (JSON Schema's search semantics: a top-level
/// alternative not anchored with `^`/`$` may have any text before/after it), `format`
/// (date-time, date, time, uuid, email, ipv4, uri), `minimum`, `maximum`, `exclusiveMinimum`,
/// `exclusiveMaximum` (numeric, or the draft-4 boolean form): exact for integers, integer-valued
/// bounds only for numbers. `minProperties`/`maxProperties` and lengths beside `pattern`/`format`
/// only where already implied. Annotations are ignored. A schema may use only one of: its own
/// keywords, `$ref`, `anyOf`/`oneOf`, a non-trivial `allOf` member. Anything else throws a
/// ``GrammarError`` naming the keyword and its place (a JSON pointer such as `#/properties/age`).
public enum JSONSchemaGrammar {
    /// The largest count a bounded keyword (`maxLength`, `maxItems`, …) may give.
    public static let maxCount = 10_000
    /// How deep subschemas may nest (counting `$ref`s followed).
    static let maxDepth = 128

    /// The grammar of JSON texts valid under `schema`. Throws a ``GrammarError`` naming the
    /// keyword (and its JSON path, e.g. `#/properties/age`) for what it cannot express.
    public static func grammar(schema: JSON, options: JSONGrammarOptions = .init()) throws -> Grammar {
        var compiler = SchemaCompiler(root: schema, options: options)
        return try compiler.build()
    }

    /// Any JSON value (an object when `objectOnly`: OpenAI's `json_object` mode).
    public static func anyJSON(objectOnly: Bool, options: JSONGrammarOptions = .init()) -> Grammar {
        var compiler = SchemaCompiler(root: .bool(true), options: options)
        let value = objectOnly ? compiler.anyObject() : compiler.anyValue()
        compiler.grammar.define("root", .sequence([compiler.ws, value]))
        return compiler.grammar
    }

    /// `e` (matching raw UTF-8 string content, without `.rule` references) rewritten to match
    /// the same content written inside a JSON string literal: `"`, `\` and the control bytes
    /// 0x00-0x1F appear escaped (`\"` `\\` `\b` `\f` `\n` `\r` `\t`, or `\u00XX` in either case),
    /// `/` as itself or `\/`, and every other byte as itself (no `\uXXXX` for other characters).
    /// A `.rule` reference is left as it is.
    public static func escapedForJSONString(_ e: GrammarExpression) -> GrammarExpression {
        switch e {
        case .bytes(let set):
            let plain = set.subtracting(Escapes.mustEscape)
            let escaped = Escapes.escapes(for: set.subtracting(plain), slash: set.contains(UInt8(ascii: "/")))
            switch (plain.isEmpty, escaped) {
            case (_, nil): return .bytes(plain)
            case (true, let esc?): return esc
            case (false, let esc?): return .choice([.bytes(plain), esc])
            }
        case .literal(let bytes):
            var parts: [GrammarExpression] = []
            var run: [UInt8] = []
            for b in bytes {
                if Escapes.mustEscape.contains(b) || b == UInt8(ascii: "/") {
                    if !run.isEmpty { parts.append(.literal(run)); run = [] }
                    let esc = Escapes.escapes(for: b == UInt8(ascii: "/") ? ByteSet() : ByteSet([b]), slash: b == UInt8(ascii: "/"))!
                    parts.append(b == UInt8(ascii: "/") ? .choice([.literal([b]), esc]) : esc)
                } else {
                    run.append(b)
                }
            }
            if !run.isEmpty { parts.append(.literal(run)) }
            return parts.count == 1 ? parts[0] : .sequence(parts)
        case .rule:
            return e
        case .sequence(let parts):
            return .sequence(parts.map(escapedForJSONString))
        case .choice(let options):
            return .choice(options.map(escapedForJSONString))
        case .repeat(let body, let lo, let hi):
            return .repeat(escapedForJSONString(body), min: lo, max: hi)
        }
    }
}

// MARK: - Escapes

enum Escapes {
    /// Bytes that a JSON string must escape.
    static let mustEscape: ByteSet = ByteSet(0x00...0x1F).union(ByteSet([0x22, 0x5C]))
    static let hexDigits = ByteSet(UInt8(ascii: "0")...UInt8(ascii: "9")).union(ByteSet(UInt8(ascii: "a")...UInt8(ascii: "f"))).union(ByteSet(UInt8(ascii: "A")...UInt8(ascii: "F")))

    /// `\` and the escapes of the bytes in `special` (a subset of ``mustEscape``), plus `\/`
    /// when `slash`; nil when there are none.
    static func escapes(for special: ByteSet, slash: Bool) -> GrammarExpression? {
        guard !special.isEmpty || slash else { return nil }
        var short = ByteSet()
        let shortForms: [(UInt8, Character)] = [(0x22, "\""), (0x5C, "\\"), (0x08, "b"), (0x0C, "f"), (0x0A, "n"), (0x0D, "r"), (0x09, "t")]
        for (b, c) in shortForms where special.contains(b) { short.insert(c.asciiValue!) }
        if slash { short.insert(UInt8(ascii: "/")) }
        // \u00XX, grouped by the high nibble (0, 1, 2 for `"`, 5 for `\`).
        var unicode: [GrammarExpression] = []
        for high in [0, 1, 2, 5] as [UInt8] {
            var lows = ByteSet()
            for low in 0..<16 as Range<UInt8> where special.contains(high << 4 | low) { lows.formUnion(hexDigit(low)) }
            if !lows.isEmpty { unicode.append(.sequence([.bytes(hexDigit(high)), .bytes(lows)])) }
        }
        var alternatives: [GrammarExpression] = []
        if !short.isEmpty { alternatives.append(.bytes(short)) }
        if !unicode.isEmpty {
            alternatives.append(.sequence([.text("u00"), unicode.count == 1 ? unicode[0] : .choice(unicode)]))
        }
        return .sequence([.text("\\"), alternatives.count == 1 ? alternatives[0] : .choice(alternatives)])
    }

    /// The spellings of a hex digit's value (both cases for a-f).
    static func hexDigit(_ v: UInt8) -> ByteSet {
        v < 10 ? ByteSet([UInt8(ascii: "0") + v]) : ByteSet([UInt8(ascii: "a") + v - 10, UInt8(ascii: "A") + v - 10])
    }
}

// MARK: - Building blocks

/// Small helpers for writing byte-level expressions.
enum G {
    static let digit = GrammarExpression.bytes(ByteSet(UInt8(ascii: "0")...UInt8(ascii: "9")))
    static let nonzeroDigit = GrammarExpression.bytes(ByteSet(UInt8(ascii: "1")...UInt8(ascii: "9")))
    static let hex = GrammarExpression.bytes(Escapes.hexDigits)

    /// A byte set written like a regex class body: `a-z` ranges, other characters as themselves
    /// (a `-` first or last is itself). ASCII only.
    static func set(_ spec: String) -> ByteSet {
        let b = Array(spec.utf8)
        var out = ByteSet()
        var i = 0
        while i < b.count {
            if i + 2 < b.count, b[i + 1] == UInt8(ascii: "-") {
                out.formUnion(ByteSet(b[i]...b[i + 2]))
                i += 3
            } else {
                out.insert(b[i])
                i += 1
            }
        }
        return out
    }

    static func cls(_ spec: String) -> GrammarExpression { .bytes(set(spec)) }

    static func seq(_ parts: GrammarExpression...) -> GrammarExpression { .sequence(parts) }

    static func any(_ parts: GrammarExpression...) -> GrammarExpression { parts.count == 1 ? parts[0] : .choice(parts) }

    static func rep(_ e: GrammarExpression, _ n: Int) -> GrammarExpression { .repeat(e, min: n, max: n) }

    /// Canonical decimal numerals (no leading zeros) of the integers in [lo, hi] (hi nil:
    /// unbounded); nil when the range is empty.
    static func naturals(_ lo: UInt64, _ hi: UInt64?) -> GrammarExpression? {
        if let hi, lo > hi { return nil }
        let low = Array(String(lo).utf8)
        var alternatives: [GrammarExpression] = []
        if let hi {
            let high = Array(String(hi).utf8)
            for length in low.count...high.count {
                let a = length == low.count ? low : [UInt8(ascii: "1")] + Array(repeating: UInt8(ascii: "0"), count: length - 1)
                let b = length == high.count ? high : Array(repeating: UInt8(ascii: "9"), count: length)
                alternatives.append(sameLength(a[...], b[...]))
            }
        } else {
            alternatives.append(sameLength(low[...], Array(repeating: UInt8(ascii: "9"), count: low.count)[...]))
            alternatives.append(.sequence([nonzeroDigit, .repeat(digit, min: low.count, max: nil)]))
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// The digit strings of one length between `x` and `y` (inclusive, as numbers).
    private static func sameLength(_ x: ArraySlice<UInt8>, _ y: ArraySlice<UInt8>) -> GrammarExpression {
        guard let x0 = x.first, let y0 = y.first else { return .empty }
        let xs = x.dropFirst(), ys = y.dropFirst()
        if x0 == y0 { return join(.literal([x0]), sameLength(xs, ys)) }
        var alternatives: [GrammarExpression] = []
        let xLowest = xs.allSatisfy { $0 == UInt8(ascii: "0") }
        let yHighest = ys.allSatisfy { $0 == UInt8(ascii: "9") }
        var midLo = x0 + 1, midHi = y0 - 1
        if xLowest {
            midLo = x0
        } else {
            alternatives.append(join(.literal([x0]), sameLength(xs, Array(repeating: UInt8(ascii: "9"), count: xs.count)[...])))
        }
        if yHighest { midHi = y0 }
        if midLo <= midHi {
            alternatives.append(join(.bytes(ByteSet(midLo...midHi)), xs.isEmpty ? .empty : rep(digit, xs.count)))
        }
        if !yHighest {
            alternatives.append(join(.literal([y0]), sameLength(Array(repeating: UInt8(ascii: "0"), count: ys.count)[...], ys)))
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// `a` then `b`, merging literals and flattening sequences.
    private static func join(_ a: GrammarExpression, _ b: GrammarExpression) -> GrammarExpression {
        switch (a, b) {
        case (_, .sequence(let parts)) where parts.isEmpty: return a
        case (.literal(let x), .literal(let y)): return .literal(x + y)
        case (.literal(let x), .sequence(let parts)):
            if case .literal(let y) = parts.first { return .sequence([.literal(x + y)] + parts.dropFirst()) }
            return .sequence([a] + parts)
        default: return .sequence([a, b])
        }
    }

    /// The number of characters (UTF-8 lead or ASCII bytes) that raw content matching `e` can
    /// have: at least `min`, at most `max` (nil: no bound known).
    static func characterBounds(_ e: GrammarExpression) -> (min: Int, max: Int?) {
        let continuation = ByteSet(0x80...0xBF)
        switch e {
        case .bytes(let set):
            if set.subtracting(continuation).isEmpty { return (0, 0) }
            if set.subtracting(continuation) == set { return (1, 1) }
            return (0, 1)
        case .literal(let bytes):
            let n = bytes.filter { !continuation.contains($0) }.count
            return (n, n)
        case .rule:
            return (0, nil)
        case .sequence(let parts):
            var lo = 0, hi: Int? = 0
            for p in parts {
                let b = characterBounds(p)
                lo = min(lo + b.min, Int.max / 2)
                if let h = hi, let m = b.max { hi = min(h + m, Int.max / 2) } else { hi = nil }
            }
            return (lo, hi)
        case .choice(let options):
            guard !options.isEmpty else { return (0, 0) }
            let bounds = options.map(characterBounds)
            let lo = bounds.map(\.min).min()!
            let hi: Int? = bounds.contains { $0.max == nil } ? nil : bounds.map { $0.max! }.max()!
            return (lo, hi)
        case .repeat(let body, let lo, let hi):
            let b = characterBounds(body)
            let low = b.min == 0 ? 0 : min(b.min.multipliedReportingOverflow(by: lo).overflow ? Int.max / 2 : b.min * lo, Int.max / 2)
            if b.max == 0 { return (low, 0) }
            guard let hi, let m = b.max else { return (low, nil) }
            let (p, o) = m.multipliedReportingOverflow(by: hi)
            return (low, o ? Int.max / 2 : min(p, Int.max / 2))
        }
    }
}

/// String formats as raw content (before JSON escaping).
enum Formats {
    static let names = ["date-time", "date", "time", "uuid", "email", "ipv4", "uri"]

    static func expression(_ name: String) -> GrammarExpression? {
        switch name {
        case "date": return date
        case "time": return time
        case "date-time": return G.seq(date, .text("T"), time)
        case "uuid": return uuid
        case "email": return email
        case "ipv4": return ipv4
        case "uri": return uri
        default: return nil
        }
    }

    /// RFC 3339 full-date with the days of each month, February 29 in leap years only.
    static let date: GrammarExpression = {
        let d = G.digit
        let month = G.any(G.seq(.text("0"), G.cls("1-9")), G.seq(.text("1"), G.cls("0-2")))
        let day1to28 = G.any(G.seq(.text("0"), G.cls("1-9")), G.seq(.text("1"), d), G.seq(.text("2"), G.cls("0-8")))
        let notFebruary = G.any(G.seq(.text("0"), G.cls("13-9")), G.seq(.text("1"), G.cls("0-2")))
        let longMonth = G.any(G.seq(.text("0"), G.cls("13578")), G.seq(.text("1"), G.cls("02")))
        let monthDay = G.any(
            G.seq(month, .text("-"), day1to28),
            G.seq(notFebruary, .text("-"), G.any(.text("29"), .text("30"))),
            G.seq(longMonth, .text("-31")))
        // Divisible by 4: the last two digits (not 00) are; or they are 00 and the first two are.
        let byFour = G.any(G.seq(G.cls("02468"), G.cls("48")), G.seq(G.cls("13579"), G.cls("26")), G.seq(G.cls("2468"), .text("0")))
        let centuryByFour = G.any(G.seq(G.cls("02468"), G.cls("048")), G.seq(G.cls("13579"), G.cls("26")))
        let leapYear = G.any(G.seq(d, d, byFour), G.seq(centuryByFour, .text("00")))
        return G.any(G.seq(G.rep(d, 4), .text("-"), monthDay), G.seq(leapYear, .text("-02-29")))
    }()

    /// RFC 3339 full-time: hh:mm:ss, optional fraction, `Z` or an offset (upper-case `Z` only;
    /// no leap second).
    static let time: GrammarExpression = {
        let hour = G.any(G.seq(G.cls("01"), G.digit), G.seq(.text("2"), G.cls("0-3")))
        let minute = G.seq(G.cls("0-5"), G.digit)
        let fraction = GrammarExpression.optional(G.seq(.text("."), .plus(G.digit)))
        let offset = G.any(.text("Z"), G.seq(G.cls("+-"), hour, .text(":"), minute))
        return G.seq(hour, .text(":"), minute, .text(":"), minute, fraction, offset)
    }()

    static let uuid: GrammarExpression = G.seq(G.rep(G.hex, 8), .text("-"), G.rep(G.hex, 4), .text("-"), G.rep(G.hex, 4), .text("-"), G.rep(G.hex, 4), .text("-"), G.rep(G.hex, 12))

    /// A practical address: dot-separated atoms of RFC 5322 `atext`, `@`, a domain of two or
    /// more labels (letters, digits, inner hyphens; at most 63 characters each).
    static let email: GrammarExpression = {
        let atext = G.cls("A-Za-z0-9!#$%&'*+/=?^_`{|}~-")
        let local = G.seq(.plus(atext), .star(G.seq(.text("."), .plus(atext))))
        let alnum = G.cls("A-Za-z0-9")
        let label = G.seq(alnum, .optional(G.seq(.repeat(G.cls("A-Za-z0-9-"), min: 0, max: 61), alnum)))
        return G.seq(local, .text("@"), label, .plus(G.seq(.text("."), label)))
    }()

    static let ipv4: GrammarExpression = {
        let octet = G.naturals(0, 255)!
        return G.seq(octet, .text("."), octet, .text("."), octet, .text("."), octet)
    }()

    /// RFC 3986 `URI` (scheme, hierarchical part, query, fragment), except IP-literal hosts
    /// (`[v6]`).
    static let uri: GrammarExpression = {
        let unreserved = G.set("A-Za-z0-9._~-")
        let subDelims = G.set("!$&'()*+,;=")
        let pct = G.seq(.text("%"), G.hex, G.hex)
        let pcharSet = unreserved.union(subDelims).union(G.set(":@"))
        let pchar = G.any(.bytes(pcharSet), pct)
        let segment = GrammarExpression.star(pchar)
        let segmentNz = GrammarExpression.plus(pchar)
        let scheme = G.seq(G.cls("A-Za-z"), .star(G.cls("A-Za-z0-9+.-")))
        let userinfo = GrammarExpression.star(G.any(.bytes(unreserved.union(subDelims).union(G.set(":"))), pct))
        let host = GrammarExpression.star(G.any(.bytes(unreserved.union(subDelims)), pct))
        let authority = G.seq(.optional(G.seq(userinfo, .text("@"))), host, .optional(G.seq(.text(":"), .star(G.digit))))
        let segments = GrammarExpression.star(G.seq(.text("/"), segment))
        let hier = G.any(
            G.seq(.text("//"), authority, segments),
            G.seq(.text("/"), .optional(G.seq(segmentNz, segments))),
            G.seq(segmentNz, segments),
            .empty)
        let query = GrammarExpression.star(G.any(.bytes(pcharSet.union(G.set("/?"))), pct))
        return G.seq(scheme, .text(":"), hier, .optional(G.seq(.text("?"), query)), .optional(G.seq(.text("#"), query)))
    }()
}

// MARK: - The compiler

struct SchemaCompiler {
    let rootSchema: JSON
    let options: JSONGrammarOptions
    var grammar = Grammar()
    /// Shared rules (any value, any string, …) by kind.
    var shared: [String: String] = [:]
    /// The rule of each `$ref` target, by its JSON pointer.
    var refRules: [String: String] = [:]
    /// `$ref` targets being compiled.
    var inProgress: Set<String> = []
    /// `$ref` targets entered since the last `{` or `[`: meeting one again is left recursion.
    var headRefs: Set<String> = []
    let ws: GrammarExpression

    static let annotations: Set<String> = [
        "title", "description", "default", "examples", "$schema", "$id", "$comment", "deprecated", "readOnly", "writeOnly",
        "strict", "name", "$defs", "definitions", "contentEncoding", "contentMediaType", "$anchor", "discriminator",
    ]
    static let applicators: Set<String> = ["$ref", "allOf", "anyOf", "oneOf"]
    static let objectKeywords: Set<String> = ["properties", "required", "additionalProperties", "unevaluatedProperties", "minProperties", "maxProperties"]
    static let arrayKeywords: Set<String> = ["items", "prefixItems", "additionalItems", "minItems", "maxItems"]
    static let stringKeywords: Set<String> = ["minLength", "maxLength", "pattern", "format"]
    static let numberKeywords: Set<String> = ["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]
    static let typeNames = ["object", "array", "string", "integer", "number", "boolean", "null"]

    init(root: JSON, options: JSONGrammarOptions) {
        rootSchema = root
        self.options = options
        grammar.define("root", .empty)
        if options.maxWhitespace > 0 {
            grammar.define("ws", .optional(.choice([.text(" "), .sequence([.text("\n"), .repeat(.bytes(ByteSet([0x20, 0x09])), min: 0, max: options.maxWhitespace)])])))
            ws = .rule("ws")
        } else {
            ws = .empty
        }
    }

    mutating func build() throws -> Grammar {
        let value = try reference("#", path: "#", depth: 0)
        grammar.define("root", .sequence([ws, value]))
        return grammar
    }

    func error(_ path: String, _ message: String) -> GrammarError {
        GrammarError("JSON schema at \(path): \(message)")
    }

    static func child(_ path: String, _ key: String) -> String {
        path + "/" + key.replacingOccurrences("~", "~0").replacingOccurrences("/", "~1")
    }

    // MARK: Shared rules

    private mutating func sharedRule(_ kind: String, _ body: (inout SchemaCompiler) -> GrammarExpression) -> GrammarExpression {
        if let name = shared[kind] { return .rule(name) }
        let name = grammar.freshName(kind)
        shared[kind] = name
        grammar.define(name, .empty)
        grammar.define(name, body(&self))
        return .rule(name)
    }

    var comma: GrammarExpression { .sequence([ws, .text(","), ws]) }
    var colon: GrammarExpression { .sequence([ws, .text(":"), ws]) }

    mutating func anyValue() -> GrammarExpression {
        sharedRule("value") { c in
            .choice([c.anyObject(), c.anyArray(), c.anyString(), c.anyNumber(), .text("true"), .text("false"), .text("null")])
        }
    }

    mutating func anyObject() -> GrammarExpression {
        sharedRule("object") { c in
            let member = GrammarExpression.sequence([c.anyString(), c.colon, c.anyValue()])
            return c.objectText(.sequence([member, .star(.sequence([c.comma, member]))]), optional: true)
        }
    }

    mutating func anyArray() -> GrammarExpression {
        sharedRule("array") { c in
            let item = c.anyValue()
            return c.arrayText(.sequence([item, .star(.sequence([c.comma, item]))]), optional: true)
        }
    }

    /// `{ members }` with whitespace; the members (never empty) may be left out when `optional`.
    func objectText(_ members: GrammarExpression?, optional: Bool) -> GrammarExpression {
        guard let members else { return .sequence([.text("{"), ws, .text("}")]) }
        let inner = GrammarExpression.sequence([members, ws])
        return .sequence([.text("{"), ws, optional ? .optional(inner) : inner, .text("}")])
    }

    func arrayText(_ items: GrammarExpression?, optional: Bool) -> GrammarExpression {
        guard let items else { return .sequence([.text("["), ws, .text("]")]) }
        let inner = GrammarExpression.sequence([items, ws])
        return .sequence([.text("["), ws, optional ? .optional(inner) : inner, .text("]")])
    }

    /// One character of a JSON string: an unescaped scalar, or an escape (a surrogate pair
    /// written as two `\u` escapes is one character; lone surrogates are refused).
    mutating func stringCharacter() -> GrammarExpression {
        sharedRule("char") { _ in
            let plain = GrammarExpression.scalars([0x20...0x21, 0x23...0x5B, 0x5D...0x10FFFF])
            let h = G.hex
            let bmp = G.any(G.seq(G.cls("0-9a-cA-Ce-fE-F"), h, h, h), G.seq(G.cls("dD"), G.cls("0-7"), h, h))
            let pair = G.seq(G.cls("dD"), G.cls("89abAB"), h, h, .text("\\u"), G.cls("dD"), G.cls("c-fC-F"), h, h)
            let escape = G.seq(.text("\\"), G.any(G.cls("\"\\/bfnrt"), G.seq(.text("u"), G.any(bmp, pair))))
            return .choice([plain, escape])
        }
    }

    mutating func anyString() -> GrammarExpression {
        sharedRule("string") { c in .sequence([.text("\""), .star(c.stringCharacter()), .text("\"")]) }
    }

    /// Unbounded numbers get at most the digits a double holds (16 before and after the point, 3
    /// in the exponent), unbounded integers those of an Int64 (19): without a limit a model can
    /// write digits until its token limit, and more digits mean nothing to the reader.
    static let numberDigits = 16, exponentDigits = 3, integerDigits = 19

    mutating func anyNumber() -> GrammarExpression {
        sharedRule("number") { _ in
            let integer = G.any(.text("0"), G.seq(G.nonzeroDigit, .repeat(G.digit, min: 0, max: Self.numberDigits - 1)))
            let fraction = G.seq(.text("."), .repeat(G.digit, min: 1, max: Self.numberDigits))
            let exponent = G.seq(G.cls("eE"), .optional(G.cls("+-")), .repeat(G.digit, min: 1, max: Self.exponentDigits))
            return G.seq(.optional(.text("-")), integer, .optional(fraction), .optional(exponent))
        }
    }

    mutating func anyInteger() -> GrammarExpression {
        sharedRule("integer") { _ in G.any(.text("0"), G.seq(.optional(.text("-")), G.nonzeroDigit, .repeat(G.digit, min: 0, max: Self.integerDigits - 1))) }
    }

    // MARK: References

    /// The rule of the schema that `ref` points at, compiled once.
    mutating func reference(_ ref: String, path: String, depth: Int) throws -> GrammarExpression {
        let (target, key) = try resolve(ref, path: path)
        if let name = refRules[key] {
            if inProgress.contains(key) && headRefs.contains(key) {
                throw error(path, "'$ref' \(ref) reaches itself again before any JSON text (left recursion)")
            }
            return .rule(name)
        }
        let name = grammar.freshName(key == "#" ? "schema" : Self.ruleName(key.split(separator: "/").last.map { String($0) } ?? "def"))
        grammar.define(name, .empty)
        refRules[key] = name
        inProgress.insert(key)
        headRefs.insert(key)
        let body = try compile(target, path: key, depth: depth + 1)
        inProgress.remove(key)
        headRefs.remove(key)
        grammar.define(name, body)
        return .rule(name)
    }

    /// The schema a local reference points at, and its canonical JSON pointer.
    func resolve(_ ref: String, path: String) throws -> (JSON, String) {
        guard ref.hasPrefix("#") else {
            throw error(path, "'$ref' \(ref): only references inside the schema (starting with #) are supported")
        }
        guard let fragment = Self.percentDecoded(String(ref.dropFirst())) else {
            throw error(path, "'$ref' \(ref): malformed percent-encoding")
        }
        if fragment.isEmpty { return (rootSchema, "#") }
        guard fragment.hasPrefix("/") else {
            throw error(path, "'$ref' \(ref): anchors are not supported, only JSON pointers (#/$defs/name)")
        }
        var node = rootSchema
        var key = "#"
        for raw in fragment.dropFirst().split(separator: "/", omittingEmptySubsequences: false) {
            let token = String(raw).replacingOccurrences("~1", "/").replacingOccurrences("~0", "~")
            key = Self.child(key, token)
            switch node {
            case .object(let members):
                guard let next = members.first(where: { $0.0 == token })?.1 else {
                    throw error(path, "'$ref' \(ref): nothing at \(key)")
                }
                node = next
            case .array(let items):
                guard let i = Int(token), items.indices.contains(i) else { throw error(path, "'$ref' \(ref): nothing at \(key)") }
                node = items[i]
            default:
                throw error(path, "'$ref' \(ref): nothing at \(key)")
            }
        }
        return (node, key)
    }

    static func percentDecoded(_ s: String) -> String? {
        guard s.contains("%") else { return s }
        var out: [UInt8] = []
        let b = Array(s.utf8)
        var i = 0
        while i < b.count {
            if b[i] == UInt8(ascii: "%") {
                guard i + 2 < b.count, let v = UInt8(String(decoding: b[(i + 1)...(i + 2)], as: UTF8.self), radix: 16) else { return nil }
                out.append(v)
                i += 3
            } else {
                out.append(b[i])
                i += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    // MARK: Schemas

    mutating func compile(_ schema: JSON, path: String, depth: Int) throws -> GrammarExpression {
        guard depth <= JSONSchemaGrammar.maxDepth else {
            throw error(path, "the schema nests too deeply (over \(JSONSchemaGrammar.maxDepth) levels)")
        }
        switch schema {
        case .bool(true): return anyValue()
        case .bool(false): throw error(path, "the schema false allows no value")
        case .object(let members): return try compileObjectSchema(members, path: path, depth: depth)
        default: throw error(path, "a schema must be an object or a boolean")
        }
    }

    /// Whether `schema` asserts nothing (true, or only annotations).
    static func isTrivial(_ schema: JSON) -> Bool {
        switch schema {
        case .bool(true): return true
        case .object(let members): return members.allSatisfy { annotations.contains($0.0) }
        default: return false
        }
    }

    private enum Part {
        case local([String])
        case ref(String)
        case allOf(Int, JSON)
        case anyOf(String, [JSON])

        var keyword: String {
            switch self {
            case .local(let keys): return keys.map { "'\($0)'" }.joined(separator: ", ")
            case .ref: return "'$ref'"
            case .allOf: return "'allOf'"
            case .anyOf(let k, _): return "'\(k)'"
            }
        }
    }

    mutating func compileObjectSchema(_ members: [(String, JSON)], path: String, depth: Int) throws -> GrammarExpression {
        var localKeys: [String] = []
        var parts: [Part] = []
        for (key, value) in members {
            if Self.annotations.contains(key) { continue }
            switch key {
            case "$ref":
                guard case .string(let r) = value else { throw error(Self.child(path, key), "'$ref' must be a string") }
                parts.append(.ref(r))
            case "allOf":
                guard case .array(let items) = value, !items.isEmpty else { throw error(Self.child(path, key), "'allOf' must be a non-empty array") }
                for (i, item) in items.enumerated() where !Self.isTrivial(item) { parts.append(.allOf(i, item)) }
            case "anyOf", "oneOf":
                guard case .array(let items) = value, !items.isEmpty else { throw error(Self.child(path, key), "'\(key)' must be a non-empty array") }
                parts.append(.anyOf(key, items))
            case "uniqueItems" where value == .bool(false):
                continue
            case "type", "enum", "const":
                localKeys.append(key)
            default:
                if Self.objectKeywords.contains(key) || Self.arrayKeywords.contains(key) || Self.stringKeywords.contains(key) || Self.numberKeywords.contains(key) {
                    localKeys.append(key)
                } else {
                    throw error(path, "'\(key)' is not supported")
                }
            }
        }
        if !localKeys.isEmpty { parts.insert(.local(localKeys), at: 0) }
        if parts.count > 1 {
            throw error(path, "cannot combine \(parts.map(\.keyword).joined(separator: " with ")) (a schema may have its own keywords, a '$ref', one non-trivial 'allOf' member, or an 'anyOf'/'oneOf' — only one of them)")
        }
        switch parts.first {
        case nil:
            return anyValue()
        case .local:
            return try compileLocal(members, path: path, depth: depth)
        case .ref(let r):
            return try reference(r, path: Self.child(path, "$ref"), depth: depth)
        case .allOf(let i, let item):
            return try compile(item, path: Self.child(Self.child(path, "allOf"), String(i)), depth: depth + 1)
        case .anyOf(let key, let items):
            // oneOf: the alternatives' exclusivity is not enforced.
            var alternatives: [GrammarExpression] = []
            for (i, item) in items.enumerated() where item != .bool(false) || (i == items.count - 1 && alternatives.isEmpty) {
                alternatives.append(try compile(item, path: Self.child(Self.child(path, key), String(i)), depth: depth + 1))
            }
            return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
        }
    }

    private mutating func compileLocal(_ members: [(String, JSON)], path: String, depth: Int) throws -> GrammarExpression {
        func get(_ key: String) -> JSON? { members.first { $0.0 == key }?.1 }
        let keys = Set(members.map(\.0))

        var types: Set<String> = []
        var explicitType = false
        if let t = get("type") {
            explicitType = true
            let names: [JSON]
            switch t {
            case .string: names = [t]
            case .array(let list) where !list.isEmpty: names = list
            default: throw error(Self.child(path, "type"), "'type' must be a type name or a non-empty list of them")
            }
            for n in names {
                guard case .string(let s) = n, Self.typeNames.contains(s) else {
                    throw error(Self.child(path, "type"), "unknown type \(n.compactText)")
                }
                types.insert(s)
            }
        } else {
            // No `type`: the types that the keywords present describe (a subset of what the
            // schema allows), else every type.
            if !keys.isDisjoint(with: Self.objectKeywords) { types.insert("object") }
            if !keys.isDisjoint(with: Self.arrayKeywords) { types.insert("array") }
            if !keys.isDisjoint(with: Self.stringKeywords) { types.insert("string") }
            if !keys.isDisjoint(with: Self.numberKeywords) { types.insert("number") }
            if types.isEmpty { types = Set(Self.typeNames) }
        }
        if types.contains("number") { types.remove("integer") }

        if get("enum") != nil || get("const") != nil {
            return try enumeration(get("enum"), get("const"), types: explicitType ? types : nil, path: path)
        }

        var alternatives: [GrammarExpression] = []
        for type in Self.typeNames where types.contains(type) {
            switch type {
            case "object": alternatives.append(try objectSchema(get, path: path, depth: depth))
            case "array": alternatives.append(try arraySchema(get, path: path, depth: depth))
            case "string": alternatives.append(try stringSchema(get, path: path))
            case "integer": alternatives.append(try integerSchema(get, path: path))
            case "number": alternatives.append(try numberSchema(get, path: path))
            case "boolean": alternatives.append(.choice([.text("true"), .text("false")]))
            default: alternatives.append(.text("null"))
            }
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    // MARK: enum / const

    /// The values listed (each in its compact form), those of the wrong type left out. Other
    /// keywords beside `enum`/`const` are not applied.
    private func enumeration(_ enumValue: JSON?, _ constValue: JSON?, types: Set<String>?, path: String) throws -> GrammarExpression {
        var values: [JSON]
        if let enumValue {
            guard case .array(let list) = enumValue, !list.isEmpty else { throw error(Self.child(path, "enum"), "'enum' must be a non-empty array") }
            values = list
            if let constValue { values = values.contains { Self.sameValue($0, constValue) } ? [constValue] : [] }
        } else {
            values = [constValue!]
        }
        if let types { values = values.filter { Self.hasType($0, types) } }
        var seen: Set<String> = []
        var texts: [String] = []
        for v in values {
            let t = v.compactText
            if seen.insert(t).inserted { texts.append(t) }
        }
        guard !texts.isEmpty else {
            throw error(path, "no value of '\(enumValue != nil ? "enum" : "const")' satisfies the schema's other keywords")
        }
        return texts.count == 1 ? .text(texts[0]) : .choice(texts.map { .text($0) })
    }

    static func hasType(_ v: JSON, _ types: Set<String>) -> Bool {
        switch v {
        case .null: return types.contains("null")
        case .bool: return types.contains("boolean")
        case .int: return types.contains("integer") || types.contains("number")
        case .double(let d): return types.contains("number") || (types.contains("integer") && d.rounded() == d)
        case .string: return types.contains("string")
        case .array: return types.contains("array")
        case .object: return types.contains("object")
        }
    }

    /// JSON Schema equality: numbers by value, objects regardless of member order.
    static func sameValue(_ a: JSON, _ b: JSON) -> Bool {
        switch (a, b) {
        case (.int, .int), (.int, .double), (.double, .int), (.double, .double):
            if case .int(let x) = a, case .int(let y) = b { return x == y }
            return a.double! == b.double!
        case (.array(let x), .array(let y)):
            return x.count == y.count && zip(x, y).allSatisfy { sameValue($0, $1) }
        case (.object(let x), .object(let y)):
            return x.count == y.count && x.allSatisfy { m in y.contains { $0.0 == m.0 && sameValue($0.1, m.1) } }
        default:
            return a == b
        }
    }

    // MARK: Counts

    /// A non-negative integer keyword's value (at most ``JSONSchemaGrammar/maxCount``).
    private func count(_ get: (String) -> JSON?, _ key: String, path: String) throws -> Int? {
        guard let v = get(key) else { return nil }
        guard let n = v.int, n >= 0 else { throw error(Self.child(path, key), "'\(key)' must be a non-negative integer") }
        guard n <= JSONSchemaGrammar.maxCount else {
            throw error(Self.child(path, key), "'\(key)' \(n) is over the supported limit of \(JSONSchemaGrammar.maxCount)")
        }
        return n
    }

    // MARK: Strings

    private mutating func stringSchema(_ get: (String) -> JSON?, path: String) throws -> GrammarExpression {
        let minLength = try count(get, "minLength", path: path) ?? 0
        let maxLength = try count(get, "maxLength", path: path)
        if let maxLength, maxLength < minLength {
            throw error(path, "'maxLength' \(maxLength) is less than 'minLength' \(minLength)")
        }
        var raw: GrammarExpression?
        var rawKeyword = ""
        if let p = get("pattern") {
            guard case .string(let pattern) = p else { throw error(Self.child(path, "pattern"), "'pattern' must be a string") }
            if get("format") != nil { throw error(path, "'pattern' together with 'format' is not supported") }
            raw = try patternContent(pattern, path: Self.child(path, "pattern"))
            rawKeyword = "pattern"
        } else if let f = get("format") {
            guard case .string(let format) = f else { throw error(Self.child(path, "format"), "'format' must be a string") }
            guard let e = Formats.expression(format) else {
                throw error(Self.child(path, "format"), "'format' \"\(format)\" is not supported (supported: \(Formats.names.joined(separator: ", ")))")
            }
            raw = e
            rawKeyword = "format"
        }
        if let raw {
            // Lengths are only allowed where the pattern or format already implies them.
            let bounds = G.characterBounds(raw)
            let minOK = minLength <= bounds.min
            let maxOK = maxLength == nil || (bounds.max != nil && bounds.max! <= maxLength!)
            if !minOK || !maxOK {
                throw error(path, "'\(minOK ? "maxLength" : "minLength")' together with '\(rawKeyword)' is not supported (unless the \(rawKeyword) implies it)")
            }
            return .sequence([.text("\""), JSONSchemaGrammar.escapedForJSONString(raw), .text("\"")])
        }
        if minLength == 0 && maxLength == nil { return anyString() }
        return .sequence([.text("\""), .repeat(stringCharacter(), min: minLength, max: maxLength), .text("\"")])
    }

    /// A JSON Schema pattern (unanchored: it matches when it matches anywhere) as raw content:
    /// each top-level alternative is matched whole where it starts with `^` and ends with `$`,
    /// with any text allowed before it when it does not start with `^` and after it when it
    /// does not end with `$`.
    private func patternContent(_ pattern: String, path: String) throws -> GrammarExpression {
        var alternatives: [GrammarExpression] = []
        for alternative in Self.topLevelAlternatives(pattern) {
            var body = Substring(alternative)
            let anchoredStart = body.hasPrefix("^")
            if anchoredStart { body = body.dropFirst() }
            var anchoredEnd = false
            if body.hasSuffix("$") {
                let backslashes = body.dropLast().reversed().prefix { $0 == "\\" }.count
                if backslashes % 2 == 0 { anchoredEnd = true; body = body.dropLast() }
            }
            var inner = GrammarExpression.empty
            if !body.isEmpty {
                do {
                    inner = try RegexGrammar.expression(String(body))
                } catch let e as GrammarError {
                    throw error(path, "'pattern' \(JSON.quoted(pattern)): \(e.message)")
                }
            }
            var parts: [GrammarExpression] = []
            if !anchoredStart { parts.append(.star(.anyScalar)) }
            parts.append(inner)
            if !anchoredEnd { parts.append(.star(.anyScalar)) }
            alternatives.append(parts.count == 1 ? parts[0] : .sequence(parts))
        }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// `pattern` split at its top-level `|`s (outside groups, classes and escapes). A `]` first
    /// in a class (after `[` or `[^`) is taken as a literal.
    static func topLevelAlternatives(_ pattern: String) -> [String] {
        let chars = Array(pattern)
        var out: [String] = []
        var current = ""
        var depth = 0
        var inClass = false
        var classBodyStart = 0
        var i = 0
        while i < chars.count {
            let c = chars[i]
            if c == "\\" {
                current.append(c)
                if i + 1 < chars.count { current.append(chars[i + 1]) }
                i += 2
                continue
            }
            if inClass {
                if c == "]" && i > classBodyStart { inClass = false }
            } else {
                switch c {
                case "[":
                    inClass = true
                    classBodyStart = i + 1 < chars.count && chars[i + 1] == "^" ? i + 2 : i + 1
                case "(":
                    depth += 1
                case ")":
                    depth = max(0, depth - 1)
                case "|" where depth == 0:
                    out.append(current)
                    current = ""
                    i += 1
                    continue
                default:
                    break
                }
            }
            current.append(c)
            i += 1
        }
        out.append(current)
        return out
    }

    // MARK: Numbers

    /// A bound as a JSON number: (value, exact integer value or nil).
    private func numberValue(_ get: (String) -> JSON?, _ key: String, path: String) throws -> Double? {
        guard let v = get(key) else { return nil }
        if case .bool = v, key.hasPrefix("exclusive") { return nil }
        guard let d = v.double, d.isFinite else { throw error(Self.child(path, key), "'\(key)' must be a number") }
        guard abs(d) <= 1e18 else { throw error(Self.child(path, key), "'\(key)' \(d) is out of the supported range (±1e18)") }
        return d
    }

    /// Lower and upper bounds, each (value, exclusive), from the four keywords (the draft-4
    /// boolean `exclusiveMinimum`/`exclusiveMaximum` included).
    private func bounds(_ get: (String) -> JSON?, path: String) throws -> (lower: (Double, Bool)?, upper: (Double, Bool)?) {
        var lower: (Double, Bool)?
        var upper: (Double, Bool)?
        func tighten(_ b: inout (Double, Bool)?, _ new: (Double, Bool), lowerBound: Bool) {
            guard let old = b else { b = new; return }
            if new.0 == old.0 { b = (old.0, old.1 || new.1); return }
            if (new.0 > old.0) == lowerBound { b = new }
        }
        let draft4Min = get("exclusiveMinimum") == .bool(true)
        let draft4Max = get("exclusiveMaximum") == .bool(true)
        if let m = try numberValue(get, "minimum", path: path) { tighten(&lower, (m, draft4Min), lowerBound: true) }
        if let m = try numberValue(get, "exclusiveMinimum", path: path) { tighten(&lower, (m, true), lowerBound: true) }
        if let m = try numberValue(get, "maximum", path: path) { tighten(&upper, (m, draft4Max), lowerBound: false) }
        if let m = try numberValue(get, "exclusiveMaximum", path: path) { tighten(&upper, (m, true), lowerBound: false) }
        return (lower, upper)
    }

    private mutating func integerSchema(_ get: (String) -> JSON?, path: String) throws -> GrammarExpression {
        let (lower, upper) = try bounds(get, path: path)
        if lower == nil && upper == nil { return anyInteger() }
        let lo: Int? = lower.map { $0.1 ? Int($0.0.rounded(.down)) + 1 : Int($0.0.rounded(.up)) }
        let hi: Int? = upper.map { $0.1 ? Int($0.0.rounded(.up)) - 1 : Int($0.0.rounded(.down)) }
        guard let e = Self.integerRange(lo, hi) else {
            throw error(path, "no integer lies between the bounds (minimum \(lo.map(String.init) ?? "-∞"), maximum \(hi.map(String.init) ?? "∞"))")
        }
        return e
    }

    /// Canonical integers (no `-0`, no leading zeros) in [lo, hi]; nil when none.
    static func integerRange(_ lo: Int?, _ hi: Int?) -> GrammarExpression? {
        if let lo, let hi, lo > hi { return nil }
        var alternatives: [GrammarExpression] = []
        if hi == nil || hi! >= 0 {
            let from = UInt64(max(lo ?? 0, 0))
            if let e = G.naturals(from, hi.map { UInt64($0) }) { alternatives.append(e) }
        }
        if lo == nil || lo! < 0 {
            // Magnitudes of the negative part.
            let from: UInt64 = hi.map { $0 < 0 ? UInt64($0.magnitude) : 1 } ?? 1
            if let e = G.naturals(from, lo.map { UInt64($0.magnitude) }) { alternatives.append(.sequence([.text("-"), e])) }
        }
        if alternatives.isEmpty { return nil }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    private mutating func numberSchema(_ get: (String) -> JSON?, path: String) throws -> GrammarExpression {
        let (lower, upper) = try bounds(get, path: path)
        if lower == nil && upper == nil { return anyNumber() }
        for (bound, key) in [(lower, "minimum"), (upper, "maximum")] {
            if let b = bound, b.0.rounded() != b.0 {
                throw error(path, "a \(key) of \(b.0) on a number is not supported (only integer-valued bounds; use type integer or a whole-number bound)")
            }
        }
        guard let e = Self.numberRange(lower.map { (Int($0.0), $0.1) }, upper.map { (Int($0.0), $0.1) }) else {
            throw error(path, "no number lies between the bounds")
        }
        return e
    }

    /// Numbers without an exponent (and without `-0`) between integer bounds (each (value,
    /// exclusive)); nil when none.
    static func numberRange(_ lower: (Int, Bool)?, _ upper: (Int, Bool)?) -> GrammarExpression? {
        var alternatives: [GrammarExpression] = []
        // Zero or more.
        if upper == nil || upper!.0 > 0 || (upper!.0 == 0 && !upper!.1) {
            let low: (UInt64, Bool)? = lower.flatMap { $0.0 > 0 || ($0.0 == 0 && $0.1) ? (UInt64($0.0), $0.1) : nil }
            if let e = magnitude(low, upper.map { (UInt64($0.0), $0.1) }) { alternatives.append(e) }
        }
        // Below zero: the magnitude above 0, at most -lower, at least -upper.
        if lower == nil || lower!.0 < 0 {
            let low: (UInt64, Bool) = upper.flatMap { $0.0 < 0 ? (UInt64($0.0.magnitude), $0.1) : nil } ?? (0, true)
            if let e = magnitude(low, lower.map { (UInt64($0.0.magnitude), $0.1) }) { alternatives.append(.sequence([.text("-"), e])) }
        }
        if alternatives.isEmpty { return nil }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    /// `I` or `I.F` (I canonical, F digits) with a value between the bounds.
    static func magnitude(_ lower: (UInt64, Bool)?, _ upper: (UInt64, Bool)?) -> GrammarExpression? {
        let anyFraction = GrammarExpression.optional(G.seq(.text("."), .plus(G.digit)))
        let nonzeroFraction = G.seq(.text("."), .star(G.digit), G.nonzeroDigit, .star(G.digit))
        let zeroFraction = GrammarExpression.optional(G.seq(.text("."), .plus(.text("0"))))
        var alternatives: [GrammarExpression] = []
        // Integer parts strictly inside: any fraction.
        let lowI: UInt64 = lower.map { $0.1 ? $0.0 + 1 : $0.0 } ?? 0
        if let upper {
            if upper.0 >= 1, let e = G.naturals(lowI, upper.0 - 1) { alternatives.append(G.seq(e, anyFraction)) }
        } else if let e = G.naturals(lowI, nil) {
            alternatives.append(G.seq(e, anyFraction))
        }
        // Just above an exclusive lower bound.
        if let lower, lower.1, upper == nil || lower.0 + 1 <= upper!.0 {
            alternatives.append(G.seq(.text(String(lower.0)), nonzeroFraction))
        }
        // An inclusive upper bound itself.
        if let upper, !upper.1, lower == nil || (lower!.1 ? upper.0 > lower!.0 : upper.0 >= lower!.0) {
            alternatives.append(G.seq(.text(String(upper.0)), zeroFraction))
        }
        if alternatives.isEmpty { return nil }
        return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
    }

    // MARK: Objects

    private struct Property {
        var key: String
        var member: GrammarExpression
        var required: Bool
    }

    private mutating func objectSchema(_ get: (String) -> JSON?, path: String, depth: Int) throws -> GrammarExpression {
        let saved = headRefs
        headRefs = []
        defer { headRefs = saved }

        var required: [String] = []
        if let r = get("required") {
            guard case .array(let list) = r else { throw error(Self.child(path, "required"), "'required' must be an array of strings") }
            for item in list {
                guard case .string(let s) = item else { throw error(Self.child(path, "required"), "'required' must be an array of strings") }
                if !required.contains(s) { required.append(s) }
            }
        }
        // What other keys may hold: nil when no other key is allowed.
        var additionalKey = "additionalProperties"
        var additionalSchema = get("additionalProperties")
        if additionalSchema == nil, let u = get("unevaluatedProperties") {
            additionalSchema = u
            additionalKey = "unevaluatedProperties"
        }
        let additionalPath = Self.child(path, additionalKey)
        var additional: GrammarExpression?
        var additionalExplicitlyFalse = false
        switch additionalSchema {
        case nil: additional = options.strictProperties ? nil : anyValue()
        case .bool(false)?: additional = nil; additionalExplicitlyFalse = true
        case let s?: additional = try compile(s, path: additionalPath, depth: depth + 1)
        }

        var properties: [Property] = []
        if let p = get("properties") {
            guard case .object(let list) = p else { throw error(Self.child(path, "properties"), "'properties' must be an object") }
            let propertiesPath = Self.child(path, "properties")
            for (key, schema) in list where !properties.contains(where: { $0.key == key }) {
                let isRequired = required.contains(key)
                if schema == .bool(false) {
                    if isRequired { throw error(Self.child(propertiesPath, key), "required property \"\(key)\" has the schema false") }
                    continue
                }
                let value = try compile(schema, path: Self.child(propertiesPath, key), depth: depth + 1)
                properties.append(Property(key: key, member: .sequence([.text(JSON.quoted(key)), colon, value]), required: isRequired))
            }
        }
        // Required keys without a schema of their own take the additional properties' schema.
        for key in required where !properties.contains(where: { $0.key == key }) {
            if additionalExplicitlyFalse {
                throw error(Self.child(path, "required"), "required property \"\(key)\" is not in 'properties' and '\(additionalKey)' is false")
            }
            properties.append(Property(key: key, member: .sequence([.text(JSON.quoted(key)), colon, additional ?? anyValue()]), required: true))
        }

        let requiredCount = properties.filter(\.required).count
        if let n = try count(get, "minProperties", path: path), n > requiredCount {
            throw error(Self.child(path, "minProperties"), "'minProperties' is not supported (beyond the number of required properties)")
        }
        if let n = try count(get, "maxProperties", path: path), additional != nil || n < properties.count {
            throw error(Self.child(path, "maxProperties"), "'maxProperties' is not supported (unless every allowed property fits)")
        }

        var additionalMember: GrammarExpression?
        if let additional { additionalMember = shared(.sequence([anyString(), colon, additional]), "other_member") }
        if properties.contains(where: { !$0.required }) {
            // Optional members appear twice in `members`: rules keep the grammar linear in size.
            for i in properties.indices {
                properties[i].member = shared(properties[i].member, "member_" + Self.ruleName(properties[i].key))
            }
        }
        return objectText(members(properties, additional: additionalMember), optional: requiredCount == 0)
    }

    /// The members, in order, every optional one possibly absent, then any additional ones; a
    /// comma between each two present. Never matches the empty string; nil when no member can
    /// be present.
    ///
    /// `after(i)`: the members from i on when one was already written (each preceded by a
    /// comma); `first(i)`: at least one member from i on, the first without a comma.
    private mutating func members(_ properties: [Property], additional: GrammarExpression?) -> GrammarExpression? {
        func then(_ a: GrammarExpression, _ b: GrammarExpression) -> GrammarExpression {
            b == .empty ? a : .sequence([a, b])
        }
        let n = properties.count
        var after: GrammarExpression = additional.map { .star(.sequence([comma, $0])) } ?? .empty
        var first: GrammarExpression? = additional.map { then($0, after) }
        if !properties.contains(where: { !$0.required }) {
            // All required: one sequence.
            guard n > 0 else { return first }
            var parts: [GrammarExpression] = [properties[0].member]
            for p in properties.dropFirst() { parts += [comma, p.member] }
            if after != .empty { parts.append(after) }
            return .sequence(parts)
        }
        // first(i) is needed where i is 0 or member i-1 is optional; it and after(i) both use
        // after(i+1), which is then a rule (keeping the grammar linear in size).
        let base = grammar.freshName("members")
        grammar.define(base, .empty)  // reserves the name; replaced below
        for i in stride(from: n - 1, through: 0, by: -1) {
            let p = properties[i]
            let firstNeeded = i == 0 || !properties[i - 1].required
            if firstNeeded && after != .empty {
                let name = grammar.freshName("\(base)_after\(i + 1)")
                grammar.define(name, after)
                after = .rule(name)
            }
            let here = then(p.member, after)
            let withComma = GrammarExpression.sequence([comma, p.member])
            if p.required {
                first = here
                after = then(withComma, after)
            } else {
                first = first.map { .choice([here, $0]) } ?? here
                after = then(.optional(withComma), after)
            }
        }
        grammar.define(base, first!)
        return .rule(base)
    }

    /// `e` as a rule of its own (named from `hint`) unless it is small: for an expression used
    /// more than once.
    mutating func shared(_ e: GrammarExpression, _ hint: String) -> GrammarExpression {
        switch e {
        case .rule, .literal, .bytes: return e
        default:
            let name = grammar.freshName(hint)
            grammar.define(name, e)
            return .rule(name)
        }
    }

    static func ruleName(_ s: String) -> String {
        let cleaned = String(s.prefix(40).map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") ? $0 : "_" })
        return cleaned.isEmpty ? "x" : cleaned
    }

    // MARK: Arrays

    private mutating func arraySchema(_ get: (String) -> JSON?, path: String, depth: Int) throws -> GrammarExpression {
        let saved = headRefs
        headRefs = []
        defer { headRefs = saved }

        var prefix: [GrammarExpression] = []
        var rest: GrammarExpression?
        let restSchema: JSON?
        let restPath: String
        var prefixSchemas: [JSON] = []
        var prefixPath = Self.child(path, "prefixItems")
        if let p = get("prefixItems") {
            guard case .array(let list) = p else { throw error(prefixPath, "'prefixItems' must be an array of schemas") }
            if case .array = get("items") { throw error(Self.child(path, "items"), "'items' as an array together with 'prefixItems'") }
            prefixSchemas = list
            restSchema = get("items")
            restPath = Self.child(path, "items")
        } else if case .array(let list)? = get("items") {
            // Draft 4-2019: `items` as a list, `additionalItems` for the rest.
            prefixSchemas = list
            prefixPath = Self.child(path, "items")
            restSchema = get("additionalItems")
            restPath = Self.child(path, "additionalItems")
        } else {
            restSchema = get("items")
            restPath = Self.child(path, "items")
        }
        let minItems = try count(get, "minItems", path: path) ?? 0
        let maxItems = try count(get, "maxItems", path: path)
        if let maxItems, maxItems < minItems { throw error(path, "'maxItems' \(maxItems) is less than 'minItems' \(minItems)") }

        var restAllowed = true
        if let maxItems, prefixSchemas.count >= maxItems {
            prefixSchemas.removeLast(prefixSchemas.count - maxItems)
            restAllowed = false
        }
        // An item of schema false ends the array before it.
        if let i = prefixSchemas.firstIndex(where: { $0 == .bool(false) }) {
            if minItems > i { throw error(Self.child(prefixPath, String(i)), "item \(i) has the schema false but 'minItems' is \(minItems)") }
            prefixSchemas.removeLast(prefixSchemas.count - i)
            restAllowed = false
        }
        for (i, s) in prefixSchemas.enumerated() {
            prefix.append(try compile(s, path: Self.child(prefixPath, String(i)), depth: depth + 1))
        }
        if restAllowed {
            switch restSchema {
            case nil: rest = anyValue()
            case .bool(false)?: rest = nil
            case let s?: rest = shared(try compile(s, path: restPath, depth: depth + 1), "item")
            }
        }
        let k = prefix.count
        if minItems > k && rest == nil {
            throw error(Self.child(path, "minItems"), "'minItems' \(minItems) asks for more items than the schema allows (\(k))")
        }
        let restMin = max(0, minItems - k)
        let restMax = maxItems.map { $0 - k }
        if k == 0 {
            guard let rest, restMax != 0 else { return arrayText(nil, optional: true) }
            let more = GrammarExpression.repeat(.sequence([comma, rest]), min: max(0, restMin - 1), max: restMax.map { $0 - 1 })
            return arrayText(.sequence([rest, more]), optional: minItems == 0)
        }
        var tail: GrammarExpression = rest.map { .repeat(.sequence([comma, $0]), min: restMin, max: restMax) } ?? .empty
        for i in stride(from: k - 1, through: 0, by: -1) {
            let item = GrammarExpression.sequence(i == 0 ? [prefix[i], tail] : [comma, prefix[i], tail])
            tail = i > 0 && i >= minItems ? .optional(item) : item
        }
        return arrayText(tail, optional: minItems == 0)
    }
}

private extension String {
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        guard contains(target) else { return self }
        var out = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: target) {
            out += rest[..<r.lowerBound]
            out += replacement
            rest = rest[r.upperBound...]
        }
        return out + rest
    }
}
