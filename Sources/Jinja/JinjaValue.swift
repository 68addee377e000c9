/// A value in a Jinja template: what Python's jinja2 would see after transformers hands it the
/// chat messages (JSON-like data), plus the template's own callables and namespaces.
public enum JinjaValue {
    /// jinja2's default `Undefined`: renders as "", is falsy, iterates as empty.
    case undefined
    case none
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case list([JinjaValue])
    case dict(JinjaDict)
    /// A macro, a global function or a bound method.
    case callable(JinjaCallable)
    /// The mutable object `namespace(...)` returns.
    case namespace(JinjaNamespace)
}

/// A dictionary that keeps insertion order, as Python's dict does.
public struct JinjaDict {
    public private(set) var keys: [String] = []
    private var storage: [String: JinjaValue] = [:]

    public init() {}
    public init(_ pairs: [(String, JinjaValue)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public var count: Int { keys.count }
    public var isEmpty: Bool { keys.isEmpty }
    public var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0] ?? .none) } }
    public var values: [JinjaValue] { keys.map { storage[$0] ?? .none } }

    public subscript(key: String) -> JinjaValue? {
        get { storage[key] }
        set {
            if let newValue {
                if storage.updateValue(newValue, forKey: key) == nil { keys.append(key) }
            } else if storage.removeValue(forKey: key) != nil {
                keys.removeAll { $0 == key }
            }
        }
    }
}

/// Something a template can call: positional arguments and keyword arguments in call order.
public final class JinjaCallable {
    public let name: String
    let body: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue

    public init(name: String, _ body: @escaping ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) {
        self.name = name
        self.body = body
    }

    func call(_ args: [JinjaValue], _ kwargs: [(String, JinjaValue)]) throws -> JinjaValue {
        try body(args, kwargs)
    }
}

/// The object `namespace(x=1)` makes; `{% set ns.x = ... %}` changes it in place.
public final class JinjaNamespace {
    public var attributes: JinjaDict
    public init(_ attributes: JinjaDict = JinjaDict()) { self.attributes = attributes }
}

// MARK: - Convenient construction from Swift values

extension JinjaValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral,
    ExpressibleByBooleanLiteral, ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral, ExpressibleByNilLiteral
{
    public init(stringLiteral value: String) { self = .string(value) }
    public init(integerLiteral value: Int) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(arrayLiteral elements: JinjaValue...) { self = .list(elements) }
    /// Keeps the literal's key order.
    public init(dictionaryLiteral elements: (String, JinjaValue)...) { self = .dict(JinjaDict(elements)) }
    public init(nilLiteral: ()) { self = .none }

    public init(_ value: String) { self = .string(value) }
    public init(_ value: Int) { self = .int(value) }
    public init(_ value: Double) { self = .double(value) }
    public init(_ value: Bool) { self = .bool(value) }
    public init(_ value: [JinjaValue]) { self = .list(value) }
    public init(_ value: [String]) { self = .list(value.map { .string($0) }) }
    /// Swift dictionaries have no order: the keys are sorted to make the result deterministic.
    /// Use `init(pairs:)` or a dictionary literal to keep an order.
    public init(_ value: [String: JinjaValue]) {
        self = .dict(JinjaDict(value.keys.sorted().map { ($0, value[$0] ?? .none) }))
    }
    public init(pairs: [(String, JinjaValue)]) { self = .dict(JinjaDict(pairs)) }
    public init(_ value: String?) { self = value.map { .string($0) } ?? .none }
}

// MARK: - Python semantics

extension JinjaValue {
    /// Python truthiness.
    public var isTruthy: Bool {
        switch self {
        case .undefined, .none: false
        case .bool(let b): b
        case .int(let i): i != 0
        case .double(let d): d != 0
        case .string(let s): !s.isEmpty
        case .list(let l): !l.isEmpty
        case .dict(let d): !d.isEmpty
        case .callable, .namespace: true
        }
    }

    var isUndefined: Bool { if case .undefined = self { true } else { false } }

    /// The Python type name, for error messages.
    var typeName: String {
        switch self {
        case .undefined: "undefined"
        case .none: "NoneType"
        case .bool: "bool"
        case .int: "int"
        case .double: "float"
        case .string: "str"
        case .list: "list"
        case .dict: "dict"
        case .callable: "function"
        case .namespace: "Namespace"
        }
    }

    /// What `{{ value }}` prints: Python's `str()`.
    public var renderedString: String {
        switch self {
        case .undefined: ""
        case .string(let s): s
        default: pythonRepr
        }
    }

    /// Python's `repr()`, used inside lists and dicts.
    var pythonRepr: String {
        switch self {
        case .undefined: ""
        case .none: "None"
        case .bool(let b): b ? "True" : "False"
        case .int(let i): String(i)
        case .double(let d): formatPythonFloat(d)
        case .string(let s): pythonStringRepr(s)
        case .list(let l): "[" + l.map(\.pythonRepr).joined(separator: ", ") + "]"
        case .dict(let d): "{" + d.pairs.map { pythonStringRepr($0.0) + ": " + $0.1.pythonRepr }.joined(separator: ", ") + "}"
        case .callable(let c): "<function \(c.name)>"
        case .namespace(let n): "<Namespace " + JinjaValue.dict(n.attributes).pythonRepr + ">"
        }
    }
}

/// Python's `repr(float)`: shortest round trip, `1.0` for whole numbers, `1e+16` from 1e16 up.
func formatPythonFloat(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    var s = d.description
    if let e = s.firstIndex(of: "e") {
        // Swift writes "1e-05" and "1e+16" like Python; make sure of a sign and two digits.
        var mantissa = String(s[..<e])
        var exponent = String(s[s.index(after: e)...])
        if mantissa.hasSuffix(".0") { mantissa.removeLast(2) }
        var sign = "+"
        if exponent.hasPrefix("-") { sign = "-"; exponent.removeFirst() } else if exponent.hasPrefix("+") { exponent.removeFirst() }
        if exponent.count < 2 { exponent = "0" + exponent }
        return mantissa + "e" + sign + exponent
    }
    // Python uses exponent notation from 1e16 on; Swift's description switches at 2^53 or so.
    if abs(d) >= 1e16, let dot = s.firstIndex(of: ".") {
        let digits = s[..<dot].filter { $0.isNumber }
        var significant = String(digits)
        while significant.hasSuffix("0") { significant.removeLast() }
        let exp = digits.count - 1
        let first = significant.prefix(1)
        let rest = significant.dropFirst()
        s = (d < 0 ? "-" : "") + first + (rest.isEmpty ? "" : "." + rest) + "e+" + String(exp)
    }
    return s
}

/// Python's `repr(str)`: single quotes unless the text has a single quote and no double quote.
func pythonStringRepr(_ s: String) -> String {
    let quote: Character = (s.contains("'") && !s.contains("\"")) ? "\"" : "'"
    var out = String(quote)
    for scalar in s.unicodeScalars {
        switch scalar {
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        default:
            if Character(scalar) == quote {
                out += "\\" + String(quote)
            } else if scalar.value < 0x20 || scalar.value == 0x7f {
                out += "\\x" + hex(scalar.value, width: 2)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
    }
    out.append(quote)
    return out
}

func hex(_ v: UInt32, width: Int) -> String {
    let h = String(v, radix: 16)
    return String(repeating: "0", count: max(0, width - h.count)) + h
}
