import Testing
import Tokenizers
@testable import Structured

/// The request fields that ask for structured output, read once for the server and `generate --input`.
@Suite struct ConstraintFieldsTests {
    static func read(_ body: String) throws -> (constraint: OutputConstraint, field: String)? {
        try OutputConstraint.fromRequest(try JSON.parse(body, source: "test"))
    }

    static func failure(_ body: String) -> ConstraintFieldError? {
        do { _ = try read(body); return nil } catch let e as ConstraintFieldError { return e } catch { return nil }
    }

    @Test func eachFieldGivesItsConstraint() throws {
        #expect(try Self.read(#"{"prompt": "x"}"#) == nil)
        #expect(try Self.read(#"{"response_format": {"type": "text"}}"#) == nil)
        #expect(try Self.read(#"{"response_format": null, "guided_regex": null}"#) == nil)
        #expect(try Self.read(#"{"response_format": {"type": "json_object"}}"#)?.constraint == .jsonObject)
        // Key order is kept (properties are generated in that order), written compactly.
        let schema = try Self.read(#"{"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": {"properties": {"b": {}, "a": {}}}}}}"#)
        #expect(schema?.constraint == .jsonSchema(#"{"properties":{"b":{},"a":{}}}"#) && schema?.field == "response_format")
        #expect(try Self.read(#"{"structured_outputs": {"json": "{\"type\": \"string\"}"}}"#)?.constraint == .jsonSchema(#"{"type":"string"}"#))
        #expect(try Self.read(#"{"structured_outputs": {"regex": "a+", "backend": "xgrammar"}}"#)?.constraint == .regex("a+"))
        #expect(try Self.read(#"{"structured_outputs": {"choice": ["x", "y"]}}"#)?.constraint == .choice(["x", "y"]))
        #expect(try Self.read(#"{"structured_outputs": {"json_object": true}}"#)?.constraint == .jsonObject)
        #expect(try Self.read(#"{"guided_grammar": "root ::= \"a\""}"#)?.constraint == .grammar(#"root ::= "a""#))
        #expect(try Self.read(#"{"guided_choice": ["p"]}"#)?.field == "guided_choice")
    }

    @Test func problemsNameTheirField() {
        let cases: [(String, String, String)] = [
            (#"{"response_format": {"type": "xml"}}"#, "response_format", "\"xml\""),
            (#"{"response_format": {"type": "json_schema"}}"#, "response_format", "json_schema"),
            (#"{"response_format": {"type": "json_schema", "json_schema": {"name": "n"}}}"#, "response_format", "schema' is required"),
            (#"{"response_format": {"type": "json_object"}, "guided_regex": "a"}"#, "guided_regex", "2 ways"),
            (#"{"structured_outputs": {"regex": "a", "choice": ["b"]}}"#, "structured_outputs", "exactly one"),
            (#"{"structured_outputs": {"lark": "x"}}"#, "structured_outputs", "structured_outputs.lark"),
            (#"{"structured_outputs": {"json": "{not json"}}"#, "structured_outputs", "not valid JSON"),
            (#"{"guided_json": [1]}"#, "guided_json", "JSON Schema object"),
            (#"{"guided_choice": ["", "b"]}"#, "guided_choice", "non-empty"),
            (#"{"guided_regex": ""}"#, "guided_regex", "non-empty"),
            (#"{"guided_whitespace_pattern": " *"}"#, "guided_whitespace_pattern", "not supported"),
        ]
        for (body, field, fragment) in cases {
            let error = Self.failure(body)
            #expect(error?.field == field, "\(body): \(String(describing: error))")
            #expect(error?.message.contains(fragment) == true, "\(body): \(String(describing: error))")
        }
    }
}
