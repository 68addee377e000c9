import CLICommon
import Foundation

/// One point of a rate sweep: the rate asked for, the output throughput reached, and the
/// median latencies there.
struct SweepPoint: Sendable, Equatable {
    var rate: Double
    var outputThroughput: Double
    var ttftMs: Double
    var tpotMs: Double

    /// From a run's JSON result (ours or `vllm bench serve`'s: the keys are the same).
    init?(json: [String: Any]) {
        guard let throughput = json["output_throughput"] as? Double, let ttft = json["median_ttft_ms"] as? Double,
              let tpot = json["median_tpot_ms"] as? Double else { return nil }
        rate = (json["request_rate"] as? Double) ?? .infinity
        outputThroughput = throughput
        ttftMs = ttft
        tpotMs = tpot
    }

    init(rate: Double, outputThroughput: Double, ttftMs: Double, tpotMs: Double) {
        self.rate = rate
        self.outputThroughput = outputThroughput
        self.ttftMs = ttftMs
        self.tpotMs = tpotMs
    }
}

/// The runs of one label (one server, one configuration), in the order swept.
struct SweepSeries: Sendable, Equatable {
    var label: String
    var points: [SweepPoint]
}

/// Latency against throughput as an SVG: two panels (median TTFT, median TPOT) over output
/// tokens/s, one line per label, each point marked with its request rate.
enum SweepChart {
    static let palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]

    static func svg(title: String, series: [SweepSeries]) -> String {
        let width = 1000.0, height = 470.0
        var out = """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" viewBox="0 0 \(Int(width)) \(Int(height))" \
            font-family="Helvetica, Arial, sans-serif" font-size="12">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(Int(width / 2))" y="24" text-anchor="middle" font-size="16" font-weight="bold">\(escape(title))</text>

            """
        let allPoints = series.flatMap(\.points)
        let xMax = allPoints.map(\.outputThroughput).max() ?? 1
        let panels: [(String, KeyPath<SweepPoint, Double>)] = [("median TTFT (ms)", \.ttftMs), ("median TPOT (ms)", \.tpotMs)]
        for (index, panel) in panels.enumerated() {
            let yMax = allPoints.map { $0[keyPath: panel.1] }.max() ?? 1
            let frame = Frame(left: 80 + Double(index) * 490, top: 60, width: 390, height: 320,
                              xTicks: ticks(upTo: xMax), yTicks: ticks(upTo: yMax))
            out += axes(frame, xLabel: "output throughput (tokens/s)", yLabel: panel.0)
            for (s, line) in series.enumerated() {
                out += plot(line, color: palette[s % palette.count], frame: frame, y: panel.1)
            }
        }
        // The legend, under the panels.
        var x = 80.0
        for (s, line) in series.enumerated() {
            let color = palette[s % palette.count]
            out += "<line x1=\"\(f(x))\" y1=\"440\" x2=\"\(f(x + 24))\" y2=\"440\" stroke=\"\(color)\" stroke-width=\"2.5\"/>"
            out += "<circle cx=\"\(f(x + 12))\" cy=\"440\" r=\"4\" fill=\"\(color)\"/>"
            out += "<text x=\"\(f(x + 30))\" y=\"444\">\(escape(line.label))</text>\n"
            x += 40 + Double(line.label.count) * 7.5
        }
        out += "<text x=\"\(Int(width - 20))\" y=\"444\" text-anchor=\"end\" fill=\"#666\">labels at points: request rate (req/s)</text>\n"
        return out + "</svg>\n"
    }

    struct Frame {
        var left, top, width, height: Double
        var xTicks, yTicks: [Double]
        /// The axes' ends: their last ticks.
        var xMax: Double { xTicks.last! }
        var yMax: Double { yTicks.last! }
        func x(_ v: Double) -> Double { left + v / xMax * width }
        func y(_ v: Double) -> Double { top + height - v / yMax * height }
    }

    private static func axes(_ frame: Frame, xLabel: String, yLabel: String) -> String {
        var out = ""
        for t in frame.yTicks {
            let y = f(frame.y(t))
            out += "<line x1=\"\(f(frame.left))\" y1=\"\(y)\" x2=\"\(f(frame.left + frame.width))\" y2=\"\(y)\" stroke=\"#e5e5e5\"/>"
            out += "<text x=\"\(f(frame.left - 6))\" y=\"\(y)\" dy=\"4\" text-anchor=\"end\">\(tickText(t))</text>\n"
        }
        for t in frame.xTicks {
            let x = f(frame.x(t))
            out += "<line x1=\"\(x)\" y1=\"\(f(frame.top))\" x2=\"\(x)\" y2=\"\(f(frame.top + frame.height))\" stroke=\"#e5e5e5\"/>"
            out += "<text x=\"\(x)\" y=\"\(f(frame.top + frame.height + 16))\" text-anchor=\"middle\">\(tickText(t))</text>\n"
        }
        out += "<rect x=\"\(f(frame.left))\" y=\"\(f(frame.top))\" width=\"\(f(frame.width))\" height=\"\(f(frame.height))\" fill=\"none\" stroke=\"#333\"/>\n"
        out += "<text x=\"\(f(frame.left + frame.width / 2))\" y=\"\(f(frame.top + frame.height + 36))\" text-anchor=\"middle\">\(escape(xLabel))</text>\n"
        let cy = frame.top + frame.height / 2
        out += "<text x=\"\(f(frame.left - 52))\" y=\"\(f(cy))\" text-anchor=\"middle\" transform=\"rotate(-90 \(f(frame.left - 52)) \(f(cy)))\">\(escape(yLabel))</text>\n"
        return out
    }

    private static func plot(_ series: SweepSeries, color: String, frame: Frame, y: KeyPath<SweepPoint, Double>) -> String {
        let all = series.points
        guard !all.isEmpty else { return "" }
        let path = all.map { "\(f(frame.x($0.outputThroughput))),\(f(frame.y($0[keyPath: y])))" }.joined(separator: " ")
        var out = "<polyline points=\"\(path)\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"2.5\"/>\n"
        for point in all {
            let (px, py) = (f(frame.x(point.outputThroughput)), f(frame.y(point[keyPath: y])))
            out += "<circle cx=\"\(px)\" cy=\"\(py)\" r=\"4\" fill=\"\(color)\"/>"
            out += "<text x=\"\(px)\" y=\"\(py)\" dx=\"6\" dy=\"-6\" font-size=\"10\" fill=\"\(color)\">\(ServeReport.rateText(point.rate))</text>\n"
        }
        return out
    }

    /// 0 and round steps (1, 2 or 5 times a power of ten) up to at least `maximum`, about five of them.
    static func ticks(upTo maximum: Double) -> [Double] {
        let top = maximum > 0 && maximum.isFinite ? maximum : 1
        let raw = top / 5
        var power = 1.0
        while power * 10 <= raw { power *= 10 }
        while power > raw { power /= 10 }
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw } ?? power * 10
        var values: [Double] = [0]
        while values.last! < top { values.append(values.last! + step) }
        return values
    }

    static func tickText(_ v: Double) -> String {
        v == v.rounded() ? String(Int(v)) : fixed(v, v < 1 ? 2 : 1)
    }

    static func f(_ v: Double) -> String { fixed(v, 1) }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
