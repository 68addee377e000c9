import Foundation
@testable import Server
import Testing

/// Structured output through `vtensor serve` on the embedded SmolLM2: OpenAI's
/// `response_format`, vLLM's `structured_outputs` and `guided_*` fields, forced tool calls,
/// streamed and whole; and the 400s for constraints the server cannot use.
@Suite struct StructuredOutputTests {
    static let person = #"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}, "mood": {"enum": ["happy", "sad"]}}, "required": ["name", "age", "mood"]}"#

    static func chat(_ extra: String, stream: Bool = false, content: String = "Describe a person as JSON.") -> String {
        #"{"messages": [{"role": "user", "content": "\#(content)"}], "max_tokens": 80, "temperature": 0, "stream": \#(stream)\#(extra)}"#
    }

    static func content(_ body: String) throws -> (text: String, finish: String?) {
        let object = try ServerProcess.object(body)
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        let message = choice["message"] as? [String: Any]
        return ((message?["content"] as? String) ?? (choice["text"] as? String) ?? "", choice["finish_reason"] as? String)
    }

    static func checkPerson(_ text: String) throws {
        let object = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
        #expect(Array(object.keys).sorted() == ["age", "mood", "name"], "\(text)")
        let name = try #require(object["name"] as? String, "\(text)")
        #expect(name.count <= 12)
        let age = try #require(object["age"] as? Int, "\(text)")
        #expect((0...120).contains(age))
        #expect(["happy", "sad"].contains(object["mood"] as? String ?? ""), "\(text)")
        // Properties come in the schema's order.
        let order = ["\"name\"", "\"age\"", "\"mood\""].map { text.range(of: $0)!.lowerBound }
        #expect(order == order.sorted(), "\(text)")
    }

    @Test func responseFormatJSONSchemaGivesValidJSON() throws {
        let server = try ServerProcess.sharedServer()
        let answer = try server.post("/v1/chat/completions",
                                     Self.chat(#", "response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": \#(Self.person)}}"#))
        #expect(answer.status == 200, "\(answer.body)")
        let (text, finish) = try Self.content(answer.body)
        try Self.checkPerson(text)
        #expect(finish == "stop")
    }

    @Test func jsonObjectModeAndTheVLLMFieldsOnCompletions() throws {
        let server = try ServerProcess.sharedServer()
        let object = try server.post("/v1/chat/completions", Self.chat(#", "response_format": {"type": "json_object"}"#))
        #expect(object.status == 200, "\(object.body)")
        let (text, finish) = try Self.content(object.body)
        #expect(text.hasPrefix("{"), "\(text)")
        // Any object may run past max_tokens; one that ends is whole.
        if finish == "stop" { #expect((try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any], "\(text)") }

        let choice = try server.post("/v1/completions", #"{"prompt": "Is the sky blue? Answer:", "max_tokens": 10, "structured_outputs": {"choice": ["yes", "no", "maybe not"]}}"#)
        #expect(choice.status == 200, "\(choice.body)")
        #expect(["yes", "no", "maybe not"].contains(try Self.content(choice.body).text), "\(choice.body)")

        let regex = try server.post("/v1/completions", #"{"prompt": "A code:", "max_tokens": 20, "guided_regex": "[A-Z]{2}-\\d{3}"}"#)
        #expect(regex.status == 200, "\(regex.body)")
        let code = try Self.content(regex.body).text
        #expect(code.wholeMatch(of: /[A-Z]{2}-[0-9]{3}/) != nil, "\(code)")

        let grammar = try server.post("/v1/completions", #"{"prompt": "Pick a colour:", "max_tokens": 10, "structured_outputs": {"grammar": "root ::= colour (\" or \" colour)?\ncolour ::= \"red\" | \"green\" | \"blue\""}}"#)
        #expect(grammar.status == 200, "\(grammar.body)")
        #expect(try Self.content(grammar.body).text.wholeMatch(of: /(red|green|blue)( or (red|green|blue))?/) != nil, "\(grammar.body)")

        let schema = try server.post("/v1/completions", #"{"prompt": "Person:", "max_tokens": 80, "guided_json": \#(Self.person)}"#)
        #expect(schema.status == 200, "\(schema.body)")
        try Self.checkPerson(try Self.content(schema.body).text)
    }

    /// (Batches of different make-up may round differently on the CPU, so the two answers are
    /// each checked, not compared.)
    @Test func streamedJSONIsValidToo() throws {
        let server = try ServerProcess.sharedServer()
        let extra = #", "structured_outputs": {"json": \#(Self.person)}"#
        let streamed = try server.post("/v1/chat/completions", Self.chat(extra, stream: true))
        let chunks = streamed.body.split(separator: "\n").filter { $0.hasPrefix("data: {") }.compactMap { try? ServerProcess.object(String($0.dropFirst(6))) }
        let text = chunks.compactMap { (($0["choices"] as? [[String: Any]])?.first?["delta"] as? [String: Any])?["content"] as? String }.joined()
        try Self.checkPerson(text)
        #expect((chunks.last?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String == "stop")
    }

    static let tools = #"[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"]}}}, {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}}, "required": ["zone"]}}}]"#

    static func calls(_ body: String) throws -> (calls: [(name: String, arguments: [String: Any])], finish: String?) {
        let object = try ServerProcess.object(body)
        let choice = try #require((object["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        let calls = try (message["tool_calls"] as? [[String: Any]] ?? []).map { call -> (String, [String: Any]) in
            let function = try #require(call["function"] as? [String: Any])
            #expect((call["id"] as? String)?.hasPrefix("call_") == true)
            let arguments = try #require(function["arguments"] as? String)
            return (function["name"] as? String ?? "", try #require(try JSONSerialization.jsonObject(with: Data(arguments.utf8)) as? [String: Any]))
        }
        return (calls, choice["finish_reason"] as? String)
    }

    @Test func aNamedToolChoiceForcesThatCall() throws {
        let server = try ServerProcess.sharedServer()
        let body = Self.chat(#", "tools": \#(Self.tools), "tool_choice": {"type": "function", "function": {"name": "get_weather"}}"#,
                             content: "What is the weather in Paris this week?")
        let answer = try server.post("/v1/chat/completions", body)
        #expect(answer.status == 200, "\(answer.body)")
        let (calls, finish) = try Self.calls(answer.body)
        #expect(finish == "tool_calls")
        #expect(calls.count == 1 && calls.first?.name == "get_weather", "\(answer.body)")
        #expect(calls.first?.arguments["city"] is String && (1...7).contains(calls.first?.arguments["days"] as? Int ?? 0), "\(answer.body)")

        // Streamed: the id and name first, then the arguments piece by piece.
        let streamed = try server.post("/v1/chat/completions", body.replacingOccurrences(of: #""stream": false"#, with: #""stream": true"#))
        let deltas = streamed.body.split(separator: "\n").filter { $0.hasPrefix("data: {") }
            .compactMap { try? ServerProcess.object(String($0.dropFirst(6))) }
            .compactMap { ($0["choices"] as? [[String: Any]])?.first }
        let pieces = deltas.compactMap { (($0["delta"] as? [String: Any])?["tool_calls"] as? [[String: Any]])?.first }
        #expect(pieces.first?["id"] is String && (pieces.first?["function"] as? [String: Any])?["name"] as? String == "get_weather")
        #expect(pieces.count > 2, "the arguments streamed in pieces")
        let arguments = pieces.compactMap { ($0["function"] as? [String: Any])?["arguments"] as? String }.joined()
        #expect((try? JSONSerialization.jsonObject(with: Data(arguments.utf8))) is [String: Any], "\(arguments)")
        #expect(deltas.last?["finish_reason"] as? String == "tool_calls")
    }

    @Test func requiredToolChoiceWithoutParallelCallsGivesOneCall() throws {
        let server = try ServerProcess.sharedServer()
        let answer = try server.post("/v1/chat/completions", Self.chat(#", "tools": \#(Self.tools), "tool_choice": "required", "parallel_tool_calls": false"#,
                                                                         content: "What time is it in Berlin?"))
        #expect(answer.status == 200, "\(answer.body)")
        let (calls, finish) = try Self.calls(answer.body)
        #expect(finish == "tool_calls")
        #expect(calls.count == 1, "\(answer.body)")
        for call in calls {
            #expect(["get_weather", "get_time"].contains(call.name))
            if call.name == "get_time" { #expect(["UTC", "CET"].contains(call.arguments["zone"] as? String ?? "")) }
        }
        // Streamed: the call's name, then its parameters piece by piece, adding up to the same call.
        let body = Self.chat(#", "tools": \#(Self.tools), "tool_choice": "required", "parallel_tool_calls": false"#, stream: true,
                             content: "What time is it in Berlin?")
        let streamed = try server.post("/v1/chat/completions", body)
        let entries = streamed.body.split(separator: "\n").filter { $0.hasPrefix("data: {") }
            .compactMap { try? ServerProcess.object(String($0.dropFirst(6))) }
            .compactMap { ($0["choices"] as? [[String: Any]])?.first }
            .compactMap { ($0["delta"] as? [String: Any])?["tool_calls"] as? [[String: Any]] }
        #expect(entries.allSatisfy { $0.count == 1 }, "one entry per call in a chunk")
        let pieces = entries.flatMap { $0 }
        #expect(pieces.count > 2, "the parameters streamed in pieces: \(streamed.body.prefix(600))")
        #expect((pieces.first?["function"] as? [String: Any])?["name"] as? String == calls.first?.name)
        let arguments = pieces.compactMap { ($0["function"] as? [String: Any])?["arguments"] as? String }.joined()
        #expect((try? JSONSerialization.jsonObject(with: Data(arguments.utf8))) is [String: Any], "\(arguments)")
    }

    /// `vtensor generate --input`: a line may carry the server's fields, and a flag constrains the rest.
    @Test func generateTakesTheFieldsPerLineAndFlagsForTheRest() throws {
        let input = FileManager.default.temporaryDirectory.appendingPathComponent("structured-\(UUID().uuidString).jsonl")
        defer { try? FileManager.default.removeItem(at: input) }
        try [#"{"prompt": "The capital of France is", "max_tokens": 8, "structured_outputs": {"choice": [" Paris", " Lyon"]}}"#,
             #"{"messages": [{"role": "user", "content": "A person"}], "max_tokens": 60, "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": \#(Self.person)}}}"#,
             #"{"prompt": "Count: one, two,", "max_tokens": 6}"#].joined(separator: "\n").write(to: input, atomically: true, encoding: .utf8)
        let (output, status) = try ServerProcess.vtensor(["generate", "--backend", "cpu", "--temperature", "0", "--regex", "[a-z ]{1,12}", "--input", input.path])
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n").compactMap { try? ServerProcess.object(String($0)) }.filter { $0["index"] != nil }
        #expect(lines.count == 3, "\(output)")
        guard lines.count == 3 else { return }
        #expect([" Paris", " Lyon"].contains(lines[0]["text"] as? String ?? ""), "\(lines[0])")
        try Self.checkPerson(lines[1]["text"] as? String ?? "")
        #expect((lines[2]["text"] as? String ?? "").wholeMatch(of: /[a-z ]{1,12}/) != nil, "the flag's pattern: \(lines[2])")
    }

    @Test func constraintsTheServerCannotUseAre400s() throws {
        let server = try ServerProcess.sharedServer()
        let cases: [(String, String, String)] = [
            (#", "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "format": "hostname-ish"}}}"#,
             "response_format", "format"),
            (#", "response_format": {"type": "xml"}"#, "response_format", "json_schema"),
            (#", "response_format": {"type": "json_object"}, "guided_regex": "a+""#, "guided_regex", "2 ways"),
            (#", "structured_outputs": {"regex": "(a"}"#, "structured_outputs", "regular expression"),
            (#", "structured_outputs": {"choice": []}"#, "structured_outputs", "non-empty"),
            (#", "structured_outputs": {"grammar": "root ::= item\nitem ::= \"x\" missing"}"#, "structured_outputs", "missing"),
            (#", "structured_outputs": {"regex": "a", "choice": ["b"]}"#, "structured_outputs", "exactly one"),
            (#", "tools": \#(Self.tools), "tool_choice": {"type": "function", "function": {"name": "nope"}}"#, "tool_choice", "\\\"nope\\\""),
            (#", "tool_choice": "required""#, "tool_choice", "tools"),
            (#", "tools": \#(Self.tools), "tool_choice": "required", "response_format": {"type": "json_object"}"#, "response_format", "tool_choice"),
        ]
        for (extra, param, fragment) in cases {
            let answer = try server.post("/v1/chat/completions", Self.chat(extra))
            #expect(answer.status == 400, "\(extra): \(answer.body)")
            let error = (try? ServerProcess.object(answer.body))?["error"] as? [String: Any]
            #expect(error?["param"] as? String == param, "\(extra): \(answer.body)")
            #expect(answer.body.contains(fragment), "\(extra): \(answer.body)")
        }
        // The server still serves.
        #expect(try server.post("/v1/completions", #"{"prompt": "Hi", "max_tokens": 2}"#).status == 200)
    }
}
