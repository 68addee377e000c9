/// Turns tokens into the statement tree, with jinja2's operator precedence.
struct JinjaParser {
    private let tokens: [Token]
    private var i = 0
    private var loopDepth = 0
    private var nesting = 0
    private static let maxNesting = 256

    init(tokens: [Token]) { self.tokens = tokens }

    private var current: Token { tokens[min(i, tokens.count - 1)] }
    private var peekKind: TokenKind { i + 1 < tokens.count ? tokens[i + 1].kind : .eof }

    private func fail(_ message: String, _ t: Token? = nil) -> JinjaError {
        let t = t ?? current
        return JinjaError(.syntax, message, line: t.line, column: t.column)
    }

    private func describe(_ k: TokenKind) -> String {
        switch k {
        case .text: "text"
        case .variableBegin: "'{{'"
        case .variableEnd: "'}}'"
        case .blockBegin: "'{%'"
        case .blockEnd: "'%}'"
        case .name(let n): "'\(n)'"
        case .string: "string literal"
        case .integer(let n): "'\(n)'"
        case .float(let d): "'\(d)'"
        case .op(let o): "'\(o)'"
        case .eof: "end of template"
        }
    }

    private mutating func advance() { if i < tokens.count - 1 { i += 1 } }

    private func isOp(_ o: String) -> Bool { current.kind == .op(o) }
    private func isName(_ n: String) -> Bool { current.kind == .name(n) }

    private mutating func skipOp(_ o: String) -> Bool {
        if isOp(o) { advance(); return true }
        return false
    }

    private mutating func skipName(_ n: String) -> Bool {
        if isName(n) { advance(); return true }
        return false
    }

    private mutating func expectOp(_ o: String) throws {
        guard skipOp(o) else { throw fail("expected '\(o)', found \(describe(current.kind))") }
    }

    private mutating func expectName() throws -> String {
        guard case .name(let n) = current.kind else { throw fail("expected a name, found \(describe(current.kind))") }
        advance()
        return n
    }

    private mutating func expectBlockEnd() throws {
        guard current.kind == .blockEnd else { throw fail("expected end of statement '%}', found \(describe(current.kind))") }
        advance()
    }

    // MARK: Statements

    mutating func parseTemplate() throws -> [Node] {
        let (body, end) = try parseBody(until: [])
        if let end { throw fail("unexpected '\(end)' tag") }
        return body
    }

    /// Parses nodes until a block tag named in `until` (returned, with the parser just after its
    /// name) or the end of the template (nil).
    private mutating func parseBody(until: Set<String>) throws -> ([Node], String?) {
        var nodes: [Node] = []
        while true {
            let t = current
            switch t.kind {
            case .eof:
                return (nodes, nil)
            case .text(let s):
                nodes.append(.text(s))
                advance()
            case .variableBegin:
                advance()
                let e = try parseTuple()
                guard current.kind == .variableEnd else { throw fail("expected '}}', found \(describe(current.kind))") }
                advance()
                nodes.append(.output(e))
            case .blockBegin:
                advance()
                guard case .name(let keyword) = current.kind else { throw fail("expected a statement name, found \(describe(current.kind))") }
                if until.contains(keyword) {
                    advance()
                    return (nodes, keyword)
                }
                advance()
                nodes.append(try parseStatement(keyword, at: t))
            default:
                throw fail("unexpected \(describe(t.kind))")
            }
        }
    }

    private mutating func parseBlockBody(until: Set<String>, opener: String, at t: Token) throws -> ([Node], String) {
        nesting += 1
        defer { nesting -= 1 }
        guard nesting < Self.maxNesting else { throw fail("blocks nested too deeply", t) }
        let (body, end) = try parseBody(until: until)
        guard let end else {
            let expected = until.sorted().map { "'\($0)'" }.joined(separator: " or ")
            throw fail("unexpected end of template: the '\(opener)' block opened at line \(t.line), column \(t.column) needs \(expected)")
        }
        return (body, end)
    }

    private mutating func parseStatement(_ keyword: String, at t: Token) throws -> Node {
        switch keyword {
        case "if":
            var branches: [(Expr, [Node])] = []
            var condition = try parseExpression()
            try expectBlockEnd()
            while true {
                let (body, end) = try parseBlockBody(until: ["elif", "else", "endif"], opener: "if", at: t)
                branches.append((condition, body))
                switch end {
                case "elif":
                    condition = try parseExpression()
                    try expectBlockEnd()
                case "else":
                    try expectBlockEnd()
                    let (elseBody, _) = try parseBlockBody(until: ["endif"], opener: "if", at: t)
                    try expectBlockEnd()
                    return .ifChain(branches, elseBody: elseBody)
                default:
                    try expectBlockEnd()
                    return .ifChain(branches, elseBody: [])
                }
            }
        case "for":
            let target = try parseAssignTarget(allowAttribute: false)
            guard skipName("in") else { throw fail("expected 'in' in for loop, found \(describe(current.kind))") }
            let iterable = try parseTuple(withConditional: false)
            var condition: Expr?
            if skipName("if") { condition = try parseExpression() }
            if skipName("recursive") { throw fail("recursive for loops are not supported") }
            try expectBlockEnd()
            loopDepth += 1
            let (body, end) = try parseBlockBody(until: ["else", "endfor"], opener: "for", at: t)
            loopDepth -= 1
            var elseBody: [Node] = []
            try expectBlockEnd()
            if end == "else" {
                (elseBody, _) = try parseBlockBody(until: ["endfor"], opener: "for", at: t)
                try expectBlockEnd()
            }
            return .forLoop(target: target, iterable: iterable, condition: condition, body: body, elseBody: elseBody)
        case "set":
            let target = try parseAssignTarget(allowAttribute: true)
            if skipOp("=") {
                let value = try parseTuple()
                try expectBlockEnd()
                return .set(target, value)
            }
            let filter = try parseFilterChain(on: Expr(kind: .name(blockBodyName), line: t.line, column: t.column), optional: true)
            try expectBlockEnd()
            let (body, _) = try parseBlockBody(until: ["endset"], opener: "set", at: t)
            try expectBlockEnd()
            return .setBlock(target, body: body, filter: filter)
        case "macro":
            let name = try expectName()
            let parameters = try parseParameters()
            try expectBlockEnd()
            let savedLoop = loopDepth
            loopDepth = 0
            let (body, _) = try parseBlockBody(until: ["endmacro"], opener: "macro", at: t)
            loopDepth = savedLoop
            if case .name(let n) = current.kind, n == name { advance() }
            try expectBlockEnd()
            return .macro(MacroDefinition(name: name, parameters: parameters, body: body))
        case "call":
            let parameters = isOp("(") ? try parseParameters() : []
            let call = try parseExpression()
            guard case .call = call.kind else { throw fail("expected a call after 'call'", t) }
            try expectBlockEnd()
            let savedLoop = loopDepth
            loopDepth = 0
            let (body, _) = try parseBlockBody(until: ["endcall"], opener: "call", at: t)
            loopDepth = savedLoop
            try expectBlockEnd()
            return .callBlock(call: call, parameters: parameters, body: body)
        case "filter":
            guard let filter = try parseFilterChain(on: Expr(kind: .name(blockBodyName), line: t.line, column: t.column), optional: false) else {
                throw fail("expected a filter name")
            }
            try expectBlockEnd()
            let (body, _) = try parseBlockBody(until: ["endfilter"], opener: "filter", at: t)
            try expectBlockEnd()
            return .filterBlock(filter: filter, body: body)
        case "break", "continue":
            guard loopDepth > 0 else { throw fail("'\(keyword)' outside of a for loop", t) }
            try expectBlockEnd()
            return keyword == "break" ? .breakLoop : .continueLoop
        case "generation":
            // transformers' AssistantTracker block: renders its body unchanged.
            try expectBlockEnd()
            let (body, _) = try parseBlockBody(until: ["endgeneration"], opener: "generation", at: t)
            try expectBlockEnd()
            return .ifChain([(Expr(kind: .literal(.bool(true)), line: t.line, column: t.column), body)], elseBody: [])
        default:
            if keyword.hasPrefix("end") || keyword == "elif" || keyword == "else" {
                throw fail("unexpected '\(keyword)' tag", t)
            }
            throw fail("unknown statement '\(keyword)'", t)
        }
    }

    private mutating func parseAssignTarget(allowAttribute: Bool) throws -> AssignTarget {
        let paren = skipOp("(")
        let first = try expectName()
        if allowAttribute, !paren, skipOp(".") {
            return .attribute(first, try expectName())
        }
        var names = [first]
        while skipOp(",") {
            if case .name = current.kind { names.append(try expectName()) } else { break }
        }
        if paren { try expectOp(")") }
        return names.count == 1 && !paren ? .name(first) : .tuple(names)
    }

    /// `(a, b=1, ...)` for macros and call blocks.
    private mutating func parseParameters() throws -> [(String, Expr?)] {
        try expectOp("(")
        var out: [(String, Expr?)] = []
        while !isOp(")") {
            let name = try expectName()
            let value: Expr? = skipOp("=") ? try parseExpression() : nil
            out.append((name, value))
            if !skipOp(",") { break }
        }
        try expectOp(")")
        return out
    }

    private mutating func parseFilterChain(on subject: Expr, optional: Bool) throws -> Expr? {
        var e = subject
        var any = false
        if !optional, case .name = current.kind {
            e = try parseFilter(e)
            any = true
        }
        while isOp("|") {
            advance()
            e = try parseFilter(e)
            any = true
        }
        return any ? e : nil
    }

    // MARK: Expressions

    private func node(_ kind: Expr.Kind, _ t: Token) -> Expr { Expr(kind: kind, line: t.line, column: t.column) }

    /// An expression, or several separated by commas (a tuple).
    private mutating func parseTuple(withConditional: Bool = true) throws -> Expr {
        let t = current
        var items: [Expr] = []
        var sawComma = false
        while true {
            if !items.isEmpty {
                guard skipOp(",") else { break }
                sawComma = true
                if [.variableEnd, .blockEnd].contains(current.kind) || isOp(")") || isName("if") && !withConditional { break }
            }
            items.append(withConditional ? try parseExpression() : try parseOr())
        }
        return sawComma ? node(.tuple(items), t) : items[0]
    }

    mutating func parseExpression() throws -> Expr {
        nesting += 1
        defer { nesting -= 1 }
        guard nesting < Self.maxNesting else { throw fail("expression nested too deeply") }
        let t = current
        let value = try parseOr()
        if skipName("if") {
            let condition = try parseOr()
            let otherwise: Expr? = skipName("else") ? try parseExpression() : nil
            return node(.conditional(condition, value, otherwise), t)
        }
        return value
    }

    private mutating func parseOr() throws -> Expr {
        var left = try parseAnd()
        while isName("or") {
            let t = current
            advance()
            left = node(.or(left, try parseAnd()), t)
        }
        return left
    }

    private mutating func parseAnd() throws -> Expr {
        var left = try parseNot()
        while isName("and") {
            let t = current
            advance()
            left = node(.and(left, try parseNot()), t)
        }
        return left
    }

    private mutating func parseNot() throws -> Expr {
        if isName("not") {
            let t = current
            advance()
            return node(.not(try parseNot()), t)
        }
        return try parseCompare()
    }

    private mutating func parseCompare() throws -> Expr {
        let t = current
        let left = try parseAdditive()
        var ops: [(String, Expr)] = []
        while true {
            if case .op(let o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                advance()
                ops.append((o, try parseAdditive()))
            } else if isName("in") {
                advance()
                ops.append(("in", try parseAdditive()))
            } else if isName("not"), peekKind == .name("in") {
                advance(); advance()
                ops.append(("not in", try parseAdditive()))
            } else {
                break
            }
        }
        return ops.isEmpty ? left : node(.compare(left, ops), t)
    }

    private mutating func parseConcat() throws -> Expr {
        var left = try parseMultiplicative()
        while isOp("~") {
            let t = current
            advance()
            left = node(.binary("~", left, try parseMultiplicative()), t)
        }
        return left
    }

    private mutating func parseAdditive() throws -> Expr {
        var left = try parseConcat()
        while case .op(let o) = current.kind, o == "+" || o == "-" {
            let t = current
            advance()
            left = node(.binary(o, left, try parseConcat()), t)
        }
        return left
    }

    private mutating func parseMultiplicative() throws -> Expr {
        var left = try parsePower()
        while case .op(let o) = current.kind, ["*", "/", "//", "%"].contains(o) {
            let t = current
            advance()
            left = node(.binary(o, left, try parsePower()), t)
        }
        return left
    }

    private mutating func parsePower() throws -> Expr {
        var left = try parseUnary(withFilter: true)
        while isOp("**") {
            let t = current
            advance()
            left = node(.binary("**", left, try parseUnary(withFilter: true)), t)
        }
        return left
    }

    private mutating func parseUnary(withFilter: Bool) throws -> Expr {
        let t = current
        var e: Expr
        if isOp("-") || isOp("+") {
            let o = isOp("-") ? "-" : "+"
            advance()
            nesting += 1
            defer { nesting -= 1 }
            guard nesting < Self.maxNesting else { throw fail("expression nested too deeply") }
            e = node(.unary(o, try parseUnary(withFilter: false)), t)
        } else {
            e = try parsePostfix(try parsePrimary())
        }
        if withFilter { e = try parseFilterAndTests(e) }
        return e
    }

    private mutating func parsePrimary() throws -> Expr {
        let t = current
        switch t.kind {
        case .name(let n):
            advance()
            switch n {
            case "true", "True": return node(.literal(.bool(true)), t)
            case "false", "False": return node(.literal(.bool(false)), t)
            case "none", "None": return node(.literal(.none), t)
            default: return node(.name(n), t)
            }
        case .string(var s):
            advance()
            while case .string(let more) = current.kind {
                s += more
                advance()
            }
            return node(.literal(.string(s)), t)
        case .integer(let n):
            advance()
            return node(.literal(.int(n)), t)
        case .float(let d):
            advance()
            return node(.literal(.double(d)), t)
        case .op("("):
            advance()
            if skipOp(")") { return node(.tuple([]), t) }
            let e = try parseTuple()
            try expectOp(")")
            return e
        case .op("["):
            advance()
            var items: [Expr] = []
            while !isOp("]") {
                items.append(try parseExpression())
                if !skipOp(",") { break }
            }
            try expectOp("]")
            return node(.list(items), t)
        case .op("{"):
            advance()
            var pairs: [(Expr, Expr)] = []
            while !isOp("}") {
                let k = try parseExpression()
                try expectOp(":")
                pairs.append((k, try parseExpression()))
                if !skipOp(",") { break }
            }
            try expectOp("}")
            return node(.dict(pairs), t)
        default:
            throw fail("unexpected \(describe(t.kind))")
        }
    }

    private mutating func parsePostfix(_ start: Expr) throws -> Expr {
        var e = start
        while true {
            let t = current
            if isOp(".") {
                advance()
                switch current.kind {
                case .name(let n):
                    advance()
                    e = node(.attribute(e, n), t)
                case .integer(let n):
                    advance()
                    e = node(.item(e, node(.literal(.int(n)), t)), t)
                default:
                    throw fail("expected an attribute name after '.', found \(describe(current.kind))")
                }
            } else if isOp("[") {
                advance()
                e = try parseSubscript(e, t)
            } else if isOp("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    private mutating func parseSubscript(_ target: Expr, _ t: Token) throws -> Expr {
        var parts: [Expr?] = []
        var isSlice = false
        var currentPart: Expr?
        while !isOp("]") {
            if skipOp(":") {
                isSlice = true
                parts.append(currentPart)
                currentPart = nil
                continue
            }
            if currentPart != nil { throw fail("expected ']' or ':', found \(describe(current.kind))") }
            currentPart = try parseExpression()
        }
        try expectOp("]")
        if !isSlice {
            guard let index = currentPart else { throw fail("expected an index inside '[]'", t) }
            return node(.item(target, index), t)
        }
        parts.append(currentPart)
        guard parts.count <= 3 else { throw fail("a slice takes at most three parts", t) }
        while parts.count < 3 { parts.append(nil) }
        return node(.slice(target, parts[0], parts[1], parts[2]), t)
    }

    private mutating func parseArguments() throws -> ([Expr], [(String, Expr)]) {
        try expectOp("(")
        var args: [Expr] = []
        var kwargs: [(String, Expr)] = []
        while !isOp(")") {
            if case .name(let n) = current.kind, peekKind == .op("=") {
                advance(); advance()
                kwargs.append((n, try parseExpression()))
            } else {
                if !kwargs.isEmpty { throw fail("positional argument after keyword argument") }
                args.append(try parseExpression())
            }
            if !skipOp(",") { break }
        }
        try expectOp(")")
        return (args, kwargs)
    }

    private mutating func parseCall(_ callee: Expr) throws -> Expr {
        let t = current
        let (args, kwargs) = try parseArguments()
        return node(.call(callee, args, kwargs), t)
    }

    private mutating func parseDottedName() throws -> String {
        var name = try expectName()
        while isOp("."), case .name(let n) = peekKind {
            advance(); advance()
            name += "." + n
        }
        return name
    }

    private mutating func parseFilter(_ subject: Expr) throws -> Expr {
        let t = current
        let name = try parseDottedName()
        var args: [Expr] = [], kwargs: [(String, Expr)] = []
        if isOp("(") { (args, kwargs) = try parseArguments() }
        return node(.filter(subject, name, args, kwargs), t)
    }

    private mutating func parseFilterAndTests(_ start: Expr) throws -> Expr {
        var e = start
        while true {
            let t = current
            if isOp("|") {
                advance()
                e = try parseFilter(e)
            } else if isName("is") {
                advance()
                let negated = skipName("not")
                let name: String
                if case .op(let o) = current.kind, ["==", "!=", "<", ">", "<=", ">="].contains(o) {
                    advance()
                    name = o
                } else {
                    name = try parseDottedName()
                }
                var args: [Expr] = [], kwargs: [(String, Expr)] = []
                if isOp("(") {
                    (args, kwargs) = try parseArguments()
                } else if startsArgument() {
                    args = [try parsePostfix(try parsePrimary())]
                }
                _ = kwargs
                e = node(.test(e, name, args, negated: negated), t)
            } else if isOp("(") {
                e = try parseCall(e)
            } else {
                return e
            }
        }
    }

    private func startsArgument() -> Bool {
        switch current.kind {
        case .name(let n): return !["else", "or", "and", "is", "if", "in", "not"].contains(n)
        case .string, .integer, .float: return true
        case .op(let o): return o == "[" || o == "{" || o == "("
        default: return false
        }
    }
}
