import Testing
@testable import Structured

/// The compiled matcher against the reference matcher, and masks against matching each token alone.
@Suite struct CompiledGrammarTests {
    static func bytes(_ s: String) -> [UInt8] { Array(s.utf8) }

    /// A small vocabulary: every single byte of `alphabet`, plus some multi-byte tokens.
    static func vocabulary(_ extra: [String], alphabet: String = "") -> TokenVocabulary {
        var tokens = Set(alphabet.utf8.map { [$0] })
        for e in extra { tokens.insert(Array(e.utf8)) }
        return TokenVocabulary(tokens: tokens.sorted { $0.lexicographicallyPrecedes($1) })
    }

    static func compile(_ g: Grammar, _ v: TokenVocabulary) throws -> CompiledGrammar { try CompiledGrammar(g, vocabulary: v) }

    /// A grammar with nesting, choices, bounded and unbounded repeats and a nullable repeat body.
    static var sample: Grammar {
        var g = Grammar()
        g.define("root", .sequence([.rule("value"), .repeat(.bytes(ByteSet(" ".utf8)), min: 0, max: 2)]))
        g.define("value", .choice([.rule("list"), .rule("word"), .rule("num")]))
        g.define("list", .sequence([.text("["), .optional(.sequence([.rule("value"), .star(.sequence([.text(","), .rule("value")]))])), .text("]")]))
        g.define("word", .sequence([.text("\""), .star(.scalars([0x22...0x22, 0x5C...0x5C], negated: true)), .text("\"")]))
        g.define("num", .sequence([.optional(.text("-")), .repeat(.bytes(ByteSet(UInt8(ascii: "0")...UInt8(ascii: "9"))), min: 1, max: 3),
                                   .star(.optional(.text("_")))]))
        return g
    }

    @Test func agreesWithTheReferenceOnEveryPrefix() throws {
        let g = Self.sample
        let reference = GrammarReference(g)
        let compiled = try Self.compile(g, Self.vocabulary([]))
        let alphabet = Array("[]\",-0159_ aé".unicodeScalars.map(String.init))
        var rng = SystemRandomNumberGenerator()
        var checked = 0
        let fixed = ["[1,\"a\",[]]", "[", "-12_", "1234", "\"é\"  ", "\"é\"   ", "[[[-1],[]],\"x\"]", "", "[,]", "\"a\"b"]
        for text in fixed + (0..<400).map({ _ in (0..<Int.random(in: 0...10, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! }.joined() }) {
            let bytes = Self.bytes(text)
            var state: GrammarState? = compiled.initial
            for (i, b) in bytes.enumerated() {
                state = state.flatMap { compiled.advance($0, bytes: [b]) }
                let prefix = String(decoding: bytes[...i], as: UTF8.self)
                // Prefixes that end inside a UTF-8 character are not strings; compare only whole ones.
                if Array(prefix.utf8) == Array(bytes[...i]) {
                    #expect((state != nil) == reference.acceptsPrefix(prefix), "prefix \(prefix.debugDescription)")
                }
            }
            #expect((state.map { compiled.accepts($0) } ?? false) == reference.accepts(text), "\(text.debugDescription)")
            checked += 1
        }
        #expect(checked == fixed.count + 400)
    }

    @Test func masksEqualMatchingEachTokenAlone() throws {
        let tokens = ["[", "]", "[]", "[[", "\"", "\"a", "a\"", "\",", ",\"", "1", "12", "123", "1234", "-", "-1", "_", "__", "1_", " ",
                      "  ", "   ", ",", "é", "\u{e9}\"", "x", "],", "]]", "\"]"]
        let v = Self.vocabulary(tokens)
        let compiled = try Self.compile(Self.sample, v)
        var states: [GrammarState] = [compiled.initial]
        // Reach many states by random walks through allowed tokens.
        for _ in 0..<60 {
            var s = compiled.initial
            for _ in 0..<8 {
                let mask = compiled.mask(s)
                let expected = TokenMask(size: v.size, allowing: (0..<v.size).filter { compiled.advance(s, bytes: v.text(of: $0)!) != nil })
                #expect(mask == expected)
                guard let next = mask.ids.randomElement() else { break }
                s = compiled.advance(s, bytes: v.text(of: next)!)!
                states.append(s)
            }
        }
        // Cached masks come back equal.
        for s in states { #expect(compiled.mask(s) == compiled.mask(s)) }
        #expect(compiled.statistics.maskHits > 0)
    }

    @Test func longRepeatsKeepAConstantStack() throws {
        let compiled = try Self.compile(Self.sample, Self.vocabulary([]))
        var s = compiled.advance(compiled.initial, bytes: Self.bytes("\""))!
        let inside = s
        for _ in 0..<2000 { s = compiled.advance(s, bytes: Self.bytes("a"))! }
        #expect(s == inside, "a string's inside is one state however long the string")
        #expect(compiled.statistics.states < 20)
    }

    @Test func specialAndEmptyTokensAreNeverAllowed() throws {
        let v = TokenVocabulary(tokens: [Array("a".utf8), [], Array("a".utf8), Array("<s>".utf8)], special: [2, 3])
        let compiled = try Self.compile(Grammar(.star(.scalars([0...0x10FFFF]))), v)
        #expect(compiled.mask(compiled.initial).ids == [0])
        var m = GrammarMatcher(grammar: compiled)
        do { let ok = m.accept(2); #expect(!ok) }
        do { let ok = m.accept(0); #expect(ok) }
    }

    @Test func leadingSpacesTheDetokenizerDropsAreDroppedHere() throws {
        let v = TokenVocabulary(tokens: [Array(" {".utf8), Array("{".utf8), Array(" ".utf8), Array("}".utf8), Array(" }".utf8)], leadingSpacesStripped: 1)
        let compiled = try Self.compile(Grammar(.text("{}")), v)
        var m = GrammarMatcher(grammar: compiled)
        // First token: " {" counts as "{", and " " alone is allowed (it writes nothing).
        #expect(m.allowedTokens().ids == [0, 1, 2])
        do { let ok = m.accept(0); #expect(ok) }
        // Later, a space is text again.
        #expect(m.allowedTokens().ids == [3])
        do { let ok = m.accept(4); #expect(!ok) }
        do { let ok = m.accept(3); #expect(ok) }
        #expect(m.isComplete)
    }

    @Test func endAndContinuation() throws {
        let v = Self.vocabulary([], alphabet: "0123456789")
        let compiled = try Self.compile(Grammar(.repeat(.bytes(ByteSet(UInt8(ascii: "0")...UInt8(ascii: "9"))), min: 1, max: 3)), v)
        var m = GrammarMatcher(grammar: compiled)
        #expect(!m.canEnd)
        m.accept(v.sorted.map(Int.init).first { v.text(of: $0) == [UInt8(ascii: "1")] }!)
        #expect(m.canEnd && !m.isComplete)
        m.accept(v.sorted.map(Int.init).first { v.text(of: $0) == [UInt8(ascii: "2")] }!)
        m.accept(v.sorted.map(Int.init).first { v.text(of: $0) == [UInt8(ascii: "3")] }!)
        #expect(m.isComplete)
        #expect(m.allowedTokens().isEmpty)
    }

    @Test func refusesLeftRecursionAndUndefinedRules() {
        var left = Grammar()
        left.define("root", .sequence([.rule("root"), .text("a")]))
        #expect(throws: GrammarError.self) { try Self.compile(left, Self.vocabulary(["a"])) }
        var indirect = Grammar()
        indirect.define("root", .sequence([.optional(.text("x")), .rule("b"), .text("a")]))
        indirect.define("b", .sequence([.rule("root"), .text("b")]))
        do {
            _ = try Self.compile(indirect, Self.vocabulary(["a"]))
            Issue.record("left recursion through an optional prefix was accepted")
        } catch let e as GrammarError {
            #expect(e.message.contains("left-recursive"))
        } catch { Issue.record("\(error)") }
        let undefined = Grammar(.rule("nowhere"))
        #expect(throws: GrammarError("the grammar refers to an undefined rule 'nowhere'")) { try Self.compile(undefined, Self.vocabulary(["a"])) }
        // A repeat of something that may be empty is not left recursion: it ends.
        let nullable = Grammar(.sequence([.star(.optional(.text("a"))), .text("b")]))
        let compiled = try? Self.compile(nullable, Self.vocabulary(["a", "b"]))
        #expect(compiled != nil)
        if let compiled {
            #expect(compiled.advance(compiled.initial, bytes: Self.bytes("aaab")).map { compiled.accepts($0) } == true)
        }
    }

    /// `(a|b)*a(a|b){10}` has a configuration for every recent window of bytes; with room for
    /// few states the masks only narrow: what they allow still advances, and nothing crashes.
    @Test func anExplodingGrammarStopsAtItsStateLimit() throws {
        let ab = GrammarExpression.bytes(ByteSet("ab".utf8))
        let g = Grammar(.sequence([.star(ab), .text("a"), .repeat(ab, min: 10, max: 10)]))
        let v = Self.vocabulary(["aa", "ab", "ba", "bb", "aab", "bba"], alphabet: "ab")
        let small = try CompiledGrammar(g, vocabulary: v, maxStates: 40)
        var m = GrammarMatcher(grammar: small)
        var narrowed = false
        for step in 0..<60 {
            let allowed = m.allowedTokens().ids
            if allowed.count < v.size { narrowed = true }
            guard let pick = allowed.randomElement() else { break }
            let ok = m.accept(pick)
            #expect(ok, "step \(step): an allowed token was refused")
        }
        #expect(small.statistics.states <= 40)
        #expect(narrowed)
        let full = try CompiledGrammar(g, vocabulary: v)
        #expect(GrammarMatcher(grammar: full).allowedTokens().count == v.size)
    }

    @Test func hugeRepeatsAreRefusedNotBuilt() {
        let g = Grammar(.repeat(.repeat(.text("abcdefgh"), min: 5000, max: 5000), min: 200, max: 200))
        #expect(throws: GrammarError.self) { try Self.compile(g, Self.vocabulary(["a"])) }
    }
}

extension TokenMask {
    init(size: Int, allowing ids: [Int]) {
        self.init(size: size)
        for id in ids { insert(id) }
    }
}
