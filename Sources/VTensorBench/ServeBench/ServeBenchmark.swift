import NIOCore
import NIOPosix

/// What stays the same across the runs of a sweep.
struct ServeBenchSettings: Sendable {
    var baseURL: String
    var endpoint: ServeEndpoint = .completions
    var model: String?
    var label: String
    var dataset: String
    var burstiness = 1.0
    var maxConcurrency: Int?
    var seed: UInt64 = 0
    var percentiles: [Double] = [50, 90, 99]
    var goodput = GoodputTargets()
    var progress = true
}

/// One run: how it was set up, what it measured, and its figures.
struct ServeRun: Sendable {
    var settings: RunSettings
    var result: RunResult
    var metrics: ServeMetrics
    /// The server's counters over the run, where it has /metrics.
    var serverCounters: ServerCounters?
}

enum ServeBenchmark {
    /// Sends `workload` at `rate` (requests, or conversations, a second; infinity: all at once).
    static func run(_ workload: Workload, rate: Double, settings: ServeBenchSettings, client: ServeClient) async -> ServeRun {
        let arrivals = Arrivals.times(count: workload.units.count, rate: rate, burstiness: settings.burstiness, seed: settings.seed)
        let progress = ServeProgress(total: workload.requestCount, title: "\(settings.label) @ \(ServeReport.rateText(rate)) req/s",
                                     enabled: settings.progress)
        progress.start()
        let result = await withTaskExecutorPreference(EventLoopGroupExecutor(group: client.pool.group)) {
            await LoadDriver.run(workload, arrivals: arrivals, maxConcurrency: settings.maxConcurrency, client: client, progress: progress)
        }
        await progress.stop()
        let metrics = ServeMetrics(records: result.records, duration: result.duration, percentiles: settings.percentiles, goodput: settings.goodput)
        let runSettings = RunSettings(label: settings.label, baseURL: settings.baseURL, endpoint: settings.endpoint, model: client.model,
                                      dataset: settings.dataset, workloadSummary: workload.summary, promptNote: workload.promptNote,
                                      requestRate: rate, burstiness: settings.burstiness, maxConcurrency: settings.maxConcurrency,
                                      percentiles: settings.percentiles, goodput: settings.goodput)
        return ServeRun(settings: runSettings, result: result, metrics: metrics)
    }
}

extension ServeBenchmark {
    /// Runs a workload against `address` with a client of its own (its event loops shut down
    /// after): the self-test's and the tests' way in.
    static func run(_ workload: Workload, rate: Double, against address: ServerAddress, endpoint: ServeEndpoint = .completions,
                    model: String? = "stub", form: PromptForm = .text, settings: ServeBenchSettings, clientThreads: Int = 2,
                    timeoutSeconds: Double = 60) async -> ServeRun {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: clientThreads)
        let client = ServeClient(address: address, endpoint: endpoint, model: model, ignoreEOS: true, tokenizer: nil, form: form,
                                 timeoutSeconds: timeoutSeconds, group: group)
        let run = await ServeBenchmark.run(workload, rate: rate, settings: settings, client: client)
        client.pool.closeAll()
        try? await group.shutdownGracefully()
        return run
    }
}

/// The client's own ceiling: requests at rate inf against a stub in this process that answers
/// at once (`tokens` tokens in one write, with usage), so the time goes to the client (and the
/// stub, which shares the machine; the figure is a lower bound on the client alone).
enum ClientSelfTest {
    /// Server-sent events a request of the self-test streams: its tokens, the finish chunk, usage, [DONE].
    static func events(tokens: Int) -> Int { tokens + 3 }

    static func run(requests: Int, concurrency: Int, tokens: Int = 8, clientThreads: Int, progress: Bool) async throws -> ServeRun {
        let stub = try await StubServer.start { _ in StubServer.Behavior(tokens: tokens) }
        var maker = PromptMaker(tokenizer: nil, form: .text, seed: 1)
        let workload = Workload.random(count: requests, inputLength: 32, outputLength: tokens, rangeRatio: 0, maker: &maker, seed: 1)
        let settings = ServeBenchSettings(baseURL: "http://127.0.0.1:\(stub.port)", label: "self-test", dataset: "random",
                                          maxConcurrency: concurrency, progress: progress)
        let run = await ServeBenchmark.run(workload, rate: .infinity, against: ServerAddress(host: "127.0.0.1", port: stub.port),
                                           settings: settings, clientThreads: clientThreads)
        await stub.stop()
        return run
    }
}
