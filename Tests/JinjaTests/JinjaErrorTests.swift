import Jinja
import Testing

/// Bad templates and failing renders give a `JinjaError` that says what and where, never a crash.
@Suite struct JinjaErrorTests {
    private func syntaxError(_ source: String) -> JinjaError? {
        do {
            _ = try JinjaTemplate(source)
            return nil
        } catch let error as JinjaError {
            return error
        } catch {
            return nil
        }
    }

    private func renderError(_ source: String, _ context: [String: JinjaValue] = [:]) -> JinjaError? {
        do {
            _ = try JinjaTemplate(source).render(context)
            return nil
        } catch let error as JinjaError {
            return error
        } catch {
            return nil
        }
    }

    @Test func raiseExceptionCarriesTheTemplateMessage() {
        let template = """
            {%- for m in messages %}
                {%- if m.role not in ['user', 'assistant'] %}
                    {{- raise_exception('Unknown role: ' ~ m.role) }}
                {%- endif %}
                {{- m.content }}
            {%- endfor %}
            """
        let error = renderError(template, ["messages": [["role": "user", "content": "a"], ["role": "robot", "content": "b"]]])
        #expect(error?.kind == .raised)
        #expect(error?.message == "Unknown role: robot")
        #expect(error?.description == "template raised an exception: Unknown role: robot")
    }

    @Test func unterminatedTagsNamePosition() {
        let variable = syntaxError("line one\n  {{ name ")
        #expect(variable?.kind == .syntax)
        #expect(variable?.line == 2 && variable?.column == 3)
        #expect(variable?.message.contains("'}}'") == true)

        let block = syntaxError("{% if x ")
        #expect(block?.line == 1 && block?.column == 1)
        #expect(block?.message.contains("'%}'") == true)

        let comment = syntaxError("ok {# never closed")
        #expect(comment?.message.contains("comment") == true)
        #expect(syntaxError("{{ 'open string }}")?.message.contains("unterminated string") == true)
        #expect(syntaxError("{% raw %}abc")?.message.contains("raw") == true)
    }

    @Test func unclosedAndStrayBlocks() {
        let unclosed = syntaxError("{% for x in y %}\n{{ x }}")
        #expect(unclosed?.kind == .syntax)
        #expect(unclosed?.message.contains("'endfor'") == true)
        #expect(syntaxError("{% endif %}")?.message.contains("unexpected 'endif'") == true)
        #expect(syntaxError("{% if a %}{% endfor %}") != nil)
        #expect(syntaxError("{% frobnicate %}")?.message.contains("unknown statement 'frobnicate'") == true)
        #expect(syntaxError("{% break %}")?.message.contains("outside of a for loop") == true)
    }

    @Test func badExpressions() {
        let e = syntaxError("a\nb {{ 1 + }}")
        #expect(e?.line == 2)
        #expect(e?.column == 10)
        #expect(syntaxError("{{ (1, 2 }}") != nil)
        #expect(syntaxError("{{ [1, 2 }}") != nil)
        #expect(syntaxError("{{ x[] }}") != nil)
        #expect(syntaxError("{{ a b }}") != nil)
        #expect(syntaxError("{{ 1 $ 2 }}")?.message.contains("unexpected character") == true)
        #expect(syntaxError("{{ f(a=1, 2) }}") != nil)
        #expect(syntaxError("{{ 99999999999999999999999 }}") != nil)
        #expect(syntaxError(String(repeating: "(", count: 5000)) == nil, "plain text, not a tag")
        #expect(syntaxError("{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}")?.message.contains("nested too deeply") == true)
    }

    @Test func unknownFilterAndTest() {
        let filter = renderError("{{ 'x' | frobnicate }}")
        #expect(filter?.kind == .runtime)
        #expect(filter?.message == "no filter named 'frobnicate'")
        #expect(filter?.line == 1 && filter?.column == 10)
        #expect(renderError("{{ 1 is frobnicated }}")?.message == "no test named 'frobnicated'")
    }

    @Test func callingNonCallables() {
        #expect(renderError("{{ 'abc'() }}")?.message == "'str' object is not callable")
        #expect(renderError("{{ nothing() }}")?.message.contains("undefined") == true)
        #expect(renderError("{{ x.y.z }}", ["x": [:] as JinjaValue])?.message.contains("undefined") == true)
        #expect(renderError("{{ 'a'.nope() }}")?.kind == .runtime)
    }

    @Test func badOperands() {
        #expect(renderError("{{ 1 + 'a' }}")?.message == "unsupported operand type(s) for +: 'int' and 'str'")
        // Python words it differently when a str or list is on the left (chat templates hit it
        // with `'\n' + message.content` on a tool-call turn whose content is None).
        #expect(renderError("{{ 'a' + none }}")?.message == "can only concatenate str (not \"NoneType\") to str")
        #expect(renderError("{{ [1] + 'a' }}")?.message == "can only concatenate list (not \"str\") to list")
        #expect(renderError("{{ none + 'a' }}")?.message == "unsupported operand type(s) for +: 'NoneType' and 'str'")
        #expect(renderError("{{ 1 // 0 }}")?.message.contains("by zero") == true)
        #expect(renderError("{{ 1 < 'a' }}")?.message.contains("not supported") == true)
        #expect(renderError("{% for x in 3 %}{% endfor %}")?.message == "'int' object is not iterable")
        #expect(renderError("{{ 9223372036854775807 + 1 }}")?.message == "integer overflow")
        #expect(renderError("{{ range(10000000) | length }}")?.message.contains("range too big") == true)
        #expect(renderError("{{ x | tojson }}")?.message.contains("not JSON serializable") == true)
        #expect(renderError("{% set a, b = [1] %}")?.message.contains("unpack") == true)
        #expect(renderError("{% set x.y = 1 %}")?.message.contains("namespace") == true)
    }

    @Test func runawayMacroRecursionStops() {
        let error = renderError("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}")
        #expect(error?.message.contains("recursed too deeply") == true)
    }

    @Test func strftimeNowFormats() throws {
        let year = try render("{{ strftime_now('%Y') }}")
        #expect(year.count == 4 && Int(year) != nil)
        #expect(try render("{{ strftime_now('%d %b %Y') | length }}") == "11")
    }

    @Test func swiftValueConstruction() throws {
        let context: [String: JinjaValue] = [
            "s": JinjaValue("x"), "i": JinjaValue(2), "d": JinjaValue(0.5), "b": JinjaValue(false),
            "l": JinjaValue(["a", "b"]), "m": JinjaValue(["z": 1, "a": 2]), "p": JinjaValue(pairs: [("z", 1), ("a", 2)]),
            "o": JinjaValue(nil as String?),
        ]
        #expect(try render("{{ s }} {{ i }} {{ d }} {{ b }} {{ l }} {{ m }} {{ p }} {{ o }}", context)
            == "x 2 0.5 False ['a', 'b'] {'a': 2, 'z': 1} {'z': 1, 'a': 2} None")
    }

    @Test func plainOptionsKeepWhitespace() throws {
        let template = try JinjaTemplate("  {% if true %}\nx\n{% endif %}\n", options: .plain)
        #expect(try template.render([:]) == "  \nx\n")
    }
}
