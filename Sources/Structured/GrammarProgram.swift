/// A ``Grammar`` lowered for matching: every rule a list of alternatives, every alternative a
/// run of instructions in one flat array, each instruction consuming one byte from a set,
/// calling a rule, or returning.
///
/// Choices inside a sequence and repetitions become rules of their own (shared when the same
/// expression appears twice). A repetition is right-recursive (`R ::= body R | ε`), and a call
/// in tail position does not push a return frame when matched, so matching a long string keeps
/// a stack of constant depth.
struct GrammarProgram: Sendable {
    /// An instruction: `>= 0` consumes one byte of `sets[op]`; `ret` returns; `<= call(0)` calls rule `call(0) - op`.
    var code: [Int32] = []
    var sets: [ByteSet] = []
    /// Per rule: the position of each alternative's first instruction.
    var alternatives: [[Int32]] = []
    /// Per rule: its name (a grammar rule) or a description (a part lowered into a rule).
    var names: [String] = []
    var root: Int32 = 0

    static let ret: Int32 = -1
    @inline(__always) static func call(_ rule: Int32) -> Int32 { -2 - rule }
    @inline(__always) static func calledRule(_ op: Int32) -> Int32 { -2 - op }

    /// The most instructions a grammar may lower to (a guard against repeat counts that explode).
    static let maxInstructions = 4_000_000

    init(_ grammar: Grammar) throws {
        // A rule that can call itself before consuming a byte would make matching never end.
        try GrammarChecks.checkLeftRecursion(grammar)
        var lowerer = Lowerer(grammar: grammar)
        root = try lowerer.rule(named: grammar.root)
        try lowerer.finish()
        var program = lowerer.program
        program.root = root
        self = program
    }

    fileprivate init() {}
}

/// Lowers expressions to instructions, one rule at a time.
private struct Lowerer {
    let grammar: Grammar
    var program = GrammarProgram()
    var ruleIds: [String: Int32] = [:]
    /// Parts lowered into rules of their own, by expression (so a repeated part is lowered once).
    var partRules: [GrammarExpression: Int32] = [:]
    var setIds: [ByteSet: Int32] = [:]
    /// Rules whose alternatives are known but not yet laid out in `code`.
    var bodies: [[[Int32]]] = []
    var pending: [(Int32, GrammarExpression)] = []
    var instructions = 0

    init(grammar: Grammar) { self.grammar = grammar }

    mutating func rule(named name: String) throws -> Int32 {
        if let id = ruleIds[name] { return id }
        guard let body = grammar.rules[name] else { throw GrammarError("the grammar refers to an undefined rule '\(name)'") }
        let id = newRule(name)
        ruleIds[name] = id
        pending.append((id, body))
        return id
    }

    private mutating func newRule(_ name: String) -> Int32 {
        let id = Int32(bodies.count)
        bodies.append([])
        program.names.append(name)
        return id
    }

    /// Lowers every rule reached, then lays the alternatives out.
    mutating func finish() throws {
        while let (id, body) = pending.popLast() {
            bodies[Int(id)] = try alternatives(of: body)
        }
        program.alternatives = []
        program.code.reserveCapacity(instructions + bodies.reduce(0) { $0 + $1.count })
        for alts in bodies {
            var starts: [Int32] = []
            for alt in alts {
                starts.append(Int32(program.code.count))
                program.code += alt
                program.code.append(GrammarProgram.ret)
            }
            program.alternatives.append(starts)
        }
        guard program.code.count <= GrammarProgram.maxInstructions else {
            throw GrammarError("the grammar is too large (\(program.code.count) instructions after expanding repeats; the limit is \(GrammarProgram.maxInstructions))")
        }
    }

    private mutating func alternatives(of e: GrammarExpression) throws -> [[Int32]] {
        if case .choice(let options) = e, let merged = Self.byteUnion(options) { return [[setId(merged)]] }
        if case .choice(let options) = e {
            var out: [[Int32]] = []
            for o in options { out += try alternatives(of: o) }
            return out
        }
        return [try sequence(of: e)]
    }

    private mutating func sequence(of e: GrammarExpression) throws -> [Int32] {
        switch e {
        case .bytes(let set):
            return [setId(set)]
        case .literal(let bytes):
            try count(bytes.count)
            return bytes.map { setId(ByteSet([$0])) }
        case .rule(let name):
            return [GrammarProgram.call(try rule(named: name))]
        case .sequence(let parts):
            var out: [Int32] = []
            for p in parts { out += try sequence(of: p) }
            return out
        case .choice(let options):
            if options.count == 1 { return try sequence(of: options[0]) }
            if let merged = Self.byteUnion(options) { return [setId(merged)] }
            return [GrammarProgram.call(try partRule(e, name: "choice"))]
        case .repeat(let body, let lo, let hi):
            guard lo >= 0, hi.map({ $0 >= lo }) ?? true else {
                throw GrammarError("a repeat needs 0 <= min <= max (got min \(lo), max \(hi.map(String.init) ?? "none"))")
            }
            var out: [Int32] = []
            if lo > 0 {
                let once = try sequence(of: body)
                try count(once.count * lo)
                for _ in 0..<lo { out += once }
            }
            if let hi {
                if hi > lo { out.append(GrammarProgram.call(try optionalChain(body, hi - lo))) }
            } else {
                out.append(GrammarProgram.call(try partRule(.repeat(body, min: 0, max: nil), name: "repeat")))
            }
            return out
        }
    }

    /// The rule of a part: a choice (its options as alternatives) or `body*` (`R ::= body R | ε`).
    private mutating func partRule(_ e: GrammarExpression, name: String) throws -> Int32 {
        if let id = partRules[e] { return id }
        let id = newRule("<\(name)>")
        partRules[e] = id
        switch e {
        case .repeat(let body, 0, nil):
            bodies[Int(id)] = [try sequence(of: body) + [GrammarProgram.call(id)], []]
        default:
            bodies[Int(id)] = try alternatives(of: e)
        }
        return id
    }

    /// Up to `n` more copies of `body`: `O_n ::= body O_(n-1) | ε`, `O_1 ::= body | ε`.
    private mutating func optionalChain(_ body: GrammarExpression, _ n: Int) throws -> Int32 {
        let key = GrammarExpression.repeat(body, min: 0, max: n)
        if let id = partRules[key] { return id }
        let once = try sequence(of: body)
        try count(once.count * n)
        var previous: Int32?
        var first: Int32 = 0
        for k in 1...n {
            let chainKey = GrammarExpression.repeat(body, min: 0, max: k)
            if let id = partRules[chainKey] {
                previous = id
                first = id
                continue
            }
            let id = newRule("<up to \(k)>")
            partRules[chainKey] = id
            bodies[Int(id)] = [once + (previous.map { [GrammarProgram.call($0)] } ?? []), []]
            previous = id
            first = id
        }
        return first
    }

    private mutating func count(_ n: Int) throws {
        instructions += n
        guard instructions <= GrammarProgram.maxInstructions else {
            throw GrammarError("the grammar is too large (over \(GrammarProgram.maxInstructions) instructions after expanding repeats)")
        }
    }

    private mutating func setId(_ set: ByteSet) -> Int32 {
        if let id = setIds[set] { return id }
        let id = Int32(program.sets.count)
        program.sets.append(set)
        setIds[set] = id
        return id
    }

    /// The union when every option is one byte (a set or a one-byte literal); else nil.
    private static func byteUnion(_ options: [GrammarExpression]) -> ByteSet? {
        guard options.count > 1 else { return nil }
        var set = ByteSet()
        for o in options {
            switch o {
            case .bytes(let s): set.formUnion(s)
            case .literal(let b) where b.count == 1: set.insert(b[0])
            default: return nil
            }
        }
        return set
    }
}
