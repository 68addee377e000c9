import Testing
@testable import Structured

@Suite struct GrammarReferenceTests {
    @Test func literalsChoicesAndRepeats() {
        var g = Grammar()
        g.define("root", .sequence([.text("a"), .star(.rule("bc")), .optional(.text("!"))]))
        g.define("bc", .choice([.text("b"), .text("c")]))
        let r = GrammarReference(g)
        #expect(r.accepts("a"))
        #expect(r.accepts("abcb!"))
        #expect(!r.accepts("ab!!"))
        #expect(!r.accepts(""))
        #expect(r.acceptsPrefix("abc"))
        #expect(!r.acceptsPrefix("x"))
    }

    @Test func boundedRepeat() {
        let r = GrammarReference(Grammar(.repeat(.text("ab"), min: 2, max: 3)))
        #expect(!r.accepts("ab"))
        #expect(r.accepts("abab"))
        #expect(r.accepts("ababab"))
        #expect(!r.accepts("abababab"))
    }

    @Test func scalarRangesMatchTheirUTF8Encodings() {
        let ranges: [ClosedRange<UInt32>] = [0x41...0x5A, 0x3B1...0x3C9, 0x4E00...0x9FFF, 0x1F600...0x1F64F]
        let yes = GrammarReference(Grammar(.scalars(ranges)))
        let no = GrammarReference(Grammar(.scalars(ranges, negated: true)))
        var samples: [UInt32] = [0, 0x40, 0x41, 0x5A, 0x5B, 0x7F, 0x80, 0x3B0, 0x3B1, 0x3C9, 0x3CA, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF,
                                 0x4DFF, 0x4E00, 0x9FFF, 0xA000, 0x10000, 0x1F5FF, 0x1F600, 0x1F64F, 0x1F650, 0x10FFFF]
        for _ in 0..<2000 { samples.append(UInt32.random(in: 0...0x10FFFF)) }
        for c in samples {
            guard let scalar = UnicodeScalar(c) else { continue }
            let inside = ranges.contains { $0.contains(c) }
            let text = String(scalar)
            #expect(yes.accepts(text) == inside, "U+\(String(c, radix: 16))")
            #expect(no.accepts(text) == !inside, "negated U+\(String(c, radix: 16))")
        }
    }
}
