import Jinja
import Testing

/// Random template text built from Jinja's own pieces: parsing and rendering either succeed or
/// throw a `JinjaError`; nothing crashes or hangs.
@Suite struct JinjaRandomInputTests {
    static let pieces = ["{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", " if ", " for ", " in ", " endif ", " endfor ",
                         " else ", " elif ", " set ", " = ", " macro ", " endmacro ", " call ", " endcall ", "x", "messages", "loop.index",
                         "'a'", "\"b\"", "1", "2.5", "(", ")", "[", "]", "{", "}", ",", ":", "|", "tojson", "length", "join(", ".",
                         "+", "-", "*", "/", "//", "%", "**", "~", " and ", " or ", " not ", " is ", " defined", "==", "!=", "<", ">",
                         "\n", " ", "\t", "raise_exception(", "namespace(", "range(", "ns.x", "[::-1]", "[1:]", "\\", "é", "\u{0}"]

    @Test func randomTemplatesParseOrFailCleanly() {
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6364136223846793005 &+ 1442695040888963407
            return Int(truncatingIfNeeded: state >> 33)
        }
        let context: [String: JinjaValue] = ["messages": [["role": "user", "content": "hi"]], "x": 3]
        var rendered = 0, failed = 0
        for _ in 0..<20_000 {
            let source = (0..<(1 + next() % 24)).map { _ in Self.pieces[next() % Self.pieces.count] }.joined()
            do {
                _ = try JinjaTemplate(source).render(context)
                rendered += 1
            } catch is JinjaError {
                failed += 1
            } catch {
                Issue.record("\(source.debugDescription) threw \(error), not a JinjaError")
            }
        }
        #expect(rendered > 0 && failed > 0)
    }
}
