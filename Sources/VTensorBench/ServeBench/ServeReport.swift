import CLICommon

/// How a run was set up, for its report.
struct RunSettings: Sendable {
    var label: String
    var baseURL: String
    var endpoint: ServeEndpoint
    var model: String?
    var dataset: String
    var workloadSummary: String
    var promptNote: String
    var requestRate: Double
    var burstiness: Double
    var maxConcurrency: Int?
    var percentiles: [Double]
    var goodput: GoodputTargets
}

/// A run's table (for the terminal) and its JSON result (vLLM's key names where vLLM has the
/// figure, so the files can be read by the same scripts).
enum ServeReport {
    static func rateText(_ rate: Double) -> String { rate.isFinite ? fixed(rate, rate == rate.rounded() ? 0 : 2) : "inf" }

    /// "p99", "p99.9" (vLLM's percentile key words).
    static func percentileWord(_ p: Double) -> String {
        p == p.rounded() ? "p\(Int(p))" : "p\(p)"
    }

    static func table(_ settings: RunSettings, _ result: RunResult, _ m: ServeMetrics) -> String {
        var out = "bench serve \(settings.label): \(settings.workloadSummary)\n"
        out += "  -> \(settings.baseURL)\(settings.endpoint.rawValue), model \(settings.model.map { "\"\($0)\"" } ?? "(not sent)"), "
            + "request rate \(rateText(settings.requestRate))"
            + (settings.requestRate.isFinite ? " (burstiness \(fixed(settings.burstiness, 2))\(settings.burstiness == 1 ? ": Poisson" : ": gamma gaps"))" : "")
            + ", max concurrency \(settings.maxConcurrency.map(String.init) ?? "none")\n"
        out += "  prompts: \(settings.promptNote)\n\n"
        var table = Table(title: "results", header: ["metric", "value"])
        table.add(["successful requests", "\(m.completed)"])
        table.add(["failed requests", "\(m.failed)"])
        table.add(["duration (s)", fixed(m.duration, 2)])
        table.add(["total input tokens", "\(m.totalInput)"])
        table.add(["total output tokens", "\(m.totalOutput) (counted from \(sourcesText(m.outputSources)))"])
        if let first = m.ttftFirstRound, let later = m.ttftLaterRounds {
            table.add(["first token by round (ms)", "first rounds: median \(fixed(first.median, 2)), mean \(fixed(first.mean, 2)); "
                       + "later rounds: median \(fixed(later.median, 2)), mean \(fixed(later.mean, 2))"])
        }
        if settings.dataset == "multi-turn", m.completed > 0 {
            table.add(["answers sent on as", m.withTokenIds > 0 ? "the server's ids for \(m.withTokenIds) of \(m.completed) (return_token_ids), the rest as text"
                                                                 : "text (no ids came back)"])
        }
        table.add(["request throughput (req/s)", fixed(m.requestThroughput, 2)])
        if let goodput = m.requestGoodput { table.add(["request goodput (req/s)", "\(fixed(goodput, 2)) (\(settings.goodput.description))"]) }
        table.add(["output token throughput (tok/s)", fixed(m.outputThroughput, 2)])
        table.add(["total token throughput (tok/s)", fixed(m.totalTokenThroughput, 2)])
        table.add(["peak output tokens in one second", fixed(m.maxOutputTokensPerSecond, 0)])
        table.add(["peak concurrent requests", "\(m.maxConcurrentRequests)"])
        table.add(["client", clientText(result)])
        out += table.render() + "\n"

        var latency = Table(title: "latency (ms)", header: ["metric", "mean"] + settings.percentiles.map(percentileWord))
        for (name, summary) in [("TTFT", m.ttft), ("TPOT", m.tpot), ("ITL", m.itl), ("E2EL", m.e2el)] {
            latency.add([name, fixed(summary.mean, 2)] + summary.percentiles.map { fixed($0.value, 2) })
        }
        out += latency.render()
        if m.endedWithoutDone > 0 {
            out += "\n\(m.endedWithoutDone) completed streams ended after their finish chunk without data: [DONE] (counted as complete, as vLLM's client does)\n"
        }
        if !m.failures.isEmpty {
            out += "\nfailed requests by reason (count, reason: one of their messages)\n"
            for f in m.failures { out += "\(f.count)  \(f.reason): \(f.example.prefix(160))\n" }
        }
        return out
    }

    /// The client's own cost: CPU over the run, and how late it sent requests past their arrival times.
    static func clientText(_ result: RunResult) -> String {
        let cores = Double(result.clientCPUSeconds) / max(result.duration, 1e-9)
        var text = "CPU \(fixed(result.clientCPUSeconds, 2)) s (\(fixed(cores * 100, 1))% of one core)"
        if !result.sendLags.isEmpty {
            text += "; send lag past arrival p99 \(fixed(LatencySummary.percentile(result.sendLags.sorted(), 99) * 1000, 2)) ms"
        }
        return text
    }

    static func sourcesText(_ sources: [OutputTokenSource: Int]) -> String {
        let parts = OutputTokenSource.allCases.compactMap { source in sources[source].map { "\(source.rawValue): \($0) requests" } }
        return parts.isEmpty ? "no completed request" : parts.joined(separator: ", ")
    }

    /// One row a rate, for a sweep.
    static func sweepTable(_ label: String, _ runs: [(rate: Double, metrics: ServeMetrics)], percentile: Double) -> String {
        let p = percentileWord(percentile)
        var table = Table(title: "sweep \(label)", header: ["rate (req/s)", "completed", "failed", "req/s", "output tok/s",
                                                            "TTFT mean", "TTFT \(p)", "TPOT mean", "TPOT \(p)", "E2EL mean"])
        for run in runs {
            let m = run.metrics
            func tail(_ s: LatencySummary) -> String { fixed(s.percentiles.first { $0.p == percentile }?.value ?? 0, 1) }
            table.add([rateText(run.rate), "\(m.completed)", "\(m.failed)", fixed(m.requestThroughput, 2), fixed(m.outputThroughput, 1),
                       fixed(m.ttft.mean, 1), tail(m.ttft), fixed(m.tpot.mean, 1), tail(m.tpot), fixed(m.e2el.mean, 1)])
        }
        return table.render()
    }

    /// The JSON result of one run: vLLM's keys (duration, completed, failed, total_input_tokens,
    /// ..., mean_/median_/std_/pNN_ of ttft, tpot, itl and e2el in ms, the per-request lists),
    /// and ours beside them (label, failure_reasons, output_tokens_source, client_*).
    static func json(_ settings: RunSettings, _ result: RunResult, _ m: ServeMetrics, date: String) -> [String: Any] {
        var out: [String: Any] = [
            "date": date,
            "label": settings.label,
            "base_url": settings.baseURL,
            "endpoint": settings.endpoint.rawValue,
            "dataset": settings.dataset,
            "dataset_summary": settings.workloadSummary,
            "prompt_note": settings.promptNote,
            "request_rate": settings.requestRate.isFinite ? settings.requestRate as Any : "inf",
            "burstiness": settings.burstiness,
            "num_prompts": result.records.count,
            "duration": m.duration,
            "completed": m.completed,
            "failed": m.failed,
            "total_input_tokens": m.totalInput,
            "total_output_tokens": m.totalOutput,
            "request_throughput": m.requestThroughput,
            "output_throughput": m.outputThroughput,
            "total_token_throughput": m.totalTokenThroughput,
            "max_output_tokens_per_s": m.maxOutputTokensPerSecond,
            "max_concurrent_requests": m.maxConcurrentRequests,
            "input_lens": result.records.map(\.promptTokens),
            "output_lens": result.records.map { $0.succeeded ? $0.outputTokens : 0 },
            "ttfts": result.records.map { $0.ttft ?? 0 },
            "itls": result.records.map(\.itls),
            "latencies": result.records.map(\.latency),
            "errors": result.records.map { $0.failure.map { "\($0.reason): \($0.detail)" } ?? "" },
            "failure_reasons": Dictionary(uniqueKeysWithValues: m.failures.map { ($0.reason, $0.count) }),
            "output_tokens_source": Dictionary(uniqueKeysWithValues: m.outputSources.map { ($0.key.rawValue, $0.value) }),
            "requests_with_token_ids": m.withTokenIds,
            "rounds": result.records.map { $0.round ?? -1 },
            "client_cpu_seconds": result.clientCPUSeconds,
        ]
        if let model = settings.model { out["model_id"] = model }
        if let c = settings.maxConcurrency { out["max_concurrency"] = c }
        if let goodput = m.requestGoodput {
            out["request_goodput"] = goodput
            out["goodput_slos_ms"] = [("ttft", settings.goodput.ttft), ("tpot", settings.goodput.tpot), ("e2el", settings.goodput.e2el)]
                .reduce(into: [String: Double]()) { if let v = $1.1 { $0[$1.0] = v } }
        }
        if !result.sendLags.isEmpty { out["client_send_lag_p99_ms"] = LatencySummary.percentile(result.sendLags.sorted(), 99) * 1000 }
        for (name, s) in [("ttft", m.ttft), ("tpot", m.tpot), ("itl", m.itl), ("e2el", m.e2el)] {
            out["mean_\(name)_ms"] = s.mean
            out["median_\(name)_ms"] = s.median
            out["std_\(name)_ms"] = s.std
            for p in s.percentiles { out["\(percentileWord(p.p))_\(name)_ms"] = p.value }
        }
        // Multi-turn: the first rounds' time to first token apart from the later rounds'.
        for (suffix, summary) in [("first_round", m.ttftFirstRound), ("later_rounds", m.ttftLaterRounds)] {
            guard let summary else { continue }
            out["mean_ttft_ms_\(suffix)"] = summary.mean
            out["median_ttft_ms_\(suffix)"] = summary.median
            for p in summary.percentiles { out["\(percentileWord(p.p))_ttft_ms_\(suffix)"] = p.value }
        }
        return out
    }
}
