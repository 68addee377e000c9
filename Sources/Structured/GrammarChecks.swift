/// Checks and rewrites over a ``Grammar`` that every front end (GBNF, regular expressions, JSON
/// schemas, hand-built grammars) can use before compiling one.
public enum GrammarChecks {
    /// Runs every check: undefined rules (the root included), left recursion, nullable repeats.
    public static func check(_ g: Grammar) throws {
        try checkUndefinedRules(g)
        try checkLeftRecursion(g)
        try checkNullableRepeats(g)
    }

    /// Refuses a grammar whose root, or any rule's body, names a rule that is not defined.
    public static func checkUndefinedRules(_ g: Grammar) throws {
        if g.rules[g.root] == nil { throw GrammarError("the grammar has no root rule '\(g.root)'") }
        for name in g.order {
            var missing: String?
            visit(g.rules[name]!) { e in
                if case .rule(let r) = e, g.rules[r] == nil, missing == nil { missing = r }
            }
            if let missing { throw GrammarError("rule '\(name)' refers to an undefined rule '\(missing)'") }
        }
    }

    /// Refuses a grammar in which a rule can reach itself without consuming a byte: through
    /// references at the start of its body, or after parts that can match the empty string.
    /// Every defined rule is checked, used or not. The message names the rule and the cycle.
    public static func checkLeftRecursion(_ g: Grammar) throws {
        let analysis = Nullability(g)
        var edges: [String: [String]] = [:]
        for name in g.order {
            var out: [String] = []
            analysis.leftReferences(g.rules[name]!, into: &out)
            edges[name] = out.filter { g.rules[$0] != nil }
        }
        // Depth-first search with colors; a back edge closes a cycle.
        var color: [String: UInt8] = [:]
        for start in g.order where color[start] == nil {
            var stack: [(String, Int)] = [(start, 0)]
            color[start] = 1
            while let (rule, i) = stack.last {
                let next = edges[rule]!
                if i < next.count {
                    stack[stack.count - 1].1 += 1
                    let callee = next[i]
                    switch color[callee] {
                    case 1:
                        let path = stack.map(\.0)
                        let cycle = path[path.lastIndex(of: callee)!...] + [callee]
                        throw GrammarError("the grammar is left-recursive: rule '\(callee)' can reach itself without consuming any text (\(cycle.joined(separator: " -> ")))")
                    case nil:
                        color[callee] = 1
                        stack.append((callee, 0))
                    default:
                        break
                    }
                } else {
                    color[rule] = 2
                    stack.removeLast()
                }
            }
        }
    }

    /// Refuses a repeat (`*`, `+`, `?`, counted) whose body can match the empty string, naming
    /// the rule it is in. ``removingNullableRepeats(_:)`` rewrites such a grammar into one
    /// without them.
    public static func checkNullableRepeats(_ g: Grammar) throws {
        let analysis = Nullability(g)
        for name in g.order {
            var bad = false
            visit(g.rules[name]!) { e in
                if case .repeat(let body, _, let max) = e, max != 0, analysis.matchesEmpty(body) { bad = true }
            }
            if bad { throw GrammarError("rule '\(name)' repeats an expression that can match the empty string") }
        }
    }

    /// The rules that can match the empty string.
    public static func nullableRules(_ g: Grammar) -> Set<String> {
        let analysis = Nullability(g)
        return Set(g.order.filter { analysis.ruleInfo[$0]!.empty })
    }

    /// The same language, with every repeat whose body can match the empty string rewritten
    /// so that it cannot: `x{m,n}` with `x` nullable is `x'{0,n}`, `x'` being `x` without the
    /// empty string. A rule needed without its empty string gets a companion rule
    /// (`name_nonempty`).
    public static func removingNullableRepeats(_ g: Grammar) -> Grammar {
        var rewriter = NonEmptyRewriter(g)
        return rewriter.run()
    }

    /// `e` (which must not refer to rules) with every nullable repeat rewritten as in
    /// ``removingNullableRepeats(_:)``.
    public static func removingNullableRepeats(_ e: GrammarExpression) -> GrammarExpression {
        var rewriter = NonEmptyRewriter(Grammar())
        return rewriter.rewrite(e)
    }

    /// `e` (which must not refer to rules) without the empty string; nil when nothing is left.
    public static func nonEmpty(_ e: GrammarExpression) -> GrammarExpression? {
        var rewriter = NonEmptyRewriter(Grammar())
        return rewriter.nonEmpty(rewriter.rewrite(e))
    }

    /// Calls `f` on `e` and every expression inside it.
    static func visit(_ e: GrammarExpression, _ f: (GrammarExpression) -> Void) {
        f(e)
        switch e {
        case .bytes, .literal, .rule: break
        case .sequence(let parts), .choice(let parts): for p in parts { visit(p, f) }
        case .repeat(let body, _, _): visit(body, f)
        }
    }
}

/// Whether expressions can match the empty string and whether they can match a non-empty
/// string, with rules resolved to a fixed point.
struct Nullability {
    struct Info: Equatable {
        var empty: Bool
        var nonEmpty: Bool
        var productive: Bool { empty || nonEmpty }
    }

    var ruleInfo: [String: Info] = [:]

    init(_ g: Grammar) {
        for name in g.order { ruleInfo[name] = Info(empty: false, nonEmpty: false) }
        var changed = true
        while changed {
            changed = false
            for name in g.order {
                let now = info(g.rules[name]!)
                if now != ruleInfo[name]! {
                    ruleInfo[name] = now
                    changed = true
                }
            }
        }
    }

    func matchesEmpty(_ e: GrammarExpression) -> Bool { info(e).empty }

    func info(_ e: GrammarExpression) -> Info {
        switch e {
        case .bytes(let set):
            return Info(empty: false, nonEmpty: !set.isEmpty)
        case .literal(let bytes):
            return Info(empty: bytes.isEmpty, nonEmpty: !bytes.isEmpty)
        case .rule(let name):
            return ruleInfo[name] ?? Info(empty: false, nonEmpty: false)
        case .sequence(let parts):
            var empty = true, productive = true, nonEmpty = false
            for p in parts {
                let i = info(p)
                empty = empty && i.empty
                productive = productive && i.productive
                nonEmpty = nonEmpty || i.nonEmpty
            }
            return Info(empty: empty, nonEmpty: productive && nonEmpty)
        case .choice(let options):
            var out = Info(empty: false, nonEmpty: false)
            for o in options {
                let i = info(o)
                out.empty = out.empty || i.empty
                out.nonEmpty = out.nonEmpty || i.nonEmpty
            }
            return out
        case .repeat(let body, let min, let max):
            if let max, max == 0 || max < min { return Info(empty: max == 0 && min == 0, nonEmpty: false) }
            let i = info(body)
            return Info(empty: min == 0 || i.empty, nonEmpty: i.nonEmpty)
        }
    }

    /// The rules `e` may reach before it has consumed a byte.
    func leftReferences(_ e: GrammarExpression, into out: inout [String]) {
        switch e {
        case .bytes, .literal:
            break
        case .rule(let name):
            if !out.contains(name) { out.append(name) }
        case .sequence(let parts):
            for p in parts {
                leftReferences(p, into: &out)
                if !info(p).empty { break }
            }
        case .choice(let options):
            for o in options { leftReferences(o, into: &out) }
        case .repeat(let body, _, let max):
            if max != 0 { leftReferences(body, into: &out) }
        }
    }
}

/// Rewrites nullable repeats (see ``GrammarChecks/removingNullableRepeats(_:)-(Grammar)``).
struct NonEmptyRewriter {
    var grammar: Grammar
    var analysis: Nullability
    /// Rule name -> the name of its companion without the empty string.
    var companions: [String: String] = [:]
    var pending: [String] = []

    init(_ g: Grammar) {
        grammar = g
        analysis = Nullability(g)
    }

    mutating func run() -> Grammar {
        for name in grammar.order {
            grammar.define(name, rewrite(grammar.rules[name]!))
        }
        while let name = pending.popLast() {
            let companion = companions[name]!
            // The body was rewritten above; the companion's body is it without the empty string.
            grammar.define(companion, nonEmpty(grammar.rules[name]!) ?? .choice([]))
        }
        return grammar
    }

    /// `e` with its nullable repeats rewritten (same language).
    mutating func rewrite(_ e: GrammarExpression) -> GrammarExpression {
        switch e {
        case .bytes, .literal, .rule:
            return e
        case .sequence(let parts):
            return .sequence(parts.map { rewrite($0) })
        case .choice(let options):
            return .choice(options.map { rewrite($0) })
        case .repeat(let body, let min, let max):
            if let max, max == 0 { return .empty }
            let body = rewrite(body)
            if analysis.matchesEmpty(body) {
                // Every repetition may be empty, so `min` no longer matters.
                guard let ne = nonEmpty(body) else { return .empty }
                return Self.makeRepeat(ne, min: 0, max: max)
            }
            return Self.makeRepeat(body, min: min, max: max)
        }
    }

    static func makeRepeat(_ body: GrammarExpression, min: Int, max: Int?) -> GrammarExpression {
        if max == 0 { return .empty }
        if min == 1 && max == 1 { return body }
        return .repeat(body, min: min, max: max)
    }

    /// `e` (already rewritten) without the empty string; nil when it matches no non-empty string.
    mutating func nonEmpty(_ e: GrammarExpression) -> GrammarExpression? {
        let info = analysis.info(e)
        if !info.nonEmpty { return nil }
        if !info.empty { return e }
        switch e {
        case .bytes, .literal:
            return e  // never both nullable and non-empty
        case .rule(let name):
            if let c = companions[name] { return .rule(c) }
            let c = grammar.freshName(name + "_nonempty")
            grammar.define(c, .choice([]))  // reserved; defined in run()
            companions[name] = c
            analysis.ruleInfo[c] = Nullability.Info(empty: false, nonEmpty: true)
            pending.append(name)
            return .rule(c)
        case .sequence(let parts):
            // Every part is nullable here. A non-empty match has a first part that matches
            // non-empty text; the parts before it matched the empty string.
            var alternatives: [GrammarExpression] = []
            for i in parts.indices {
                guard let first = nonEmpty(parts[i]) else { continue }
                let rest = Array(parts[(i + 1)...])
                alternatives.append(rest.isEmpty ? first : .sequence([first] + rest))
            }
            return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
        case .choice(let options):
            var alternatives: [GrammarExpression] = []
            for o in options { if let ne = nonEmpty(o) { alternatives.append(ne) } }
            return alternatives.count == 1 ? alternatives[0] : .choice(alternatives)
        case .repeat(let body, _, let max):
            // Nullable with a non-empty body: at least one repetition, each non-empty.
            let ne = analysis.matchesEmpty(body) ? nonEmpty(body)! : body
            return Self.makeRepeat(ne, min: 1, max: max)
        }
    }
}
