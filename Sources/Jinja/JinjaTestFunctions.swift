/// The `is test` functions.
extension JinjaEvaluator {
    func applyTest(_ name: String, _ value: JinjaValue, _ args: [JinjaValue], at e: Expr) throws -> Bool {
        func argument() throws -> JinjaValue {
            guard let first = args.first else { throw fail("test '\(name)' needs an argument", e) }
            return first
        }
        switch name {
        case "defined": return !value.isUndefined
        case "undefined": return value.isUndefined
        case "none": if case .none = value { return true } else { return false }
        case "boolean": if case .bool = value { return true } else { return false }
        case "true": if case .bool(true) = value { return true } else { return false }
        case "false": if case .bool(false) = value { return true } else { return false }
        case "string": if case .string = value { return true } else { return false }
        case "number":
            switch value { case .int, .double, .bool: return true; default: return false }
        case "integer": if case .int = value { return true } else { return false }
        case "float": if case .double = value { return true } else { return false }
        case "mapping": if case .dict = value { return true } else { return false }
        case "iterable", "sequence":
            switch value { case .string, .list, .dict: return true; default: return false }
        case "callable": if case .callable = value { return true } else { return false }
        case "odd", "even":
            guard case .int(let i) = value else {
                if case .bool(let b) = value { return (b ? 1 : 0) % 2 == (name == "odd" ? 1 : 0) }
                throw fail("test '\(name)' expects an integer, got \(value.typeName)", e)
            }
            return abs(i % 2) == (name == "odd" ? 1 : 0)
        case "divisibleby":
            guard case .int(let i) = value, case .int(let d) = try argument() else {
                throw fail("test 'divisibleby' expects integers", e)
            }
            guard d != 0 else { throw fail("integer division or modulo by zero", e) }
            return i % d == 0
        case "lower": if case .string(let s) = value { return s == s.lowercased() } else { return false }
        case "upper": if case .string(let s) = value { return s == s.uppercased() } else { return false }
        case "equalto", "eq", "==": return value.pythonEquals(try argument())
        case "ne", "!=": return !value.pythonEquals(try argument())
        case "sameas":
            let other = try argument()
            switch (value, other) {
            case (.none, .none), (.undefined, .undefined): return true
            case (.bool(let a), .bool(let b)): return a == b
            default: return value.pythonEquals(other)
            }
        case "lt", "<": return try compare("<", value, try argument(), at: e)
        case "le", "<=": return try compare("<=", value, try argument(), at: e)
        case "gt", ">", "greaterthan": return try compare(">", value, try argument(), at: e)
        case "ge", ">=": return try compare(">=", value, try argument(), at: e)
        case "lessthan": return try compare("<", value, try argument(), at: e)
        case "in": return try compare("in", value, try argument(), at: e)
        default: throw fail("no test named '\(name)'", e)
        }
    }
}
