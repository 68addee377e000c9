import Testing
@testable import Structured

@Suite struct RegexGrammarTests {
    /// Pattern, strings it fully matches, strings it does not. The expectations come from
    /// Python's `re.fullmatch(pattern, s, re.ASCII)` (with `(?<name>` spelled `(?P<name>` for Python).
    static let table: [(String, [String], [String])] = [
        (##"abc"##, ["abc"], ["ab", "abcd", ""]),
        (##""##, [""], ["a"]),
        (##"^abc$"##, ["abc"], ["abc\u{a}", ""]),
        (##"a|b|"##, ["a", "b", ""], ["ab"]),
        (##"|a"##, ["", "a"], ["aa"]),
        (##"a||b"##, ["a", "b", ""], ["ab"]),
        (##"^a|^b$|c$"##, ["a", "b", "c"], [""]),
        (##"colou?r"##, ["color", "colour"], ["colouur"]),
        (##"a*b+c?"##, ["b", "aab", "abbbc"], ["ac", "", "aabbcc"]),
        (##"a*?b+?c??"##, ["b", "aab", "abbbc"], ["ac"]),
        (##"(ab)*"##, ["", "ab", "abab"], ["aba"]),
        (##"(?:ab|cd)+"##, ["ab", "abcd", "cdcdab"], ["", "abc"]),
        (##"(?P<year>\d{4})-(?<month>\d{2})"##, ["2024-01"], ["24-01", "2024-1", "2024-011"]),
        (##"a{3}"##, ["aaa"], ["aa", "aaaa"]),
        (##"a{2,}"##, ["aa", "aaaaaaa"], ["a"]),
        (##"a{2,4}"##, ["aa", "aaa", "aaaa"], ["a", "aaaaa"]),
        (##"a{,2}"##, ["", "a", "aa"], ["aaa"]),
        (##"a{0}"##, [""], ["a"]),
        (##"a{0,0}b"##, ["b"], ["ab"]),
        (##"(a{1,2}b){2,3}"##, ["abab", "ababab", "aabaabaab"], ["aababb", "abababab", "ab"]),
        (##"((a|b){2}c)*"##, ["", "abc", "aacbbc"], ["ac", "abcab"]),
        (##"x{a}"##, ["x{a}"], ["x"]),
        (##"x{"##, ["x{"], []),
        (##"x{1,a}"##, ["x{1,a}"], []),
        (##"a}"##, ["a}"], []),
        (##"\d+"##, ["0", "0123456789"], ["", "12a", "٣"]),
        (##"\w+"##, ["abc_XYZ09"], ["a-b", "é"]),
        (##"\s"##, [" ", "\u{9}", "\u{a}", "\u{d}", "\u{c}", "\u{b}"], ["a", " "]),
        (##"\D\W\S"##, ["a!x", "a x", "é中😀"], ["1!x", "a_x"]),
        (##"."##, ["a", "é", "中", "😀", "\u{d}"], ["\u{a}", ""]),
        (##".+"##, ["aé中😀"], ["a\u{a}b"]),
        (##"[abc]"##, ["a", "b"], ["d", ""]),
        (##"[^abc]"##, ["d", "é", "中", "😀", "\u{a}"], ["a"]),
        (##"[a-z0-9_]+"##, ["abc_09"], ["ABC", "a-b"]),
        (##"[]a]"##, ["]", "a"], ["b"]),
        (##"[^]a]"##, ["b"], ["]", "a"]),
        (##"[a-]"##, ["a", "-"], ["b"]),
        (##"[-a]"##, ["a", "-"], ["b"]),
        (##"[a-z-0]"##, ["-", "0", "m"], ["A"]),
        (##"[\d.]+"##, ["3.14", "."], ["a"]),
        (##"[^\d]"##, ["a", "中"], ["5"]),
        (##"[^\D]"##, ["5"], ["a"]),
        (##"[\w\s]+"##, ["a b_c"], ["a-b"]),
        (##"[\]\[\\\-\^]+"##, ["][\\-^"], ["a"]),
        (##"[\b]"##, ["\u{8}"], ["b"]),
        (##"[.*+?]"##, [".", "*", "+", "?"], ["a"]),
        (##"[é中😀]"##, ["é", "中", "😀"], ["e", "è"]),
        (##"[^é中😀]"##, ["e", "è", "丬"], ["é", "中", "😀"]),
        (##"[à-ÿ]+"##, ["àéÿ"], ["a", "Ā"]),
        (##"[一-龥]+"##, ["中文"], ["中a"]),
        (##"[😀-🙏]"##, ["😀", "🙏", "😃"], ["🚀", "a"]),
        (##"[^a-z]"##, ["M", "􏿿", "߿", "ࠀ", "￿", "𐀀"], ["m"]),
        (##"héllo wörld"##, ["héllo wörld"], ["hello world"]),
        (##"中+文?"##, ["中", "中中文"], ["文"]),
        (##"😀{2}"##, ["😀😀"], ["😀"]),
        (##"(😀|中)*é"##, ["é", "😀中😀é"], ["中"]),
        (##"\x41\x7e"##, ["A~"], ["a~"]),
        (##"\u00e9\u4e2d"##, ["é中"], ["e中"]),
        (##"\U0001F600"##, ["😀"], []),
        (##"\n\t\r\f\v\0"##, ["\u{a}\u{9}\u{d}\u{c}\u{b}\u{0}"], []),
        (##"\\\.\*\+\?\(\)\[\]\{\}\|\^\$\/\-"##, ["\\.*+?()[]{}|^$/-"], []),
        (##"a\.b"##, ["a.b"], ["axb"]),
        (##"\#\ \""##, ["# \""], []),
        (##"(a?)*"##, ["", "a", "aa"], ["b"]),
        (##"(a?)+"##, ["", "a", "aa"], []),
        (##"(|a)+"##, ["", "a", "aaa"], ["b"]),
        (##"(a*)*b"##, ["b", "ab", "aaab"], ["a"]),
        (##"(a*b*)*c"##, ["c", "abc", "bac", "aabbbac"], ["abd"]),
        (##"(a?b?)+"##, ["", "a", "b", "ab", "ba", "abba"], ["c"]),
        (##"(a?){3}"##, ["", "a", "aa", "aaa"], ["aaaa"]),
        (##"(a?){2,3}b"##, ["b", "ab", "aab", "aaab"], ["aaaab"]),
        (##"(a|b?){2}c"##, ["c", "ac", "bc", "abc", "bbc"], ["abbc"]),
        (##"((a?)(b?)){2}"##, ["", "a", "ab", "abab", "ba", "bab"], ["ababa"]),
        (##"(a*)+?"##, ["", "aaa"], []),
        (##"(a|)*(b|)*"##, ["", "a", "b", "ab", "aabb"], ["ba"]),
        (##"(()|x)*"##, ["", "x", "xx"], []),
        (##"((a*)*)*"##, ["", "aaaa"], ["b"]),
        (##"(a{0,2}b{0,2}){0,2}"##, ["", "aabb", "abab", "aabbaabb", "bbb", "aaabb"], ["ababa"]),
        (##"(a?){0}"##, [""], ["a"]),
        (##"(?:[a-c]?\d?)+x"##, ["x", "a1x", "1a2bx", "ax", "aa11x"], ["dx"]),
        (##"[0-9]{1,3}(\.[0-9]{1,3}){3}"##, ["192.168.0.1"], ["1.2.3", "1.2.3.4.5", "1234.1.1.1"]),
        (##"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"##, ["a.b+c@ex-ample.com"], ["a@b.c", "@b.com"]),
        (##"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?"##, ["0", "-12.5e+3", "1e5"], ["01", "1."]),
        (##"(a|ab)(c|bcd)(d*)"##, ["abcd", "abcdd", "acd", "abbcd"], []),
        (##"(?:(?:a|b)*c){2,}"##, ["cc", "abcbac"], ["c", "abcab"]),
    ]

    static func matcher(_ pattern: String) throws -> GrammarReference {
        GrammarReference(Grammar(try RegexGrammar.expression(pattern)))
    }

    @Test func fullMatchTable() throws {
        for (pattern, yes, no) in Self.table {
            let r = try Self.matcher(pattern)
            for s in yes { #expect(r.accepts(s), "\(pattern) should match \(s.debugDescription)") }
            for s in no { #expect(!r.accepts(s), "\(pattern) should not match \(s.debugDescription)") }
        }
    }

    /// No rule references, and no repeat whose body can match the empty string (the compiled
    /// matcher refuses those).
    @Test func expressionsAreRuleFreeAndRepeatBodiesNonEmpty() throws {
        let analysis = Nullability(Grammar())
        for (pattern, _, _) in Self.table {
            let e = try RegexGrammar.expression(pattern)
            GrammarChecks.visit(e) { part in
                if case .rule(let name) = part { Issue.record("\(pattern): rule reference \(name)") }
                if case .repeat(let body, _, _) = part {
                    #expect(!analysis.matchesEmpty(body), "\(pattern): nullable repeat body \(body)")
                }
            }
            try GrammarChecks.check(Grammar(e))
        }
    }

    @Test func nullableRepeatsAreRewritten() throws {
        #expect(try RegexGrammar.expression("(a?)*") == .repeat(.literal([0x61]), min: 0, max: nil))
        #expect(try RegexGrammar.expression("(|a)+") == .repeat(.literal([0x61]), min: 0, max: nil))
        #expect(try RegexGrammar.expression("(a?){2,5}") == .repeat(.literal([0x61]), min: 0, max: 5))
        // Nothing but the empty string is left to repeat.
        #expect(try RegexGrammar.expression("(){3}") == .empty)
        #expect(try RegexGrammar.expression("(|)*") == .empty)
    }

    /// Beyond Python's syntax: `\u{...}`, surrogate pairs as two `\u` escapes, lazy counts.
    @Test func ecmaScriptEscapes() throws {
        let r = try Self.matcher(#"\u{1F600}[\u{4e00}-\u{9fff}]\uD83D\uDE00"#)
        #expect(r.accepts("😀中😀"))
        #expect(!r.accepts("😀a😀"))
        let c = try Self.matcher(#"[\uD83D\uDE00-\uD83D\uDE4F]+"#)
        #expect(c.accepts("😀🙏"))
        #expect(!c.accepts("🚀"))
        let lazy = try Self.matcher("a{2,3}?b")
        #expect(lazy.accepts("aab") && lazy.accepts("aaab") && !lazy.accepts("ab"))
    }

    @Test func emptyNegatedClassMatchesNothing() throws {
        let r = try Self.matcher(#"a[^\s\S]?b"#)
        #expect(r.accepts("ab"))
        #expect(!r.accepts("axb"))
    }

    static let refusals: [(String, String)] = [
        (#"(a)\1"#, #"regex: backreference '\1' is not supported at offset 3"#),
        (#"(?P<n>a)(?P=n)"#, "regex: backreference '(?P=' is not supported at offset 8"),
        (#"(?<n>a)\k<n>"#, #"regex: backreference '\k' is not supported at offset 7"#),
        ("a(?=b)", "regex: lookahead '(?=' is not supported at offset 1"),
        ("a(?!b)", "regex: lookahead '(?!' is not supported at offset 1"),
        ("(?<=a)b", "regex: lookbehind '(?<=' is not supported at offset 0"),
        ("(?<!a)b", "regex: lookbehind '(?<!' is not supported at offset 0"),
        (#"\bword"#, #"regex: assertion '\b' is not supported at offset 0"#),
        (#"a\B"#, #"regex: assertion '\B' is not supported at offset 1"#),
        (#"\Aa"#, #"regex: assertion '\A' is not supported at offset 0"#),
        (#"a\Z"#, #"regex: assertion '\Z' is not supported at offset 1"#),
        (#"a\z"#, #"regex: assertion '\z' is not supported at offset 1"#),
        ("(?i)abc", "regex: inline flags '(?i' are not supported at offset 0"),
        ("x(?s:.)", "regex: inline flags '(?s' are not supported at offset 1"),
        ("(?#note)a", "regex: comment group '(?#' is not supported at offset 0"),
        ("(?>a)", "regex: atomic group '(?>' is not supported at offset 0"),
        ("(?%a)", "regex: unknown group extension '(?%' at offset 0"),
        ("(?P<>a)", "regex: bad group name at offset 0"),
        ("*a", "regex: quantifier '*' has nothing to repeat at offset 0"),
        ("a|+b", "regex: quantifier '+' has nothing to repeat at offset 2"),
        ("(?:?)", "regex: quantifier '?' has nothing to repeat at offset 3"),
        ("^*", "regex: quantifier '*' has nothing to repeat at offset 1"),
        ("{2}", "regex: quantifier '{' has nothing to repeat at offset 0"),
        ("a**", "regex: multiple repeat: quantifier '*' follows another at offset 2"),
        ("a{2}{3}", "regex: multiple repeat: quantifier '{' follows another at offset 4"),
        ("a*??", "regex: multiple repeat: quantifier '?' follows another at offset 3"),
        ("a*+", "regex: possessive quantifier '+' is not supported at offset 2"),
        ("(ab", "regex: unbalanced parenthesis: '(' is not closed at offset 0"),
        ("a(b(c)", "regex: unbalanced parenthesis: '(' is not closed at offset 1"),
        ("ab)", "regex: unbalanced parenthesis: ')' has no matching '(' at offset 2"),
        ("[ab", "regex: unbalanced bracket: '[' is not closed at offset 0"),
        ("x[]", "regex: unbalanced bracket: '[' is not closed at offset 1"),
        ("a{3,2}", "regex: bad repetition {3,2}: the minimum is greater than the maximum at offset 1"),
        ("a{10001}", "regex: repetition count 10001 is over the limit of 10000 at offset 1"),
        ("a{1,20000}", "regex: repetition count 20000 is over the limit of 10000 at offset 1"),
        ("a^b", "regex: anchor '^' is only supported at the start of the pattern at offset 1"),
        ("a$b", "regex: anchor '$' is only supported at the end of the pattern at offset 1"),
        ("(a$)", "regex: anchor '$' is only supported at the end of the pattern at offset 2"),
        (#"\p{L}"#, #"regex: Unicode property escape '\p' is not supported at offset 0"#),
        ("[[:alpha:]]", "regex: POSIX character class '[:' is not supported at offset 1"),
        (#"\01"#, #"regex: octal escape '\01' is not supported at offset 0"#),
        (#"a\q"#, #"regex: unknown escape '\q' at offset 1"#),
        (#"\x4"#, #"regex: bad escape '\x': expected 2 hex digits at offset 0"#),
        (#"\u12"#, #"regex: bad escape '\u': expected 4 hex digits at offset 0"#),
        (#"\u{}"#, #"regex: bad escape '\u{': expected 1 to 6 hex digits and '}' at offset 0"#),
        (#"\u{110000}"#, #"regex: bad escape: U+110000 is not a Unicode scalar (a lone surrogate?) at offset 0"#),
        (#"\uD800"#, #"regex: bad escape: U+D800 is not a Unicode scalar (a lone surrogate?) at offset 0"#),
        ("[z-a]", "regex: bad character range 'z-a' at offset 1"),
        (#"[\d-z]"#, #"regex: bad character range '\d-z' at offset 1"#),
        ("中[é-a]", "regex: bad character range 'é-a' at offset 2"),
        (#"a\"#, #"regex: trailing backslash at offset 1"#),
    ]

    @Test func refusals() {
        for (pattern, message) in Self.refusals {
            #expect(throws: GrammarError(message), "\(pattern)") { try RegexGrammar.expression(pattern) }
        }
    }
}
