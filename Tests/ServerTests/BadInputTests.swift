import Foundation
import Testing

/// Each kind of bad input gets a 4xx in OpenAI's error shape whose message names the problem, and
/// the server keeps serving. One server of its own: an API key, a small body limit and a short
/// context, so every check is cheap.
@Suite struct BadInputTests {
    static let key = "sk-bad-input-test"
    static let bodyLimit = 65536
    static let contextLength = 256

    struct Client {
        let server: ServerProcess
        var auth: [String] { ["Authorization: Bearer \(BadInputTests.key)"] }

        /// POSTs raw bytes (from a file, so they need not be valid UTF-8 or fit on a command line).
        func post(_ path: String, bytes: [UInt8], headers: [String]? = nil) throws -> (body: String, status: Int) {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-body-\(UUID().uuidString)")
            try Data(bytes).write(to: file)
            defer { try? FileManager.default.removeItem(at: file) }
            return try ServerProcess.curl(["-X", "POST", "-H", "Content-Type: application/json"] + (headers ?? auth).flatMap { ["-H", $0] }
                                          + ["--data-binary", "@" + file.path, server.base + path])
        }

        /// Expects `status` with `{"error": {"message", "type", "param", "code"}}` whose message contains each of `words`.
        func expectError(_ path: String, _ body: String, status: Int = 400, naming words: [String], param: String? = nil,
                         headers: [String]? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
            try expectError(path, bytes: Array(body.utf8), status: status, naming: words, param: param, headers: headers,
                            sourceLocation: sourceLocation)
        }

        func expectError(_ path: String, bytes: [UInt8], status: Int = 400, naming words: [String], param: String? = nil,
                         headers: [String]? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let answer = try post(path, bytes: bytes, headers: headers)
            let shown = String(decoding: bytes.prefix(120), as: UTF8.self)
            #expect(answer.status == status, "\(path) \(shown): \(answer.body)", sourceLocation: sourceLocation)
            let error = (try? ServerProcess.object(answer.body))?["error"] as? [String: Any]
            #expect(error?["type"] is String && error?.keys.contains("param") == true && error?.keys.contains("code") == true,
                    "not OpenAI's error shape: \(answer.body)", sourceLocation: sourceLocation)
            let message = error?["message"] as? String ?? ""
            for word in words {
                #expect(message.contains(word), "\(path) \(shown): the message should name '\(word)': \(message)", sourceLocation: sourceLocation)
            }
            if let param { #expect(error?["param"] as? String == param, "\(answer.body)", sourceLocation: sourceLocation) }
        }
    }

    @Test func badInputGetsANamed4xxAndTheServerStaysUp() throws {
        let server = try ServerProcess(arguments: ["--served-model-name", "smol", "--api-key", Self.key,
                                                   "--max-body-bytes", "\(Self.bodyLimit)", "--max-model-len", "\(Self.contextLength)"])
        let client = Client(server: server)
        let idle = try MetricsScrape(server.metrics())
        let idleMapped = try idle.value("vtensor:kv_chunks_mapped") - idle.value("vtensor:prefix_cache_chunks")
        let completions = "/v1/completions", chat = "/v1/chat/completions"

        // Malformed JSON, and JSON that is not an object.
        try client.expectError(completions, #"{"prompt": "x", "#, naming: ["malformed JSON"])
        try client.expectError(chat, #"[1, 2]"#, naming: ["JSON object"])
        // Invalid UTF-8 (a lone continuation byte inside a string).
        try client.expectError(completions, bytes: Array(#"{"prompt": "ab"#.utf8) + [0x80] + Array(#""}"#.utf8), naming: ["UTF-8", "offset 14"])
        // Wrong types.
        try client.expectError(completions, #"{"prompt": "x", "temperature": "hot"}"#, naming: ["'temperature'", "number"], param: "temperature")
        try client.expectError(completions, #"{"prompt": 5}"#, naming: ["'prompt'"], param: "prompt")
        try client.expectError(completions, #"{"prompt": "x", "stream": "yes"}"#, naming: ["'stream'", "boolean"], param: "stream")
        try client.expectError(chat, #"{"messages": "hello"}"#, naming: ["'messages'"], param: "messages")
        try client.expectError(chat, #"{"messages": [{"role": "user", "content": 7}]}"#, naming: ["messages[0].content"])
        try client.expectError(completions, #"{"prompt": "x", "model": 3}"#, naming: ["'model'", "string"], param: "model")
        try client.expectError(completions, #"{"prompt": "x", "stop_token_ids": [1, 2.5]}"#, naming: ["'stop_token_ids'", "integer"], param: "stop_token_ids")
        try client.expectError(completions, #"{"prompt": "x", "seed": 1e30}"#, naming: ["'seed'", "integer"], param: "seed")
        // An unknown model.
        try client.expectError(completions, #"{"model": "gpt-9", "prompt": "x"}"#, status: 404, naming: ["gpt-9"], param: "model")
        try client.expectError(chat, #"{"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}"#, status: 404, naming: ["gpt-9"])
        // A prompt over the context (the engine's longest sequence here is `contextLength` tokens).
        let long = Array(repeating: "word", count: Self.contextLength * 2).joined(separator: " ")
        try client.expectError(completions, #"{"prompt": "\#(long)", "max_tokens": 1}"#, naming: ["prompt has", "\(Self.contextLength)"], param: "prompt")
        try client.expectError(chat, #"{"messages": [{"role": "user", "content": "\#(long)"}], "max_tokens": 1}"#,
                               naming: ["prompt has", "\(Self.contextLength)"], param: "messages")
        // Negative, zero and huge max_tokens (huge: past the context, past Int, past any number).
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": -1}"#, naming: ["max_tokens", "-1"], param: "max_tokens")
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 0}"#, naming: ["max_tokens"], param: "max_tokens")
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 1000000}"#, naming: ["'max_tokens'", "1000000", "context"], param: "max_tokens")
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 9223372036854775807}"#, naming: ["'max_tokens'", "context"], param: "max_tokens")
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 1e300}"#, naming: ["max_tokens"], param: "max_tokens")
        try client.expectError(chat, #"{"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 100000}"#,
                               naming: ["'max_completion_tokens'", "context"], param: "max_completion_tokens")
        // `n` over the limit.
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 1, "n": 100000}"#, naming: ["'n'"], param: "n")
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 1, "n": 0}"#, naming: ["'n'"], param: "n")
        // A priority on a server that does not schedule by it, and one that is not an integer.
        try client.expectError(completions, #"{"prompt": "x", "max_tokens": 1, "priority": 2}"#, naming: ["priority 2", "--schedule-policy priority"])
        try client.expectError(chat, #"{"messages": [{"role": "user", "content": "x"}], "max_tokens": 1, "priority": "high"}"#,
                               naming: ["'priority'", "integer"], param: "priority")
        // A body over --max-body-bytes.
        let big = #"{"prompt": ""# + String(repeating: "a", count: Self.bodyLimit) + #""}"#
        try client.expectError(completions, big, status: 413, naming: ["\(Self.bodyLimit) bytes", "--max-body-bytes"])
        try client.expectError("/tokenize", big, status: 413, naming: ["--max-body-bytes"])

        // A path we do not serve, and a route under the wrong method.
        try client.expectError("/v1/embeddings", #"{"input": "x"}"#, status: 404, naming: ["/v1/embeddings", "/openapi.json"])
        try client.expectError("/v1/models", #"{}"#, status: 405, naming: ["/v1/models", "GET"])

        // A missing or wrong key: 401 on the OpenAI API and on tokenization.
        for path in [completions, chat, "/tokenize", "/detokenize"] {
            try client.expectError(path, #"{"prompt": "x"}"#, status: 401, naming: ["API key"], headers: [])
            try client.expectError(path, #"{"prompt": "x"}"#, status: 401, naming: ["API key"], headers: ["Authorization: Bearer wrong"])
        }
        #expect(try server.get("/v1/models").status == 401)
        #expect(try server.get("/v1/models", headers: client.auth).status == 200)
        // Probes and documents stay open.
        for path in ["/health", "/metrics", "/version", "/openapi.json"] {
            #expect(try server.get(path).status == 200, "\(path) should not need the key")
        }

        // Still serving: a good request works after all of that.
        #expect(server.isRunning, "\(server.log())")
        let good = try client.post(completions, bytes: Array(#"{"prompt": "Hello", "max_tokens": 2}"#.utf8))
        #expect(good.status == 200, "\(good.body)")

        // And the KV memory in use is back to zero: nothing running or waiting, no chunk mapped
        // outside the prefix cache beyond what the idle server had (the last request's chunks
        // return in the step it finishes in; polled briefly for that step).
        var after = try MetricsScrape(server.metrics())
        let settleBy = Date().addingTimeInterval(10)
        func settled(_ m: MetricsScrape) throws -> Bool {
            try m.value("vllm:num_requests_running") == 0 && m.value("vllm:num_requests_waiting") == 0
                && m.value("vllm:kv_cache_usage_perc") == 0
                && m.value("vtensor:kv_chunks_mapped") - m.value("vtensor:prefix_cache_chunks") == idleMapped
        }
        while try !settled(after) && Date() < settleBy {
            usleep(100_000)
            after = try MetricsScrape(server.metrics())
        }
        let last = (try? server.metrics()) ?? ""
        #expect(try settled(after), "KV memory still in use after the bad input: \(last)")
        #expect(try after.value("vllm:request_success_total", ["finished_reason": "length", "model_name": "smol"]) >= 1)
    }
}
