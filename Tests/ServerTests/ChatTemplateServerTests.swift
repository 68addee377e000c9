import Foundation
import Testing

/// The six real chat templates through the server's chat path: every conversation of the chat
/// corpus (system prompts, several turns, tools and tool calls, an assistant turn last,
/// non-ASCII text, template errors) sent as a chat request must come out as the tokens of
/// jinja2's rendering, or as a 400 carrying the template's own `raise_exception` message
/// (chat_template_server_check.py). SmolLM2's template is the embedded model's own, read from
/// its GGUF; the others are given with `--chat-template FILE`, as a vLLM user would.
@Suite(.serialized) struct ChatTemplateServerTests {
    static let script = ServerProcess.resource("chat_template_server_check.py")

    @Test func theModelsOwnTemplateMatchesJinja2() throws {
        let server = try ServerProcess.sharedServer()
        try Self.check("smollm2-135m-instruct", server)
    }

    @Test(arguments: ["llama-3.1-instruct", "llama-2-chat", "mistral-instruct-v0.3", "qwen2.5-instruct", "yi-1.5-chat"])
    func aChatTemplateGivenOnTheCommandLineMatchesJinja2(slug: String) throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-\(slug)-\(UUID().uuidString).jinja").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        let written = try ServerProcess.python(Self.script, ["--write-template", slug, file])
        try #require(written.status == 0, "\(written.output)")
        // Each with its family's tool-call parser, as a vLLM user would serve it.
        let parser = slug.hasPrefix("llama-3") ? "llama3_json" : "hermes"
        let server = try ServerProcess(arguments: ["--chat-template", file, "--enable-auto-tool-choice", "--tool-call-parser", parser])
        defer { _ = server.stop() }
        try Self.check(slug, server)
        // A chat completion with tools goes through the same path to the engine; the answer is
        // either content or calls, each in OpenAI's shape.
        let tools = #"[{"type": "function", "function": {"name": "get_time", "description": "The time in a city", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]"#
        let (body, status) = try server.post("/v1/chat/completions", """
            {"messages": [{"role": "user", "content": "What time is it in Lisbon?"}], "tools": \(tools), "max_tokens": 3, "temperature": 0}
            """)
        #expect(status == 200, "\(body)")
        let choice = try #require((try ServerProcess.object(body)["choices"] as? [[String: Any]])?.first)
        let message = try #require(choice["message"] as? [String: Any])
        if choice["finish_reason"] as? String == "tool_calls" {
            #expect((message["tool_calls"] as? [[String: Any]])?.isEmpty == false, "\(body)")
        } else {
            #expect(message["content"] is String && message["tool_calls"] == nil, "\(body)")
        }
    }

    @Test func toolCallFlagsComeTogether() throws {
        for (arguments, words) in [(["--enable-auto-tool-choice"], "--tool-call-parser"),
                                   (["--enable-auto-tool-choice", "--tool-call-parser", "pythonic"], "must be one of hermes, llama3_json")] {
            let started = Result { try ServerProcess(arguments: arguments, timeout: 20) }
            guard case .failure(let error) = started else {
                Issue.record("the server started with \(arguments)")
                continue
            }
            #expect("\(error)".contains(words), "\(error)")
        }
    }

    @Test func aTemplateThatDoesNotParseStopsTheServerFromStarting() throws {
        let started = Result { try ServerProcess(arguments: ["--chat-template", "{% if %}"], timeout: 20) }
        guard case .failure(let error) = started else {
            Issue.record("the server started with a broken --chat-template")
            return
        }
        #expect("\(error)".contains("--chat-template"), "\(error)")
    }

    @Test func forcingAToolCallIsRefusedByName() throws {
        let server = try ServerProcess.sharedServer()
        let (body, status) = try server.post("/v1/chat/completions", """
            {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "required", "max_tokens": 1}
            """)
        #expect(status == 400 && body.contains("tool_choice"), "\(body)")
        let (badTools, badStatus) = try server.post("/v1/chat/completions", """
            {"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}], "max_tokens": 1}
            """)
        #expect(badStatus == 400 && badTools.contains("tools[0].function"), "\(badTools)")
    }

    static func check(_ slug: String, _ server: ServerProcess) throws {
        let run = try ServerProcess.python(script, ["--check", slug, "--base", server.base])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("conversations agree"), "\(run.output)")
    }
}
