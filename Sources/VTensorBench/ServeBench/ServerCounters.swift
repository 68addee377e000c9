import CLICommon
import Foundation

/// The server's own counters over one run: `/metrics` (Prometheus text) read before and after,
/// and the change of every counter (`*_total`) that moved. vLLM and vtensor both export the
/// prefix cache's queries and hits and the preemptions; vtensor also its takeovers and the steps
/// that waited for the mapper. This is where a run's time goes on the server's side (issue 14:
/// "step time, host gaps, mapping waits, or queueing"), next to the client's view of it.
struct ServerCounters: Sendable, Equatable {
    var deltas: [String: Double]

    /// Every sample of the exposition summed by metric name (over label sets); comments, blank
    /// lines and values that are not finite numbers are left out.
    static func parse(_ text: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in text.split(whereSeparator: \.isNewline) {
            let line = line.trimmingCharacters(in: .whitespaces)
            guard !line.isEmpty, !line.hasPrefix("#") else { continue }
            let nameEnd = line.firstIndex { $0 == "{" || $0 == " " } ?? line.endIndex
            let name = String(line[..<nameEnd])
            var rest = line[nameEnd...]
            if rest.first == "{" {
                guard let close = rest.lastIndex(of: "}") else { continue }
                rest = rest[rest.index(after: close)...]
            }
            guard let token = rest.split(separator: " ").first, let value = Double(token), value.isFinite, !name.isEmpty else { continue }
            values[name, default: 0] += value
        }
        return values
    }

    /// The counters that changed between two scrapes.
    init(before: [String: Double], after: [String: Double]) {
        var deltas: [String: Double] = [:]
        for (name, value) in after where name.hasSuffix("_total") {
            let change = value - (before[name] ?? 0)
            if change != 0 { deltas[name] = change }
        }
        self.deltas = deltas
    }

    /// One line for the terminal: the prefix cache's hit rate, takeovers, preemptions, the
    /// steps that waited for the mapper or for the step before them, and structured output's
    /// draws and mask time, where the server reports them.
    var summary: String {
        var parts: [String] = []
        if let queries = deltas["vllm:prefix_cache_queries_total"], queries > 0 {
            let hits = deltas["vllm:prefix_cache_hits_total"] ?? 0
            parts.append("prefix cache \(fixed(100 * hits / queries, 1))% of \(Int(queries)) prompt tokens")
        }
        if let computed = deltas["vtensor:prompt_tokens_computed_total"] { parts.append("\(Int(computed)) prompt tokens computed") }
        let failures = (deltas["vtensor:prefix_cache_attach_failures_total"] ?? 0) + (deltas["vtensor:prefix_cache_publish_failures_total"] ?? 0)
            + (deltas["vtensor:prefix_cache_pack_failures_total"] ?? 0)
        if failures > 0 { parts.append("\(Int(failures)) prefix cache failures (the server's log says why)") }
        if let takeovers = deltas["vtensor:prefix_cache_takeovers_total"] { parts.append("\(Int(takeovers)) takeovers") }
        if let packs = deltas["vtensor:prefix_cache_packs_total"] { parts.append("\(Int(packs)) prefixes packed into slabs") }
        if let preemptions = deltas["vllm:num_preemptions_total"] { parts.append("\(Int(preemptions)) preemptions") }
        if let waits = deltas["vtensor:mapping_waits_total"] {
            let blocked = deltas["vtensor:mapping_waits_blocked_total"] ?? 0
            let seconds = deltas["vtensor:mapping_wait_seconds_total"] ?? 0
            parts.append("\(Int(blocked)) of \(Int(waits)) steps blocked on the mapper (\(fixed(seconds * 1000, 0)) ms)")
        }
        if let synchronized = deltas["vtensor:synchronized_steps_total"], synchronized > 0 { parts.append("\(Int(synchronized)) steps synchronized") }
        if let draws = deltas["vtensor:structured_output_draws_total"], draws > 0 {
            let seconds = deltas["vtensor:structured_output_mask_seconds_total"] ?? 0
            parts.append("\(Int(draws)) constrained draws (masks \(fixed(seconds * 1000, 0)) ms, \(fixed(seconds * 1e6 / draws, 1)) us each)")
        }
        return parts.isEmpty ? "" : "server: " + parts.joined(separator: ", ")
    }
}
