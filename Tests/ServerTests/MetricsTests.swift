import Foundation
import Testing

/// GET /metrics: vLLM's names and types, read by our strict parser and by Prometheus's Python client.
@Suite struct MetricsFormatTests {
    static let gauges = ["vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc", "vllm:cache_config_info",
                         "vtensor:kv_chunks_mapped", "vtensor:kv_chunks_reserve", "vtensor:kv_device_memory_bytes",
                         "vtensor:prefix_cache_chunks"]
    static let counters = ["vllm:prompt_tokens_total", "vllm:generation_tokens_total", "vllm:request_success_total",
                           "vllm:num_preemptions_total", "vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total",
                           "vtensor:mapping_waits_total", "vtensor:mapping_wait_seconds_total", "vtensor:prefix_cache_takeovers_total",
                           "vtensor:synchronized_steps_total", "vtensor:structured_output_draws_total", "vtensor:structured_output_mask_seconds_total",
                           "vtensor:prompt_tokens_computed_total", "vtensor:prefix_cache_kept_chunks_total", "vtensor:prefix_cache_evicted_chunks_total",
                           "vtensor:prefix_cache_attach_failures_total", "vtensor:prefix_cache_publish_failures_total",
                           "vtensor:prefetches_total", "vtensor:prefetches_released_total", "vtensor:prefetches_aliased_ahead_total"]
    static let histograms = ["vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
                             "vllm:e2e_request_latency_seconds", "vllm:request_queue_time_seconds"]

    @Test func servesVLLMNamesInTextFormat() throws {
        let server = try ServerProcess.sharedServer()
        #expect(try server.post("/v1/completions", #"{"prompt": "Hello", "max_tokens": 3}"#).status == 200)
        let headers = try ServerProcess.curl(["-D", "-", "-o", "/dev/null", server.base + "/metrics"])
        #expect(headers.body.lowercased().contains("content-type: text/plain; version=0.0.4"), "\(headers.body)")

        let scrape = try MetricsScrape(server.metrics())
        for name in Self.gauges { #expect(scrape.types[name] == "gauge", "\(name)") }
        for name in Self.counters { #expect(scrape.types[name] == "counter", "\(name)") }
        for name in Self.histograms { #expect(scrape.types[name] == "histogram", "\(name)") }
        #expect(try scrape.value("vllm:num_requests_running", ["model_name": "smol"]) >= 0)
        for reason in ["stop", "length", "abort", "error"] {
            #expect(try scrape.value("vllm:request_success_total", ["finished_reason": reason, "model_name": "smol"]) >= 0)
        }
        // vLLM's bucket bounds, as its `le` strings.
        #expect(try scrape.value("vllm:time_to_first_token_seconds_bucket", ["le": "0.001"]) >= 0)
        #expect(try scrape.value("vllm:inter_token_latency_seconds_bucket", ["le": "0.025"]) >= 0)
        #expect(try scrape.value("vllm:e2e_request_latency_seconds_bucket", ["le": "7680.0"]) >= 1)
        let usage = try scrape.value("vllm:kv_cache_usage_perc")
        #expect((0...1).contains(usage))
        let config = scrape.values.keys.first { $0.name == "vllm:cache_config_info" }?.labels ?? [:]
        #expect(Int(config["block_size"] ?? "") ?? 0 > 0 && Int(config["num_gpu_blocks"] ?? "") ?? 0 > 0, "\(config)")

        let parsed = try ServerProcess.python(ServerProcess.resource("parse_metrics.py"), [server.base + "/metrics"])
        #expect(parsed.status == 0, "\(parsed.output)")
        let families = try ServerProcess.object(parsed.output.split(separator: "\n").last.map(String.init) ?? "")
        // The Python client names a counter family without `_total`.
        for name in Self.counters { #expect(families[String(name.dropLast(6))] as? String == "counter", "\(name): \(parsed.output)") }
        for name in Self.gauges { #expect(families[name] as? String == "gauge", "\(name)") }
        for name in Self.histograms { #expect(families[name] as? String == "histogram", "\(name)") }
    }
}

/// POST /reset_prefix_cache on a server without a prefix cache: a 400 that says why, with the
/// key (`--api-key` guards it like the API).
@Suite struct ResetPrefixCacheTests {
    @Test func refusedWithoutAPrefixCacheAndWithoutTheKey() throws {
        let server = try ServerProcess(arguments: ["--served-model-name", "smol", "--no-prefix-cache", "--api-key", "k3y"])
        defer { server.kill() }
        let bare = try server.post("/reset_prefix_cache", "")
        #expect(bare.status == 401, "\(bare.body)")
        let keyed = try server.post("/reset_prefix_cache", "", headers: ["Authorization: Bearer k3y"])
        #expect(keyed.status == 400 && keyed.body.contains("--no-prefix-cache"), "\(keyed.status) \(keyed.body)")
        let config = try MetricsScrape(server.metrics()).values.keys.first { $0.name == "vllm:cache_config_info" }?.labels ?? [:]
        #expect(config["enable_prefix_caching"] == "False", "\(config)")
    }

    /// Under `--api-key`, `bench serve` sends `OPENAI_API_KEY` with every request it makes: the
    /// completions, the model lookup at /v1/models (no --model given) and the reset.
    @Test func benchServeSendsTheKeyEverywhere() throws {
        let keyed = try ServerProcess(arguments: ["--served-model-name", "smol", "--api-key", "k3y"])
        defer { keyed.kill() }
        let arguments = ["bench", "serve", "--base-url", keyed.base, "--tokenizer", "embedded", "--num-prompts", "2", "--random-input-len", "8",
                         "--random-output-len", "2", "--reset-prefix-cache", "--no-progress"]
        let run = try ServerProcess.vtensor(arguments, environment: ["OPENAI_API_KEY": "k3y"])
        #expect(run.status == 0, "\(run.output)")
        #expect(run.output.contains("model \"smol\""), "the model should come from /v1/models: \(run.output)")
        #expect(!run.output.contains("reset_prefix_cache did not answer"), "\(run.output)")
        #expect(run.output.contains(/successful requests +2\n/) && !run.output.contains("HTTP 401"), "\(run.output)")
    }

    /// `bench serve --reset-prefix-cache` resets before each run, and says so when the server refuses.
    @Test func benchServeResetsBeforeEachRun() throws {
        let arguments = ["bench", "serve", "--tokenizer", "embedded", "--num-prompts", "2", "--random-input-len", "8",
                         "--random-output-len", "2", "--reset-prefix-cache", "--sweep-rates", "inf,inf", "--no-progress",
                         "--chart", FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-reset-\(UUID().uuidString).svg").path]
        let shared = try ServerProcess.sharedServer()
        let accepted = try ServerProcess.vtensor(arguments + ["--base-url", shared.base])
        #expect(accepted.status == 0 && !accepted.output.contains("reset_prefix_cache did not answer"), "\(accepted.output)")
        let uncached = try ServerProcess(arguments: ["--served-model-name", "smol", "--no-prefix-cache"])
        defer { uncached.kill() }
        let refused = try ServerProcess.vtensor(arguments + ["--base-url", uncached.base])
        #expect(refused.status == 0, "\(refused.output)")
        #expect(refused.output.components(separatedBy: "reset_prefix_cache did not answer 200").count - 1 == 2, "one note a run: \(refused.output)")
    }
}

/// A server of its own (nothing else sends to it, so counter deltas are exact): exact counter
/// deltas for a few requests, then the load test. A small batch, so requests queue, and small
/// steps: the tests run the debug build on two shared cores (some 20 tokens a second), where a
/// step of the default 512 prompt tokens takes half a minute, and an abort waits for the step.
@Suite(.serialized) struct MetricsAccountingTests {
    static let server: Result<ServerProcess, any Error> = Result {
        let server = try ServerProcess(arguments: ["--served-model-name", "smol", "--max-num-seqs", "8", "--max-num-batched-tokens", "32"])
        // A static is never deinitialized: stop the process when the test process exits.
        serverForExit = server
        atexit { MetricsAccountingTests.serverForExit?.kill() }
        return server
    }
    nonisolated(unsafe) private static var serverForExit: ServerProcess?

    /// Counters move by exactly what the responses' usage says; the histograms count each request.
    @Test func countersMatchUsage() throws {
        let server = try Self.server.get()
        let before = try MetricsScrape(server.metrics())
        let bodies = [
            ("/v1/completions", #"{"prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}"#),
            // Nearly any text has one of these soon: finish "stop".
            ("/v1/completions", #"{"prompt": "Once upon a time", "max_tokens": 16, "stop": [" ", "e", "."], "temperature": 0}"#),
            ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 7}"#),
        ]
        var prompt = 0, completion = 0, gaps = 0, reasons: [String: Int] = [:]
        for (path, body) in bodies {
            let response = try server.post(path, body)
            #expect(response.status == 200, "\(response.body)")
            let object = try ServerProcess.object(response.body)
            let usage = object["usage"] as? [String: Int] ?? [:]
            prompt += usage["prompt_tokens"] ?? 0
            completion += usage["completion_tokens"] ?? 0
            gaps += max(0, (usage["completion_tokens"] ?? 0) - 1)
            let reason = ((object["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String) ?? "?"
            reasons[reason, default: 0] += 1
        }
        // One streamed request, its usage from the last chunk.
        let streamed = try server.post("/v1/completions",
                                       #"{"prompt": "Hello", "max_tokens": 4, "stream": true, "stream_options": {"include_usage": true}}"#)
        let chunks = streamed.body.split(separator: "\n").filter { $0.hasPrefix("data: {") }.map { try? ServerProcess.object(String($0.dropFirst(6))) }
        let streamUsage = chunks.compactMap { $0?["usage"] as? [String: Int] }.last ?? [:]
        let streamFinish = chunks.compactMap { ($0?["choices"] as? [[String: Any]])?.first?["finish_reason"] as? String }.last ?? "?"
        prompt += streamUsage["prompt_tokens"] ?? 0
        completion += streamUsage["completion_tokens"] ?? 0
        gaps += max(0, (streamUsage["completion_tokens"] ?? 0) - 1)
        reasons[streamFinish, default: 0] += 1
        #expect(reasons["stop", default: 0] >= 1 && reasons["length", default: 0] >= 1, "\(reasons)")
        #expect(completion >= bodies.count + 1)

        let after = try MetricsScrape(server.metrics())
        func delta(_ name: String, _ labels: [String: String] = [:]) throws -> Double {
            try after.value(name, labels) - before.value(name, labels)
        }
        let requests = Double(bodies.count + 1)
        #expect(try delta("vllm:prompt_tokens_total") == Double(prompt))
        #expect(try delta("vllm:generation_tokens_total") == Double(completion))
        for reason in ["stop", "length", "abort", "error"] {
            #expect(try delta("vllm:request_success_total", ["finished_reason": reason]) == Double(reasons[reason, default: 0]), "\(reason)")
        }
        #expect(try delta("vllm:e2e_request_latency_seconds_count") == requests)
        #expect(try delta("vllm:request_queue_time_seconds_count") == requests)
        #expect(try delta("vllm:time_to_first_token_seconds_count") == requests)
        #expect(try delta("vllm:inter_token_latency_seconds_count") == Double(gaps))
        #expect(try delta("vllm:e2e_request_latency_seconds_sum") > 0)
        #expect(try after.value("vllm:num_requests_running") == 0)
        #expect(try after.value("vllm:num_requests_waiting") == 0)
        #expect(try after.value("vllm:kv_cache_usage_perc") == 0)
    }

    /// `cache_salt` splits the prefix cache: the same prompt hits what an earlier request of its
    /// own salt left, and nothing that another salt (or no salt) left. Bad salts are a 400.
    @Test func cacheSaltSplitsThePrefixCache() throws {
        let server = try Self.server.get()
        // A start no other test's prompt has: unsalted requests of the other tests share the
        // no-salt tree, and a match counts from the first token.
        let prompt = "Quokka probe 4711 with salts: the capital of France is Paris, the capital of Italy is Rome, and of Spain"
        func hits(_ salt: String?) throws -> Double {
            let before = try MetricsScrape(server.metrics())
            let field = salt.map { #", "cache_salt": "\#($0)""# } ?? ""
            let response = try server.post("/v1/completions", #"{"prompt": "\#(prompt)", "max_tokens": 2, "temperature": 0\#(field)}"#)
            #expect(response.status == 200, "\(response.body)")
            return try MetricsScrape(server.metrics()).value("vllm:prefix_cache_hits_total") - before.value("vllm:prefix_cache_hits_total")
        }
        _ = try hits("tenant-a")
        #expect(try hits("tenant-a") > 0, "the same salt must reuse its own prefix")
        #expect(try hits("tenant-b") == 0, "another salt must not see tenant-a's prefix")
        #expect(try hits(nil) == 0, "no salt must not see a salted prefix")
        #expect(try hits(nil) > 0)
        for (value, words) in [("5", "must be a string"), (#""""#, "must not be empty")] {
            let response = try server.post("/v1/completions", #"{"prompt": "Hi", "max_tokens": 1, "cache_salt": \#(value)}"#)
            #expect(response.status == 400 && response.body.contains("cache_salt") && response.body.contains(words), "\(response.body)")
        }
    }

    /// A client that gives up on a non-streamed request (nothing is written to it until the end)
    /// aborts it: the abort counter moves by one and the engine is idle again within seconds,
    /// not after the 200 tokens asked for (about a minute here).
    @Test func nonStreamedRequestAbortsWhenTheClientLeaves() throws {
        let server = try Self.server.get()
        let before = try MetricsScrape(server.metrics())
        _ = try? ServerProcess.curl(["--max-time", "2", "-X", "POST", "-H", "Content-Type: application/json", "--data-binary",
                                     #"{"prompt": "A long story:", "max_tokens": 200, "ignore_eos": true}"#,
                                     server.base + "/v1/completions"], quiet: true)
        var after = try MetricsScrape(server.metrics())
        let by = Date().addingTimeInterval(15)
        while try after.value("vllm:request_success_total", ["finished_reason": "abort"]) == before.value("vllm:request_success_total", ["finished_reason": "abort"])
                && Date() < by {
            usleep(200_000)
            after = try MetricsScrape(server.metrics())
        }
        #expect(try after.value("vllm:request_success_total", ["finished_reason": "abort"])
                - before.value("vllm:request_success_total", ["finished_reason": "abort"]) == 1)
        #expect(try after.value("vllm:generation_tokens_total") - before.value("vllm:generation_tokens_total") < 200)
        #expect(try after.value("vllm:num_requests_running") == 0)
    }

    /// 64 concurrent streaming clients for about a minute (VTENSOR_LOAD_SECONDS to change it),
    /// about a third of them closing their connection early (after a few events, or after a
    /// moment, often while their request still waits), and every stream still open
    /// closed at the end (aborting what still waits or runs). Afterwards the server is up, and
    /// /metrics agrees with what the clients saw. With O the streams opened (status 200), C those
    /// read to `[DONE]` and D = O - C those the client closed early, over the run:
    /// - the requests ended, summed over `finished_reason`, are O (each stream is one request,
    ///   ended once); `stop` and `length` are at least the completed streams' own reasons (a
    ///   closed stream may still have ended normally before its abort reached the engine);
    ///   `abort` is at most D; `error` is 0;
    /// - generated and prompt tokens are at least the completed streams' usage;
    /// - every ended request is in the end-to-end histogram (O more observations);
    /// and within a few seconds nothing runs or waits, no KV is in use, the warm reserve is back
    /// to its size before the load, and once `/reset_prefix_cache` empties the cache (before the
    /// load and after it) exactly as many chunks are mapped as before: nothing leaked.
    @Test func loadWithDisconnects() throws {
        let server = try Self.server.get()
        let seconds = ProcessInfo.processInfo.environment["VTENSOR_LOAD_SECONDS"].flatMap(Double.init) ?? 60
        /// Empties the prefix cache and waits until its chunks are unmapped; the scrape after.
        func resetPrefixCache() throws -> MetricsScrape {
            let reset = try server.post("/reset_prefix_cache", "")
            try #require(reset.status == 200, "POST /reset_prefix_cache: \(reset.status) \(reset.body)")
            var scrape = try MetricsScrape(server.metrics())
            let by = Date().addingTimeInterval(15)
            while try scrape.value("vtensor:prefix_cache_chunks") > 0 || scrape.value("vtensor:kv_chunks_mapped") > 0, Date() < by {
                usleep(200_000)
                scrape = try MetricsScrape(server.metrics())
            }
            return scrape
        }
        let before = try resetPrefixCache()
        let idleMapped = try before.value("vtensor:kv_chunks_mapped")
        #expect(try before.value("vtensor:prefix_cache_chunks") == 0)
        let idleReserve = try before.value("vtensor:kv_chunks_reserve")

        let run = try ServerProcess.python(ServerProcess.resource("load_clients.py"), [server.base, "\(seconds)", "64", "13"])
        try #require(run.status == 0, "\(run.output)")
        let seen = try ServerProcess.object(run.output.split(separator: "\n").last.map(String.init) ?? "")
        let opened = seen["opened"] as? Int ?? 0, completed = seen["completed"] as? Int ?? 0
        let disconnected = seen["disconnected"] as? Int ?? 0, closedAtDeadline = seen["closed_at_deadline"] as? Int ?? 0
        let finishes = seen["finish"] as? [String: Int] ?? [:]
        #expect(seen["error_count"] as? Int == 0, "\(run.output)")
        #expect(completed >= 4 && disconnected - closedAtDeadline >= 4, "too little traffic to judge: \(run.output)")
        #expect(opened == completed + disconnected)
        #expect(server.isRunning, "the server died under load:\n\(server.log().suffix(4000))")

        // Settled: nothing running or waiting, no KV in use, the reserve back (the engine gives
        // memory back in the step where the last request leaves; an abort waits for the step
        // under way, a few seconds at most here).
        var after = try MetricsScrape(server.metrics())
        let settleBy = Date().addingTimeInterval(15)
        func settled(_ m: MetricsScrape) throws -> Bool {
            try m.value("vllm:num_requests_running") == 0 && m.value("vllm:num_requests_waiting") == 0
                && m.value("vllm:kv_cache_usage_perc") == 0 && m.value("vtensor:kv_chunks_reserve") <= idleReserve
        }
        while try !settled(after) && Date() < settleBy {
            usleep(200_000)
            after = try MetricsScrape(server.metrics())
        }
        #expect(try after.value("vllm:num_requests_running") == 0)
        #expect(try after.value("vllm:num_requests_waiting") == 0)
        #expect(try after.value("vllm:kv_cache_usage_perc") == 0)
        #expect(try after.value("vtensor:kv_chunks_reserve") <= idleReserve)
        // The cache kept what the load left (its chunks all mapped), and gives it all back.
        #expect(try after.value("vtensor:prefix_cache_chunks") > 0)
        let emptied = try resetPrefixCache()
        #expect(try emptied.value("vtensor:prefix_cache_chunks") == 0)
        let mappedEmpty = try emptied.value("vtensor:kv_chunks_mapped")
        #expect(mappedEmpty == idleMapped, "chunks still mapped with the prefix cache empty: \(mappedEmpty), \(idleMapped) before the load")

        func delta(_ name: String, _ labels: [String: String] = [:]) throws -> Int {
            Int(try after.value(name, labels) - before.value(name, labels))
        }
        let ended = try ["stop", "length", "abort", "error"].reduce(0) { try $0 + delta("vllm:request_success_total", ["finished_reason": $1]) }
        #expect(ended == opened, "requests ended \(ended), streams opened \(opened)")
        #expect(try delta("vllm:request_success_total", ["finished_reason": "stop"]) >= finishes["stop", default: 0])
        #expect(try delta("vllm:request_success_total", ["finished_reason": "length"]) >= finishes["length", default: 0])
        #expect(try delta("vllm:request_success_total", ["finished_reason": "abort"]) <= disconnected)
        #expect(try delta("vllm:request_success_total", ["finished_reason": "error"]) == 0)
        #expect(try delta("vllm:generation_tokens_total") >= seen["completion_tokens"] as? Int ?? .max)
        #expect(try delta("vllm:prompt_tokens_total") >= seen["prompt_tokens"] as? Int ?? .max)
        #expect(try delta("vllm:e2e_request_latency_seconds_count") == opened)
        #expect(try delta("vllm:time_to_first_token_seconds_count") >= completed)
        #expect(try delta("vllm:prefix_cache_hits_total") <= delta("vllm:prefix_cache_queries_total"))

        // Still serving.
        let last = try server.post("/v1/completions", #"{"prompt": "After the storm", "max_tokens": 3}"#)
        #expect(last.status == 200, "\(last.body)")
        print("load: \(seconds) s, \(opened) streams, \(completed) completed, \(disconnected) closed early "
              + "(\(closedAtDeadline) at the end), "
              + "aborts \(try delta("vllm:request_success_total", ["finished_reason": "abort"])), "
              + "preemptions \(try delta("vllm:num_preemptions_total")), prefix hits \(try delta("vllm:prefix_cache_hits_total")) tokens")
    }
}
