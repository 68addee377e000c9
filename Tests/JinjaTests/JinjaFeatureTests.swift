import Jinja
import Testing

/// Renders with the transformers options, as `apply_chat_template` does.
func render(_ source: String, _ context: [String: JinjaValue] = [:]) throws -> String {
    try JinjaTemplate(source).render(context)
}

/// Text, tags, comments and whitespace control (trim_blocks, lstrip_blocks, `-`).
@Suite struct JinjaSyntaxTests {
    @Test func plainText() throws {
        #expect(try render("Hello, world!", [:]) == "Hello, world!")
    }

    @Test func variable() throws {
        #expect(try render("Hi {{ name }}!", ["name": "Ann"]) == "Hi Ann!")
    }

    @Test func comment() throws {
        #expect(try render("a{# hidden #}b", [:]) == "ab")
    }

    @Test func trailingNewlineDropped() throws {
        let template = #"""
            line

            """#
        let context: [String: JinjaValue] = [:]
        let expected = "line"
        #expect(try render(template, context) == expected)
    }

    @Test func crlfNormalized() throws {
        let template = "a\r\nb"
        let context: [String: JinjaValue] = [:]
        let expected = #"""
            a
            b
            """#
        #expect(try render(template, context) == expected)
    }

    @Test func dashStripsBothSides() throws {
        let template = #"""
            a  
             {{- x -}} 
             b
            """#
        let context: [String: JinjaValue] = ["x": 1]
        let expected = "a1b"
        #expect(try render(template, context) == expected)
    }

    @Test func blockDashStrips() throws {
        let template = #"""
            a
              {%- if true -%}
              b
            {%- endif %}
            c
            """#
        let context: [String: JinjaValue] = [:]
        let expected = "abc"
        #expect(try render(template, context) == expected)
    }

    @Test func trimBlocks() throws {
        let template = #"""
            {% if true %}
            yes
            {% endif %}
            end
            """#
        let context: [String: JinjaValue] = [:]
        let expected = #"""
            yes
            end
            """#
        #expect(try render(template, context) == expected)
    }

    @Test func lstripBlocks() throws {
        let template = #"""
              {% if true %}
              x
              {% endif %}
              {{ 1 }}  {% if 1 %}y{% endif %}
            """#
        let context: [String: JinjaValue] = [:]
        let expected = #"""
              x
              1  y
            """#
        #expect(try render(template, context) == expected)
    }

    @Test func lstripCommentsAndPlus() throws {
        let template = #"""
            a
              {# c #}
            b
              {%+ if true %}c{% endif %}
            """#
        let context: [String: JinjaValue] = [:]
        let expected = #"""
            a
            b
              c
            """#
        #expect(try render(template, context) == expected)
    }

    @Test func lstripNotMidLine() throws {
        #expect(try render("x {% if true %}y{% endif %}", [:]) == "x y")
    }

    @Test func commentDash() throws {
        let template = #"""
            a
              {#- c #}  b {# d #}
            c
            """#
        let context: [String: JinjaValue] = [:]
        let expected = "a  b c"
        #expect(try render(template, context) == expected)
    }

    @Test func rawBlock() throws {
        #expect(try render("{% raw %}{{ not parsed }}{% endraw %}", [:]) == "{{ not parsed }}")
    }

    @Test func variableNoTrimBlocks() throws {
        let template = #"""
            {{ 1 }}
            {{ 2 }}
            """#
        let context: [String: JinjaValue] = [:]
        let expected = #"""
            1
            2
            """#
        #expect(try render(template, context) == expected)
    }
}

/// Literals and how values print (Python's str and repr).
@Suite struct JinjaLiteralTests {
    @Test func stringLiterals() throws {
        #expect(try render("{{ 'a\\'b' }}|{{ \"c\\\"d\" }}|{{ 'x\\ny' }}|{{ 'tab\\there' }}|{{ 'u\\u00e9' }}|{{ 'ab' 'cd' }}", [:]) == "a'b|c\"d|x\ny|tab\there|ué|abcd")
    }

    @Test func numbers() throws {
        #expect(try render("{{ 1 }} {{ 1.0 }} {{ 1.5e3 }} {{ 2.50 }} {{ 1_000 }} {{ 10/4 }} {{ 10/5 }} {{ 0.1 + 0.2 }}", [:]) == "1 1.0 1500.0 2.5 1000 2.5 2.0 0.30000000000000004")
    }

    @Test func constants() throws {
        #expect(try render("{{ true }} {{ false }} {{ none }} {{ True }} {{ None }} [{{ undefined_thing }}]", [:]) == "True False None True None []")
    }

    @Test func listAndDictRepr() throws {
        #expect(try render("{{ [1, 'a', none, true, 1.5, [2], {'k': 'v'}] }} {{ {'a': 1, 'b': \"it's\"} }}", [:]) == "[1, 'a', None, True, 1.5, [2], {'k': 'v'}] {'a': 1, 'b': \"it's\"}")
    }

    @Test func tupleAsList() throws {
        #expect(try render("{% set t = (1, 2) %}{{ t[0] }}{{ t[1] }}{{ t | length }}", [:]) == "122")
    }

    @Test func contextValuesRender() throws {
        #expect(try render("{{ s }} {{ i }} {{ d }} {{ b }} {{ n }} {{ l }} {{ m }}", ["s": "str", "i": 3, "d": 2.0, "b": true, "n": nil, "l": ["x", 1], "m": ["k": [1, nil]]]) == "str 3 2.0 True None ['x', 1] {'k': [1, None]}")
    }
}

/// Operators, access, slicing, methods, calls and tests.
@Suite struct JinjaExpressionTests {
    @Test func arithmetic() throws {
        #expect(try render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 7.5 // 2 }} {{ -3 }} {{ 5 - 7 }}", [:]) == "7 9 3 -4 2 1024 0.5 3.0 -3 -2")
    }

    @Test func concatenation() throws {
        #expect(try render("{{ 'a' ~ 1 ~ none ~ true }} {{ 'a' + 'b' }} {{ [1] + [2] }} {{ 'ab' * 3 }} {{ x ~ 'y' }}", [:]) == "a1NoneTrue ab [1, 2] ababab y")
    }

    @Test func concatPrecedence() throws {
        #expect(try render("{{ 'a' ~ 2 * 3 ~ 'b' }} {{ (1 + 2) ~ 'x' }} {{ 1 ~ 2 == '12' }} {{ 'n' ~ 1 in 'n1' }}", [:]) == "a6b 3x True True")
    }

    @Test func comparisons() throws {
        #expect(try render("{{ 1 < 2 }} {{ 2 <= 1 }} {{ 'a' < 'b' }} {{ 1 == 1.0 }} {{ 1 != 2 }} {{ [1, 2] == [1, 2] }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ true == 1 }}", [:]) == "True False True True True True True False True")
    }

    @Test func logic() throws {
        #expect(try render("{{ true and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ not 'a' }} {{ '' or [] }} {{ none and 1 }} {{ 1 and 2 or 3 }}", [:]) == "x y True False [] None 2")
    }

    @Test func membership() throws {
        #expect(try render("{{ 'a' in 'cat' }} {{ 'z' not in 'cat' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'v' in {'k': 'v'} }} {{ 1 in missing }}", [:]) == "True True True True False False")
    }

    @Test func conditionalExpr() throws {
        #expect(try render("{{ 'yes' if x else 'no' }} {{ 'yes' if not x else 'no' }} [{{ 'only' if false }}]", ["x": 1]) == "yes no []")
    }

    @Test func attributeAndItem() throws {
        #expect(try render("{{ m.role }} {{ m['content'] }} [{{ m.missing }}] {{ l[0] }} {{ l[-1] }} [{{ l[5] }}] {{ l.0 }} {{ 'abc'[1] }}", ["m": ["role": "user", "content": "hi"], "l": [1, 2, 3]]) == "user hi [] 1 3 [] 1 b")
    }

    @Test func slicing() throws {
        #expect(try render("{{ l[1:] }} {{ l[:-1] }} {{ l[::-1] }} {{ l[::2] }} {{ l[-2:] }} {{ l[1:3] }} {{ 'hello'[1:4] }} {{ 'hello'[::-1] }} {{ l[5:] }} {{ l[-10:2] }} {{ l[3:0:-1] }}", ["l": [0, 1, 2, 3, 4]]) == "[1, 2, 3, 4] [0, 1, 2, 3] [4, 3, 2, 1, 0] [0, 2, 4] [3, 4] [1, 2] ell olleh [] [0, 1] [3, 2, 1]")
    }

    @Test func stringMethods() throws {
        #expect(try render("{{ '  x  '.strip() }}|{{ 'xxhixx'.strip('x') }}|{{ '  x '.lstrip() }}|{{ ' x  '.rstrip() }}|{{ 'a,b,,c'.split(',') }}|{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'hello'.startswith('he') }}|{{ 'hello'.endswith(('x', 'lo')) }}|{{ 'Hi'.upper() }}{{ 'Hi'.lower() }}|{{ 'hello world'.title() }}|{{ 'aaa'.replace('a', 'b', 2) }}|{{ '{} and {}'.format(1, 'two') }}|{{ 'ab'.find('b') }}", [:]) == "x|hi|x | x|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|True|True|HIhi|Hello World|bba|1 and two|1")
    }

    /// Python's whitespace, which `strip`, `trim` and `split` use, includes U+001C...U+001F
    /// besides Unicode's White_Space (U+3000, U+00A0, U+2028...); U+200B is not whitespace.
    @Test func pythonWhitespace() throws {
        let text: JinjaValue = "\u{1F}\u{3000}\u{A0} a\u{1C}b\u{200B} \u{2028}\u{1E}"
        #expect(try render("[{{ t.strip() }}]", ["t": text]) == "[a\u{1C}b\u{200B}]")
        #expect(try render("[{{ t | trim }}]", ["t": text]) == "[a\u{1C}b\u{200B}]")
        #expect(try render("{{ t.split() | length }}|{{ '\u{1D}'.isspace() }}|{{ '\u{200B}'.isspace() }}", ["t": text]) == "2|True|False")
    }

    @Test func dictMethods() throws {
        #expect(try render("{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %} {{ d.keys() | list }} {{ d.values() | list }} {{ d.get('a') }} {{ d.get('zz', 'dflt') }} {{ d.get('zz') }}", ["d": ["b": 2, "a": 1]]) == "b=2;a=1; ['b', 'a'] [2, 1] 1 dflt None")
    }

    @Test func calls() throws {
        #expect(try render("{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }} {{ dict(a=1, b='x') }}", [:]) == "[0, 1, 2] [1, 3, 5] [3, 2, 1] {'a': 1, 'b': 'x'}")
    }

    @Test func tests() throws {
        #expect(try render("{{ x is defined }} {{ y is undefined }} {{ n is none }} {{ 's' is string }} {{ 1 is number }} {{ 1.5 is integer }} {{ 2 is integer }} {{ {} is mapping }} {{ 's' is iterable }} {{ [] is sequence }} {{ true is boolean }} {{ true is true }} {{ 0 is false }} {{ 'a' is equalto 'a' }} {{ 2 is eq(2) }} {{ 3 is odd }} {{ 3 is even }} {{ 9 is divisibleby 3 }} {{ x is not none }}", ["x": 1, "n": nil]) == "True True True True True False True True True True True True False True True True False True True")
    }
}

/// set, if, for, macro, call and filter blocks.
@Suite struct JinjaStatementTests {
    @Test func setStatement() throws {
        #expect(try render("{% set x = 1 %}{% set a, b = [2, 3] %}{{ x }}{{ a }}{{ b }}", [:]) == "123")
    }

    @Test func setBlock() throws {
        #expect(try render("{% set greeting %}Hello {{ name }}{% endset %}[{{ greeting }}]{% set up | upper %}shout{% endset %}{{ up }}", ["name": "Bo"]) == "[Hello Bo]SHOUT")
    }

    @Test func namespace() throws {
        #expect(try render("{% set ns = namespace(count=0, found=false) %}{% for i in range(4) %}{% set ns.count = ns.count + i %}{% if i == 2 %}{% set ns.found = true %}{% endif %}{% endfor %}{{ ns.count }} {{ ns.found }}", [:]) == "6 True")
    }

    @Test func loopScoping() throws {
        #expect(try render("{% set x = 5 %}{% for i in range(3) %}{{ x }}{% set x = i %}{% endfor %}{{ x }}", [:]) == "5555")
    }

    @Test func ifElifElse() throws {
        #expect(try render("{% for n in [1, 2, 3] %}{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %} {% endfor %}", [:]) == "one two many ")
    }

    @Test func loopVariables() throws {
        #expect(try render("{% for x in 'abc' %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}|{% endfor %}", [:]) == "1032TrueFalse3|2121FalseFalse3|3210FalseTrue3|")
    }

    @Test func loopPrevNext() throws {
        #expect(try render("{% for x in [1, 2, 3] %}({{ loop.previtem }},{{ loop.nextitem }}){{ loop.cycle('a', 'b') }}{% endfor %}", [:]) == "(,2)a(1,3)b(2,)a")
    }

    @Test func forElse() throws {
        #expect(try render("{% for x in [] %}{{ x }}{% else %}empty{% endfor %}{% for x in none_yet %}x{% else %}!{% endfor %}", [:]) == "empty!")
    }

    @Test func forFilter() throws {
        #expect(try render("{% for x in range(10) if x is odd %}{{ x }}{{ ',' if not loop.last }}{% endfor %}", [:]) == "1,3,5,7,9")
    }

    @Test func forUnpackAndDict() throws {
        #expect(try render("{% for k, v in {'a': 1, 'b': 2} | items %}{{ k }}{{ v }}{% endfor %} {% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %}", [:]) == "a1b2 xy")
    }

    @Test func breakContinue() throws {
        #expect(try render("{% for i in range(10) %}{% if i == 1 %}{% continue %}{% endif %}{% if i == 4 %}{% break %}{% endif %}{{ i }}{% endfor %}", [:]) == "023")
    }

    @Test func macro() throws {
        #expect(try render("{% macro tag(name, value='none', sep=': ') %}<{{ name }}{{ sep }}{{ value }}>{% endmacro %}{{ tag('a') }}{{ tag('b', 2) }}{{ tag('c', sep='=', value=3) }}", [:]) == "<a: none><b: 2><c=3>")
    }

    @Test func callBlock() throws {
        #expect(try render("{% macro wrap(t) %}[{{ t }}:{{ caller() }}]{% endmacro %}{% call wrap('x') %}inside{% endcall %}{% macro each(items) %}{% for i in items %}{{ caller(i) }}{% endfor %}{% endmacro %}{% call(item) each([1, 2]) %}<{{ item }}>{% endcall %}", [:]) == "[x:inside]<1><2>")
    }

    @Test func filterBlock() throws {
        #expect(try render("{% filter upper %}hello {{ name }}{% endfilter %}", ["name": "x"]) == "HELLO X")
    }

    @Test func nestedLoops() throws {
        #expect(try render("{% for row in [[1, 2], [3]] %}{% for c in row %}{{ loop.index }}:{{ c }} {% endfor %}/{{ loop.index }} {% endfor %}", [:]) == "1:1 2:2 /1 1:3 /2 ")
    }
}

/// Filters, tojson as transformers defines it.
@Suite struct JinjaFilterTests {
    @Test func filtersText() throws {
        #expect(try render("{{ '  hi  ' | trim }}|{{ 'ab' | upper }}|{{ 'AB' | lower }}|{{ 'hELLO world' | capitalize }}|{{ 'hello big-world' | title }}|{{ 'a-b-c' | replace('-', '+') }}|{{ 1 | string }}|{{ '<a & b>' | e }}|{{ '<x>' | safe }}", [:]) == "hi|AB|ab|Hello world|Hello Big-World|a+b+c|1|&lt;a &amp; b&gt;|<x>")
    }

    @Test func filtersLength() throws {
        #expect(try render("{{ 'hello' | length }} {{ [1, 2] | count }} {{ {'a': 1} | length }} {{ 'héllo' | length }}", [:]) == "5 2 1 5")
    }

    @Test func filtersDefault() throws {
        #expect(try render("{{ x | default('d') }} {{ none | default('d') }} {{ '' | default('d', true) }} {{ 0 | d('zero', boolean=true) }} {{ 'v' | d('d') }}", [:]) == "d None d zero v")
    }

    @Test func filtersLists() throws {
        #expect(try render("{{ [3, 1, 2] | first }} {{ [3, 1, 2] | last }} {{ 'abc' | list }} {{ [1, 2, 3] | join(', ') }} {{ ['a', 'B', 'A', 'b'] | unique | list }} {{ [3, 1, 2] | sort }} {{ [3, 1, 2] | sort(reverse=true) }} {{ [1, 2] | reverse | list }} {{ [1, 2, 3] | sum }} {{ [4, 2, 8] | min }} {{ [4, 2, 8] | max }}", [:]) == "3 2 ['a', 'b', 'c'] 1, 2, 3 ['a', 'B'] [1, 2, 3] [3, 2, 1] [2, 1] 6 2 8")
    }

    @Test func filtersNumbers() throws {
        #expect(try render("{{ '42' | int }} {{ 3.9 | int }} {{ 'x' | int }} {{ 'x' | int(7) }} {{ '2.5' | float }} {{ 3 | float }} {{ -3 | abs }} {{ -2.5 | abs }} {{ 2.567 | round(2) }} {{ 2.5 | round }}", [:]) == "42 3 0 7 2.5 3.0 3 2.5 2.57 2.0")
    }

    @Test func filtersSelect() throws {
        #expect(try render("{{ msgs | selectattr('role', 'equalto', 'system') | map(attribute='content') | list }} {{ msgs | rejectattr('role', 'eq', 'system') | map(attribute='role') | join(',') }} {{ msgs | selectattr('tool') | list | length }} {{ [1, 2, 3, 4] | select('odd') | list }} {{ [1, 2, 3, 4] | reject('even') | list }} {{ ['a', 'b'] | map('upper') | list }}", ["msgs": [["role": "system", "content": "S"], ["role": "user", "content": "U", "tool": true], ["role": "assistant", "content": "A"]]]) == "['S'] user,assistant 1 [1, 3] [1, 3] ['A', 'B']")
    }

    @Test func filtersItems() throws {
        #expect(try render("{% for k, v in d | items %}{{ k }}:{{ v }} {% endfor %}{% for k, v in d | dictsort %}{{ k }}{{ v }}{% endfor %}", ["d": ["b": 1, "a": 2]]) == "b:1 a:2 a2b1")
    }

    @Test func tojsonCompact() throws {
        #expect(try render("{{ d | tojson }}", ["d": ["name": "f", "args": [1, 2.0, nil, true, "é\"\n\t"], "empty": [:] as JinjaValue, "nested": ["list": [] as JinjaValue]]]) == "{\"name\": \"f\", \"args\": [1, 2.0, null, true, \"é\\\"\\n\\t\"], \"empty\": {}, \"nested\": {\"list\": []}}")
    }

    @Test func tojsonIndent() throws {
        #expect(try render("{{ d | tojson(indent=4) }}", ["d": ["name": "f", "params": ["type": "object", "props": [1, "two"]], "e": [] as JinjaValue, "o": [:] as JinjaValue]]) == "{\n    \"name\": \"f\",\n    \"params\": {\n        \"type\": \"object\",\n        \"props\": [\n            1,\n            \"two\"\n        ]\n    },\n    \"e\": [],\n    \"o\": {}\n}")
    }

    @Test func tojsonIndentAndScalars() throws {
        #expect(try render("{{ [1, [2, 3]] | tojson(indent=2) }} {{ 'x' | tojson }} {{ none | tojson }} {{ 1.5 | tojson }} {{ {'b': 1, 'a': 2} | tojson(sort_keys=true) }}", [:]) == "[\n  1,\n  [\n    2,\n    3\n  ]\n] \"x\" null 1.5 {\"a\": 2, \"b\": 1}")
    }

    @Test func tojsonArguments() throws {
        #expect(try render("{{ d | tojson(true) }} {{ d | tojson(ensure_ascii=false) }} {{ d | tojson(false, 1) }} {{ d | tojson(separators=(',', ':')) }}", ["d": ["k": ["é", "😀"]]]) == "{\"k\": [\"\\u00e9\", \"\\ud83d\\ude00\"]} {\"k\": [\"é\", \"😀\"]} {\n \"k\": [\n  \"é\",\n  \"😀\"\n ]\n} {\"k\":[\"é\",\"😀\"]}")
    }

    @Test func filterChainWithArgs() throws {
        #expect(try render("{{ '  A b  ' | trim | lower | replace(' ', '_') }}", [:]) == "a_b")
    }

    @Test func indentFilter() throws {
        let template = #"""
            {{ 'a
            b

            c' | indent(2) }}|{{ 'a
            b' | indent(2, true) }}
            """#
        let context: [String: JinjaValue] = [:]
        let expected = #"""
            a
              b

              c|  a
              b
            """#
        #expect(try render(template, context) == expected)
    }
}
