import ArgumentParser
import CLICommon
import Foundation

/// What a run leaves behind: the JSON results (one run, or a sweep's {label, runs}) and the
/// sweep chart, which can also draw earlier runs' JSON files.
extension BenchServeCommand {
    /// The JSON file, and the chart of a sweep (or of any run given --chart).
    func writeOutputs(_ runs: [ServeRun], settings: ServeBenchSettings) throws {
        let date = todayUTC()
        let results = runs.map { run in
            var json = ServeReport.json(run.settings, run.result, run.metrics, date: date)
            if let counters = run.serverCounters { json["server_counters"] = counters.deltas }
            return json
        }
        if runs.count > 1 {
            print(ServeReport.sweepTable(settings.label, runs.map { ($0.settings.requestRate, $0.metrics) }, percentile: settings.percentiles.last ?? 99))
        }
        if let jsonOut {
            let object: Any = sweepRates == nil ? results[0] : ["label": settings.label, "runs": results]
            try writeJSON(object, to: jsonOut)
            note("results: \(jsonOut)")
        }
        guard sweepRates != nil || chart != nil else { return }
        var series = [SweepSeries(label: settings.label, points: results.compactMap(SweepPoint.init(json:)))]
        for path in plotWith { series += try Self.readSeries(path) }
        let file = chart ?? jsonOut.map { ($0.hasSuffix(".json") ? String($0.dropLast(5)) : $0) + ".svg" } ?? "bench-serve-sweep.svg"
        let title = "bench serve: \(runs[0].settings.workloadSummary)"
        try writeFile(file, SweepChart.svg(title: title, series: series))
        note("chart: \(file)")
    }

    /// The line of an earlier --json-out file: a sweep ({label, runs}) or a single run.
    static func readSeries(_ path: String) throws -> [SweepSeries] {
        guard let data = FileManager.default.contents(atPath: path),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw ValidationError("--plot-with \(path): not a JSON object from bench serve --json-out")
        }
        let runs = object["runs"] as? [[String: Any]] ?? [object]
        let points = runs.compactMap(SweepPoint.init(json:))
        guard !points.isEmpty else { throw ValidationError("--plot-with \(path): no run with output_throughput, median_ttft_ms and median_tpot_ms") }
        return [SweepSeries(label: object["label"] as? String ?? (path as NSString).lastPathComponent, points: points)]
    }

    func writeJSON(_ object: Any, to path: String) throws {
        let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
        try writeFile(path, String(decoding: data, as: UTF8.self) + "\n")
    }
}
