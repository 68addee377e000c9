#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs the statement tree against a context: scopes, loops, macros, operators.
final class Scope {
    private var vars: [String: JinjaValue] = [:]
    let parent: Scope?

    init(parent: Scope?, _ vars: [String: JinjaValue] = [:]) {
        self.parent = parent
        self.vars = vars
    }

    func lookup(_ name: String) -> JinjaValue? {
        var s: Scope? = self
        while let scope = s {
            if let v = scope.vars[name] { return v }
            s = scope.parent
        }
        return nil
    }

    func set(_ name: String, _ value: JinjaValue) { vars[name] = value }
}

final class JinjaEvaluator {
    enum Flow { case normal, breakLoop, continueLoop }

    let options: JinjaOptions
    private let globals: [String: JinjaValue]
    private var callDepth = 0
    private static let maxCallDepth = 200
    /// jinja2's sandbox caps `range()` at this many items; the same cap guards `*` repetition.
    static let maxRange = 100_000

    init(options: JinjaOptions) {
        self.options = options
        self.globals = JinjaEvaluator.makeGlobals()
    }

    func fail(_ message: String, _ e: Expr) -> JinjaError {
        JinjaError(.runtime, message, line: e.line, column: e.column)
    }

    // MARK: Statements

    func render(_ nodes: [Node], context: [String: JinjaValue]) throws -> String {
        var out = ""
        _ = try exec(nodes, Scope(parent: nil, context), &out)
        return out
    }

    func exec(_ nodes: [Node], _ scope: Scope, _ out: inout String) throws -> Flow {
        for node in nodes {
            switch node {
            case .text(let s):
                out += s
            case .output(let e):
                out += try eval(e, scope).renderedString
            case .ifChain(let branches, let elseBody):
                var taken = false
                for (condition, body) in branches where try eval(condition, scope).isTruthy {
                    taken = true
                    let flow = try exec(body, scope, &out)
                    if flow != .normal { return flow }
                    break
                }
                if !taken {
                    let flow = try exec(elseBody, scope, &out)
                    if flow != .normal { return flow }
                }
            case .forLoop(let target, let iterable, let condition, let body, let elseBody):
                try runLoop(target, iterable, condition, body, elseBody, scope, &out)
            case .set(let target, let e):
                try assign(target, try eval(e, scope), scope, at: e)
            case .setBlock(let target, let body, let filter):
                let inner = Scope(parent: scope)
                var text = ""
                _ = try exec(body, inner, &text)
                var value = JinjaValue.string(text)
                if let filter { value = try eval(filter, Scope(parent: scope, [blockBodyName: value])) }
                try assign(target, value, scope, at: filter ?? Expr(kind: .literal(.none), line: 0, column: 0))
            case .macro(let definition):
                scope.set(definition.name, .callable(makeMacro(definition, scope)))
            case .callBlock(let call, let parameters, let body):
                guard case .call(let calleeExpr, let argExprs, let kwargExprs) = call.kind else { break }
                let caller = makeMacro(MacroDefinition(name: "caller", parameters: parameters, body: body), scope)
                let callee = try eval(calleeExpr, scope)
                let args = try argExprs.map { try eval($0, scope) }
                var kwargs = try kwargExprs.map { ($0.0, try eval($0.1, scope)) }
                kwargs.append(("caller", .callable(caller)))
                out += try callValue(callee, args, kwargs, at: call).renderedString
            case .filterBlock(let filter, let body):
                var text = ""
                _ = try exec(body, Scope(parent: scope), &text)
                out += try eval(filter, Scope(parent: scope, [blockBodyName: .string(text)])).renderedString
            case .breakLoop:
                return .breakLoop
            case .continueLoop:
                return .continueLoop
            }
        }
        return .normal
    }

    private func assign(_ target: AssignTarget, _ value: JinjaValue, _ scope: Scope, at e: Expr) throws {
        switch target {
        case .name(let n):
            scope.set(n, value)
        case .attribute(let object, let attribute):
            guard case .namespace(let ns) = scope.lookup(object) ?? globals[object] ?? .undefined else {
                throw fail("cannot assign attribute '\(attribute)' on '\(object)': it is not a namespace", e)
            }
            ns.attributes[attribute] = value
        case .tuple(let names):
            let items = try iterate(value, at: e)
            guard items.count == names.count else {
                throw fail("cannot unpack \(items.count) values into \(names.count) names", e)
            }
            for (n, v) in zip(names, items) { scope.set(n, v) }
        }
    }

    private func runLoop(
        _ target: AssignTarget, _ iterable: Expr, _ condition: Expr?, _ body: [Node], _ elseBody: [Node],
        _ scope: Scope, _ out: inout String
    ) throws {
        var items = try iterate(try eval(iterable, scope), at: iterable)
        if let condition {
            items = try items.filter { item in
                let s = Scope(parent: scope)
                try assign(target, item, s, at: iterable)
                return try eval(condition, s).isTruthy
            }
        }
        if items.isEmpty {
            _ = try exec(elseBody, Scope(parent: scope), &out)
            return
        }
        let n = items.count
        for (index, item) in items.enumerated() {
            let s = Scope(parent: scope)
            try assign(target, item, s, at: iterable)
            var loop = JinjaDict()
            loop["index"] = .int(index + 1)
            loop["index0"] = .int(index)
            loop["revindex"] = .int(n - index)
            loop["revindex0"] = .int(n - index - 1)
            loop["first"] = .bool(index == 0)
            loop["last"] = .bool(index == n - 1)
            loop["length"] = .int(n)
            loop["depth"] = .int(1)
            loop["depth0"] = .int(0)
            if index > 0 { loop["previtem"] = items[index - 1] }
            if index + 1 < n { loop["nextitem"] = items[index + 1] }
            loop["cycle"] = .callable(JinjaCallable(name: "cycle") { args, _ in
                args.isEmpty ? .undefined : args[index % args.count]
            })
            s.set("loop", .dict(loop))
            if try exec(body, s, &out) == .breakLoop { break }
        }
    }

    private func makeMacro(_ definition: MacroDefinition, _ defining: Scope) -> JinjaCallable {
        JinjaCallable(name: definition.name) { [unowned self] args, kwargs in
            callDepth += 1
            defer { callDepth -= 1 }
            guard callDepth < Self.maxCallDepth else {
                throw JinjaError(.runtime, "macro '\(definition.name)' recursed too deeply")
            }
            let s = Scope(parent: defining)
            let names = definition.parameters.map(\.0)
            if args.count > names.count {
                throw JinjaError(.runtime, "macro '\(definition.name)' takes not more than \(names.count) argument(s)")
            }
            var given: [String: JinjaValue] = [:]
            for (n, v) in zip(names, args) { given[n] = v }
            for (k, v) in kwargs {
                if k == "caller" { s.set("caller", v); continue }
                guard names.contains(k) else {
                    throw JinjaError(.runtime, "macro '\(definition.name)' takes no keyword argument '\(k)'")
                }
                given[k] = v
            }
            for (name, defaultExpr) in definition.parameters {
                if let v = given[name] {
                    s.set(name, v)
                } else if let defaultExpr {
                    s.set(name, try eval(defaultExpr, s))
                } else {
                    s.set(name, .undefined)
                }
            }
            var text = ""
            _ = try exec(definition.body, s, &text)
            return .string(text)
        }
    }

    // MARK: Expressions

    func eval(_ e: Expr, _ scope: Scope) throws -> JinjaValue {
        switch e.kind {
        case .literal(let v):
            return v
        case .name(let n):
            return scope.lookup(n) ?? globals[n] ?? .undefined
        case .list(let items), .tuple(let items):
            return .list(try items.map { try eval($0, scope) })
        case .dict(let pairs):
            var d = JinjaDict()
            for (k, v) in pairs {
                let key = try eval(k, scope)
                guard case .string(let ks) = key else {
                    if case .int = key { d[key.renderedString] = try eval(v, scope); continue }
                    throw fail("dictionary keys must be strings, not \(key.typeName)", k)
                }
                d[ks] = try eval(v, scope)
            }
            return .dict(d)
        case .attribute(let object, let name):
            return try attribute(try eval(object, scope), name, at: e)
        case .item(let object, let index):
            return try item(try eval(object, scope), try eval(index, scope), at: e)
        case .slice(let object, let a, let b, let c):
            let value = try eval(object, scope)
            func bound(_ x: Expr?) throws -> Int? {
                guard let x else { return nil }
                let v = try eval(x, scope)
                switch v {
                case .none: return nil
                case .int(let i): return i
                case .bool(let b): return b ? 1 : 0
                default: throw fail("slice indices must be integers or None, not \(v.typeName)", x)
                }
            }
            return try slice(value, try bound(a), try bound(b), try bound(c), at: e)
        case .call(let calleeExpr, let argExprs, let kwargExprs):
            let callee = try eval(calleeExpr, scope)
            let args = try argExprs.map { try eval($0, scope) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1, scope)) }
            return try callValue(callee, args, kwargs, at: e)
        case .filter(let subject, let name, let argExprs, let kwargExprs):
            let value = try eval(subject, scope)
            let args = try argExprs.map { try eval($0, scope) }
            let kwargs = try kwargExprs.map { ($0.0, try eval($0.1, scope)) }
            return try applyFilter(name, value, Arguments(args, kwargs), at: e)
        case .test(let subject, let name, let argExprs, let negated):
            let value = try eval(subject, scope)
            let args = try argExprs.map { try eval($0, scope) }
            return .bool(try applyTest(name, value, args, at: e) != negated)
        case .unary(let op, let operand):
            let v = try eval(operand, scope)
            switch (op, v) {
            case ("-", .int(let i)):
                guard i != Int.min else { throw fail("integer overflow", e) }
                return .int(-i)
            case ("-", .bool(let b)): return .int(b ? -1 : 0)
            case ("-", .double(let d)): return .double(-d)
            case ("+", .int), ("+", .double): return v
            case ("+", .bool(let b)): return .int(b ? 1 : 0)
            default: throw fail("bad operand type for unary \(op): '\(v.typeName)'", e)
            }
        case .binary(let op, let l, let r):
            return try binary(op, try eval(l, scope), try eval(r, scope), at: e)
        case .and(let l, let r):
            let left = try eval(l, scope)
            return left.isTruthy ? try eval(r, scope) : left
        case .or(let l, let r):
            let left = try eval(l, scope)
            return left.isTruthy ? left : try eval(r, scope)
        case .not(let x):
            return .bool(!(try eval(x, scope).isTruthy))
        case .compare(let first, let rest):
            var left = try eval(first, scope)
            for (op, rightExpr) in rest {
                let right = try eval(rightExpr, scope)
                guard try compare(op, left, right, at: e) else { return .bool(false) }
                left = right
            }
            return .bool(true)
        case .conditional(let condition, let value, let otherwise):
            if try eval(condition, scope).isTruthy { return try eval(value, scope) }
            return try otherwise.map { try eval($0, scope) } ?? .undefined
        }
    }

    func callValue(_ callee: JinjaValue, _ args: [JinjaValue], _ kwargs: [(String, JinjaValue)], at e: Expr) throws -> JinjaValue {
        guard case .callable(let f) = callee else {
            if callee.isUndefined { throw fail("called an undefined value (no such function or method)", e) }
            throw fail("'\(callee.typeName)' object is not callable", e)
        }
        do {
            return try f.call(args, kwargs)
        } catch let error as JinjaError where error.line == nil && error.kind == .runtime {
            throw JinjaError(.runtime, error.message, line: e.line, column: e.column)
        }
    }

    // MARK: Access

    func attribute(_ value: JinjaValue, _ name: String, at e: Expr) throws -> JinjaValue {
        switch value {
        case .undefined:
            throw fail("cannot read attribute '\(name)' of an undefined value", e)
        case .dict(let d):
            if let m = dictMethod(d, name) { return m }
            return d[name] ?? .undefined
        case .namespace(let ns):
            return ns.attributes[name] ?? .undefined
        case .string(let s):
            return stringMethod(s, name) ?? .undefined
        case .list(let l):
            return listMethod(l, name) ?? .undefined
        default:
            return .undefined
        }
    }

    func item(_ value: JinjaValue, _ key: JinjaValue, at e: Expr) throws -> JinjaValue {
        switch (value, key) {
        case (.undefined, _):
            throw fail("cannot subscript an undefined value", e)
        case (.dict(let d), .string(let k)):
            return d[k] ?? dictMethod(d, k) ?? .undefined
        case (.namespace(let ns), .string(let k)):
            return ns.attributes[k] ?? .undefined
        case (.list(let l), .int(let i)):
            let j = i < 0 ? i + l.count : i
            return j >= 0 && j < l.count ? l[j] : .undefined
        case (.string(let s), .int(let i)):
            let scalars = Array(s.unicodeScalars)
            let j = i < 0 ? i + scalars.count : i
            return j >= 0 && j < scalars.count ? .string(String(scalars[j])) : .undefined
        case (_, .string(let k)):
            return try attribute(value, k, at: e)
        default:
            return .undefined
        }
    }

    private func slice(_ value: JinjaValue, _ start: Int?, _ stop: Int?, _ step: Int?, at e: Expr) throws -> JinjaValue {
        let step = step ?? 1
        guard step != 0 else { throw fail("slice step cannot be zero", e) }
        func indices(_ n: Int) -> [Int] {
            var out: [Int] = []
            if step > 0 {
                var a = start ?? 0, b = stop ?? n
                if a < 0 { a = max(0, a + n) }
                if b < 0 { b = max(0, b + n) }
                a = min(a, n); b = min(b, n)
                var i = a
                while i < b { out.append(i); i += step }
            } else {
                var a = start ?? n - 1, b = stop ?? -1
                if start != nil, a < 0 { a += n }
                if stop != nil, b < 0 { b += n }
                a = min(max(a, -1), n - 1)
                b = min(max(b, -1), n - 1)
                if stop == nil { b = -1 }
                var i = a
                while i > b { out.append(i); i += step }
            }
            return out
        }
        switch value {
        case .list(let l):
            return .list(indices(l.count).map { l[$0] })
        case .string(let s):
            let scalars = Array(s.unicodeScalars)
            var r = String.UnicodeScalarView()
            for i in indices(scalars.count) { r.append(scalars[i]) }
            return .string(String(r))
        case .undefined:
            throw fail("cannot slice an undefined value", e)
        default:
            throw fail("'\(value.typeName)' object is not subscriptable", e)
        }
    }

    /// Python's iteration: list items, dict keys, string characters; undefined gives nothing.
    func iterate(_ value: JinjaValue, at e: Expr) throws -> [JinjaValue] {
        switch value {
        case .list(let l): return l
        case .dict(let d): return d.keys.map { .string($0) }
        case .string(let s): return s.unicodeScalars.map { .string(String($0)) }
        case .undefined: return []
        default: throw fail("'\(value.typeName)' object is not iterable", e)
        }
    }

    // MARK: Operators

    private func numeric(_ v: JinjaValue) -> JinjaValue? {
        switch v {
        case .int, .double: return v
        case .bool(let b): return .int(b ? 1 : 0)
        default: return nil
        }
    }

    func binary(_ op: String, _ l: JinjaValue, _ r: JinjaValue, at e: Expr) throws -> JinjaValue {
        if op == "~" { return .string(l.renderedString + r.renderedString) }
        let unsupported = fail("unsupported operand type(s) for \(op): '\(l.typeName)' and '\(r.typeName)'", e)
        if let a = numeric(l), let b = numeric(r) {
            if case .int(let x) = a, case .int(let y) = b {
                func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JinjaValue {
                    guard !r.overflow else { throw fail("integer overflow", e) }
                    return .int(r.partialValue)
                }
                switch op {
                case "+": return try checked(x.addingReportingOverflow(y))
                case "-": return try checked(x.subtractingReportingOverflow(y))
                case "*": return try checked(x.multipliedReportingOverflow(by: y))
                case "/":
                    guard y != 0 else { throw fail("division by zero", e) }
                    return .double(Double(x) / Double(y))
                case "//", "%":
                    guard y != 0 else { throw fail("integer division or modulo by zero", e) }
                    guard !(x == Int.min && y == -1) else { throw fail("integer overflow", e) }
                    var q = x / y, m = x % y
                    if m != 0, (m < 0) != (y < 0) { q -= 1; m += y }
                    return .int(op == "//" ? q : m)
                case "**":
                    if y < 0 { return .double(pow(Double(x), Double(y))) }
                    var result = 1, base = x, exp = y
                    while exp > 0 {
                        if exp & 1 == 1 { result = try checked(result.multipliedReportingOverflow(by: base)).intValue }
                        exp >>= 1
                        if exp > 0 { base = try checked(base.multipliedReportingOverflow(by: base)).intValue }
                    }
                    return .int(result)
                default: throw unsupported
                }
            }
            let x = a.doubleValue, y = b.doubleValue
            switch op {
            case "+": return .double(x + y)
            case "-": return .double(x - y)
            case "*": return .double(x * y)
            case "/":
                guard y != 0 else { throw fail("float division by zero", e) }
                return .double(x / y)
            case "//", "%":
                guard y != 0 else { throw fail("float modulo by zero", e) }
                var m = fmod(x, y)
                if m != 0, (m < 0) != (y < 0) { m += y }
                return .double(op == "//" ? floor(x / y) : m)
            case "**": return .double(pow(x, y))
            default: throw unsupported
            }
        }
        switch (op, l, r) {
        case ("+", .string(let a), .string(let b)): return .string(a + b)
        case ("+", .list(let a), .list(let b)): return .list(a + b)
        case ("*", .string(let s), .int(let n)), ("*", .int(let n), .string(let s)):
            guard n <= 0 || s.unicodeScalars.count * n <= Self.maxRange * 10 else { throw fail("repeated string is too long", e) }
            return .string(n > 0 ? String(repeating: s, count: n) : "")
        case ("*", .list(let a), .int(let n)), ("*", .int(let n), .list(let a)):
            guard n <= 0 || a.count * n <= Self.maxRange else { throw fail("repeated list is too long", e) }
            return .list(n > 0 ? Array([[JinjaValue]](repeating: a, count: n).joined()) : [])
        case ("+", .string, _), ("+", .list, _):
            // Python's own wording when the left operand is a str or a list (`'a' + none`).
            throw fail("can only concatenate \(l.typeName) (not \"\(r.typeName)\") to \(l.typeName)", e)
        default:
            throw unsupported
        }
    }

    func compare(_ op: String, _ l: JinjaValue, _ r: JinjaValue, at e: Expr) throws -> Bool {
        switch op {
        case "==": return l.pythonEquals(r)
        case "!=": return !l.pythonEquals(r)
        case "in", "not in":
            let found: Bool
            switch r {
            case .string(let s):
                guard case .string(let needle) = l else { throw fail("'in <string>' requires string as left operand, not \(l.typeName)", e) }
                found = needle.isEmpty || s.contains(needle)
            case .list(let items): found = items.contains { $0.pythonEquals(l) }
            case .dict(let d):
                if case .string(let k) = l { found = d[k] != nil } else { found = false }
            case .undefined: found = false
            default: throw fail("argument of type '\(r.typeName)' is not iterable", e)
            }
            return op == "in" ? found : !found
        default:
            guard let order = l.pythonOrder(r) else {
                throw fail("'\(op)' not supported between instances of '\(l.typeName)' and '\(r.typeName)'", e)
            }
            switch op {
            case "<": return order < 0
            case "<=": return order <= 0
            case ">": return order > 0
            default: return order >= 0
            }
        }
    }
}

extension JinjaValue {
    var doubleValue: Double {
        switch self {
        case .int(let i): Double(i)
        case .double(let d): d
        case .bool(let b): b ? 1 : 0
        default: .nan
        }
    }

    var intValue: Int {
        if case .int(let i) = self { return i }
        return 0
    }

    /// Python `==`.
    func pythonEquals(_ other: JinjaValue) -> Bool {
        switch (self, other) {
        case (.undefined, .undefined), (.none, .none): return true
        case (.string(let a), .string(let b)): return a.unicodeScalars.elementsEqual(b.unicodeScalars)
        case (.list(let a), .list(let b)): return a.count == b.count && zip(a, b).allSatisfy { $0.pythonEquals($1) }
        case (.dict(let a), .dict(let b)):
            return a.count == b.count && a.pairs.allSatisfy { k, v in b[k].map { v.pythonEquals($0) } ?? false }
        case (.callable(let a), .callable(let b)): return a === b
        case (.namespace(let a), .namespace(let b)): return a === b
        default:
            switch (self, other) {
            case (.int(let a), .int(let b)): return a == b
            case (.int, _), (.double, _), (.bool, _):
                switch other {
                case .int, .double, .bool: return doubleValue == other.doubleValue
                default: return false
                }
            default: return false
            }
        }
    }

    /// Python ordering (`<`): -1, 0, 1, or nil when the types cannot be ordered.
    func pythonOrder(_ other: JinjaValue) -> Int? {
        switch (self, other) {
        case (.string(let a), .string(let b)):
            let x = Array(a.unicodeScalars), y = Array(b.unicodeScalars)
            for (p, q) in zip(x, y) where p != q { return p.value < q.value ? -1 : 1 }
            return x.count == y.count ? 0 : (x.count < y.count ? -1 : 1)
        case (.list(let a), .list(let b)):
            for (p, q) in zip(a, b) where !p.pythonEquals(q) { return p.pythonOrder(q) }
            return a.count == b.count ? 0 : (a.count < b.count ? -1 : 1)
        case (.int(let a), .int(let b)):
            return a == b ? 0 : (a < b ? -1 : 1)
        default:
            switch (self, other) {
            case (.int, .int), (.int, .double), (.int, .bool), (.double, .int), (.double, .double), (.double, .bool),
                (.bool, .int), (.bool, .double), (.bool, .bool):
                let a = doubleValue, b = other.doubleValue
                return a == b ? 0 : (a < b ? -1 : 1)
            default:
                return nil
            }
        }
    }
}
