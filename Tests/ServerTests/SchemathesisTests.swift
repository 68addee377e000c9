import Foundation
import Testing

/// Schemathesis (PyPI, Tests/requirements.txt) generates requests from /openapi.json, valid and
/// not, for a bounded number of cases: no 5xx, no crash, responses as the document describes them
/// (and a 405 for a method a path does not take), and the server healthy afterwards.
@Suite struct SchemathesisTests {
    /// Cases per operation in the fuzzing phase (the coverage phase adds its boundary cases).
    static let examples = 25
    /// A short context bounds what any request can cost: max_tokens defaults to the rest of it, and
    /// anything larger is a 400 (the server must refuse, not hang). Room for the chat template's
    /// default system prompt (about 30 tokens) and a short message.
    static let contextLength = 40
    static let model = "smol"

    /// The served document, narrowed so that valid requests are cheap and reach the engine:
    /// `model` is the served one (any other is a 404, which BadInputTests checks), and requests
    /// generate at most 2 tokens, 2 choices. Negative cases still break these and the real rules.
    static func fuzzedDocument(_ served: String) throws -> Data {
        var document = try ServerProcess.object(served)
        guard var components = document["components"] as? [String: Any], var schemas = components["schemas"] as? [String: Any] else {
            throw TestFailure("no components.schemas in /openapi.json")
        }
        func narrow(_ schema: Any?, cheap: Bool) throws -> [String: Any] {
            guard var schema = schema as? [String: Any], var properties = schema["properties"] as? [String: Any] else {
                throw TestFailure("a request schema without properties in /openapi.json")
            }
            properties["model"] = ["const": model]
            if cheap {
                let small: [String: Any] = ["type": "integer", "minimum": 1, "maximum": 2]
                properties["max_tokens"] = small
                properties["n"] = small
                if properties["max_completion_tokens"] != nil { properties["max_completion_tokens"] = small }
                schema["required"] = (schema["required"] as? [String] ?? []) + ["max_tokens"]
            }
            schema["properties"] = properties
            return schema
        }
        schemas["CompletionRequest"] = try narrow(schemas["CompletionRequest"], cheap: true)
        schemas["ChatCompletionRequest"] = try narrow(schemas["ChatCompletionRequest"], cheap: true)
        schemas["DetokenizeRequest"] = try narrow(schemas["DetokenizeRequest"], cheap: false)
        var tokenize = schemas["TokenizeRequest"] as? [String: Any] ?? [:]
        tokenize["anyOf"] = try (tokenize["anyOf"] as? [Any] ?? []).map { try narrow($0, cheap: false) }
        schemas["TokenizeRequest"] = tokenize
        components["schemas"] = schemas
        document["components"] = components
        return try JSONSerialization.data(withJSONObject: document)
    }

    /// `python3 -m <arguments>` in `directory`, where schemathesis leaves its replay cache (.schemathesis).
    static func python(in directory: URL, _ arguments: [String]) throws -> (output: String, status: Int32) {
        try ServerProcess.run("/usr/bin/env", ["python3", "-m"] + arguments, in: directory)
    }

    @Test func schemathesisFindsNoServerErrors() throws {
        let check = try ServerProcess.python("-c", ["import schemathesis"])
        try #require(check.status == 0, "schemathesis is missing: pip install -r Tests/requirements.txt\n\(check.output)")

        let server = try ServerProcess(arguments: ["--served-model-name", Self.model, "--max-model-len", "\(Self.contextLength)"])
        let served = try server.get("/openapi.json")
        try #require(served.status == 200)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-schemathesis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let document = directory.appendingPathComponent("openapi.json")
        try Self.fuzzedDocument(served.body).write(to: document)

        let run = try Self.python(in: directory, [
            "schemathesis.cli", "run", document.path, "--url", server.base,
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,unsupported_method",
            "--phases", "coverage,fuzzing",
            "--max-examples", "\(Self.examples)",
            "--seed", "13",
            // One worker: with two, hypothesis failed inside ast.parse (a SystemError of CPython 3.11).
            "--workers", "1",
            "--request-timeout", "60",
            "--generation-database", "none",
            "--suppress-health-check", "all",
            "--report-dir", directory.appendingPathComponent("report").path,
            "--no-color",
        ])
        #expect(run.status == 0, "schemathesis found failures (exit \(run.status)):\n\(run.output.suffix(12000))\nserver log:\n\(server.log().suffix(4000))")
        #expect(run.output.contains("passed"), "\(run.output.suffix(2000))")
        #expect(server.isRunning, "the server died:\n\(server.log().suffix(4000))")
        #expect(try server.get("/health").status == 200)
        let completion = try server.post("/v1/completions", #"{"prompt": "Hello", "max_tokens": 2}"#)
        #expect(completion.status == 200, "\(completion.body)")
    }
}
