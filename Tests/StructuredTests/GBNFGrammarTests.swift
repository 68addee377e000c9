import Testing
@testable import Structured

@Suite struct GBNFGrammarTests {
    static let json = #"""
    # JSON (RFC 8259) with white space around the value.
    root   ::= ws value ws
    value  ::= object | array | string | number | "true" | "false" | "null"
    object ::= "{" ws ( member ( ws "," ws member )* ws )? "}"
    member ::= string ws ":" ws value
    array  ::=
        "[" ws
        ( value ( ws "," ws value )* ws )?
        "]"
    string ::= "\"" ( [^"\\\x00-\x1F] | "\\" ( ["\\/bfnrt] | "u" hex{4} ) )* "\""
    hex    ::= [0-9a-fA-F]
    number ::= "-"? ( "0" | [1-9] [0-9]* ) ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
    ws     ::= [ \t\n\r]*   # any white space
    """#

    @Test func jsonGrammar() throws {
        let g = try GBNFGrammar.parse(Self.json)
        #expect(g.root == "root")
        try GrammarChecks.check(g)
        let r = GrammarReference(g)
        // Expectations from Python's json.loads.
        let yes = [#"{"a": [1, 2.5e-3, true, null, "x\u00e9"], "b": {}}"#, #" "中文😀" "#, "[]", "0", "-0.5E+10", "[[[{}]]]",
                   #""\ud83d\ude00""#, #"{"a":1,"b":[true,false]}"#, "\n[ 1 ,\t2 ]\n"]
        let no = [#"{"a" 1}"#, "[1,]", "01", #""\x""#, #""a"#, "1.", ".5", "\"tab\there\"", #"{"k":"v",}"#, "tru", "[1 2]", "nul", "-", ""]
        for s in yes { #expect(r.accepts(s), "\(s.debugDescription)") }
        for s in no { #expect(!r.accepts(s), "\(s.debugDescription)") }
        #expect(r.acceptsPrefix(#"{"key": [1, "#))
    }

    static let arithmetic = """
    root   ::= expr
    expr   ::= term (("+" | "-") term)*
    term   ::= factor (("*" | "/") factor)*
    factor ::= number | "(" expr ")" | "-" factor
    number ::= [0-9]+ ("." [0-9]+)?
    """

    @Test func arithmeticGrammar() throws {
        let g = try GBNFGrammar.parse(Self.arithmetic)
        #expect(g.order == ["root", "expr", "term", "factor", "number"])
        let r = GrammarReference(g)
        for s in ["1", "1+2*(3-4)", "-(1.5)", "--2", "((1))/2", "10*20-3.25"] { #expect(r.accepts(s), "\(s)") }
        for s in ["", "1+", "(1", "1++2", "1 + 2", "()", "1.", "+1"] { #expect(!r.accepts(s), "\(s)") }
    }

    @Test func literalsClassesAndEscapes() throws {
        let g = try GBNFGrammar.parse(#"""
        root ::= "é\x41\u4E2D\U0001F600\t\"\\" [α-ω]+ [^a-z] . "\[\]"
        """#)
        let r = GrammarReference(g)
        #expect(r.accepts("éA中😀\t\"\\αβω中😀[]"))
        #expect(r.accepts("éA中😀\t\"\\λZ\n[]"))
        #expect(!r.accepts("éA中😀\t\"\\λz😀[]"))  // [^a-z] refuses z
        #expect(!r.accepts("éA中😀\t\"\\λZ[]"))  // . needs one character
        #expect(!r.accepts("éA中😀\t\"\\aZ![]"))  // a is not in α-ω
    }

    @Test func negatedClassesAgainstMultibyteCharacters() throws {
        let r = GrammarReference(try GBNFGrammar.parse(#"root ::= [^é中😀]"#))
        for s in ["e", "\u{E8}", "\u{4E2C}", "😃", "\n"] { #expect(r.accepts(s), "\(s.debugDescription)") }
        for s in ["é", "中", "😀", "", "ab"] { #expect(!r.accepts(s), "\(s.debugDescription)") }
        // Never half a character.
        #expect(!r.accepts(Array("é".utf8.prefix(1))))
    }

    @Test func classEdges() throws {
        let r = GrammarReference(try GBNFGrammar.parse(#"root ::= [-a] [a-] [\]\-\\] [\x00-\x1f]"#))
        #expect(r.accepts("--]\u{0}"))
        #expect(r.accepts("aa\\\u{1F}"))
        #expect(r.accepts("a--\u{5}"))
        #expect(!r.accepts("b--\u{5}"))
        #expect(!r.accepts("a--\u{20}"))
    }

    @Test func repetitionCounts() throws {
        let g = try GBNFGrammar.parse("""
        root ::= a{2} "-" b{1,} "-" c{0,2} "-" d{ 1 , 3 }
        a ::= "a"
        b ::= "b"
        c ::= "c"
        d ::= "d"
        """)
        let r = GrammarReference(g)
        for s in ["aa-b--d", "aa-bbbb-cc-ddd"] { #expect(r.accepts(s), "\(s)") }
        for s in ["a-b--d", "aaa-b--d", "aa--c-d", "aa-b-ccc-d", "aa-b--", "aa-b--dddd"] { #expect(!r.accepts(s), "\(s)") }
    }

    @Test func commentsLineBreaksAndEmptyAlternatives() throws {
        let g = try GBNFGrammar.parse("""
        # leading comment

        root ::= greeting   # trailing comment
                 ( " " name )?
        greeting ::=
              "hello"
            | "hi"      # with a comment between alternatives
            |
        name ::= [A-Z] [a-z]*
        """)
        let r = GrammarReference(g)
        for s in ["hello", "hi Bob", "", " Al"] { #expect(r.accepts(s), "\(s)") }
        for s in ["hello bob", "hey", "hi  Bob"] { #expect(!r.accepts(s), "\(s)") }
    }

    /// A repeat of something that can match the empty string becomes a repeat of its non-empty
    /// part, through companion rules when a rule is nullable.
    @Test func nullableRepeatsAreRewritten() throws {
        let g = try GBNFGrammar.parse("""
        root ::= x* "!" ("a"? "b"?)+ "." (y){2,3}
        x ::= "x"? | "(" x* ")"
        y ::= "y"?
        """)
        try GrammarChecks.check(g)
        #expect(g.rules["x_nonempty"] != nil)
        #expect(g.rules["y_nonempty"] == .literal(Array("y".utf8)))
        let r = GrammarReference(g)
        for s in ["!.", "x(x)()!ab.", "!abba.yyy", "((x)x)!b.y", "!aab.yy"] { #expect(r.accepts(s), "\(s)") }
        for s in ["!", "(!.", "!c.", "!.yyyy", "x)!."] { #expect(!r.accepts(s), "\(s)") }
    }

    static let errors: [(String, String)] = [
        (#"value ::= "a""#, "GBNF: the grammar has no rule named 'root'"),
        ("root ::= foo\n", "GBNF 1:10: undefined rule 'foo'"),
        ("root ::= a\na ::= \"x\" b", "GBNF 2:11: undefined rule 'b'"),
        ("root ::= \"a\"\nroot ::= \"b\"", "GBNF 2:1: rule 'root' is defined twice (first on line 1)"),
        ("root = \"a\"", "GBNF 1:6: expected '::=' after the rule name 'root', found '='"),
        ("root", "GBNF 1:5: expected '::=' after the rule name 'root', found the end of the grammar"),
        ("::= \"a\"", "GBNF 1:1: expected a rule name, found ':'"),
        ("root ::= \"abc", "GBNF 1:10: unterminated string literal"),
        ("root ::= \"ab\nc\"", "GBNF 1:10: unterminated string literal"),
        ("root ::= [a-z", "GBNF 1:10: unterminated character class"),
        ("root ::= []", "GBNF 1:10: empty character class"),
        ("root ::= [z-a]", "GBNF 1:11: bad character range 'z-a'"),
        ("root ::= (\"a\" | \"b\"", "GBNF 1:10: unbalanced parenthesis: '(' is not closed"),
        ("root ::= \"a\")", "GBNF 1:13: unbalanced parenthesis: ')' has no matching '('"),
        ("root ::= \"a\" ;", "GBNF 1:14: unexpected ';'"),
        ("root ::= * \"a\"", "GBNF 1:10: '*' has nothing to repeat"),
        ("root ::=\n  \"a\" | { 2 }", "GBNF 2:9: '{' has nothing to repeat"),
        ("root ::= \"\\q\"", #"GBNF 1:11: unknown escape '\q'"#),
        ("root ::= \"\\x4\"", #"GBNF 1:11: bad escape '\x': expected 2 hex digits"#),
        ("root ::= [\\uD800]", "GBNF 1:11: bad escape: U+D800 is not a Unicode scalar"),
        ("root ::= \"a\"{3,2}", "GBNF 1:13: bad repetition {3,2}: the minimum is greater than the maximum"),
        ("root ::= \"a\"{x}", "GBNF 1:14: expected a number after '{'"),
        ("root ::= \"a\"{2", "GBNF 1:15: expected '}' to close the repetition count, found the end of the grammar"),
        ("root ::= \"a\"{20000}", "GBNF 1:14: repetition count 20000 is over the limit of 10000"),
        ("root ::= expr\nexpr ::= expr \"+\" num | num\nnum ::= [0-9]+",
         "the grammar is left-recursive: rule 'expr' can reach itself without consuming any text (expr -> expr)"),
        ("root ::= a\na ::= b? c \"x\"\nb ::= \"b\"\nc ::= \"c\"* a | \"c\"",
         "the grammar is left-recursive: rule 'a' can reach itself without consuming any text (a -> c -> a)"),
    ]

    @Test func errorMessages() {
        for (text, message) in Self.errors {
            #expect(throws: GrammarError(message), "\(text)") { try GBNFGrammar.parse(text) }
        }
    }

    // GrammarChecks on hand-built grammars.

    @Test func checksOnHandBuiltGrammars() throws {
        var undefined = Grammar()
        undefined.define("root", .sequence([.text("a"), .rule("missing")]))
        #expect(throws: GrammarError("rule 'root' refers to an undefined rule 'missing'")) { try GrammarChecks.checkUndefinedRules(undefined) }
        #expect(throws: GrammarError("the grammar has no root rule 'start'")) { try GrammarChecks.checkUndefinedRules(Grammar(root: "start")) }

        var nullable = Grammar()
        nullable.define("root", .sequence([.text("<"), .rule("items"), .text(">")]))
        nullable.define("items", .star(.rule("item")))
        nullable.define("item", .choice([.text("i"), .empty]))
        #expect(throws: GrammarError("rule 'items' repeats an expression that can match the empty string")) { try GrammarChecks.checkNullableRepeats(nullable) }
        #expect(GrammarChecks.nullableRules(nullable) == ["items", "item"])
        let fixed = GrammarChecks.removingNullableRepeats(nullable)
        try GrammarChecks.check(fixed)
        let a = GrammarReference(nullable), b = GrammarReference(fixed)
        for s in ["<>", "<i>", "<iii>", "<", "<x>", "i"] { #expect(a.accepts(s) == b.accepts(s), "\(s)") }

        // Through a nullable prefix, and through a repeat.
        var left = Grammar()
        left.define("root", .sequence([.optional(.text("-")), .rule("list")]))
        left.define("list", .sequence([.star(.rule("root")), .text(";")]))
        #expect(throws: GrammarError("the grammar is left-recursive: rule 'root' can reach itself without consuming any text (root -> list -> root)")) {
            try GrammarChecks.checkLeftRecursion(left)
        }
        // Right recursion is fine.
        var right = Grammar()
        right.define("root", .choice([.empty, .sequence([.text("a"), .rule("root")])]))
        try GrammarChecks.check(right)
    }

    @Test func nonEmptyOfExpressions() {
        #expect(GrammarChecks.nonEmpty(.empty) == nil)
        #expect(GrammarChecks.nonEmpty(.optional(.text("a"))) == .text("a"))
        let e = GrammarChecks.nonEmpty(.sequence([.optional(.text("a")), .star(.text("b"))]))
        let r = GrammarReference(Grammar(e!))
        for s in ["a", "b", "abb", "bbb"] { #expect(r.accepts(s), "\(s)") }
        for s in ["", "ba", "aa"] { #expect(!r.accepts(s), "\(s)") }
    }
}
