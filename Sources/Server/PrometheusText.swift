import Engine

/// Prometheus's text exposition format, version 0.0.4: `# HELP` and `# TYPE` before each
/// family, one `name{labels} value` line per sample, histograms as cumulative `_bucket{le=...}`
/// lines ending at `+Inf`, then `_sum` and `_count`.
///
/// Written directly rather than through swift-metrics and swift-prometheus: the values live in
/// the engine already (its statistics, its step snapshot, the loop's histograms) and are read
/// when a scraper asks, whereas swift-metrics is a process-wide push API (bootstrapped once,
/// each value recorded as it changes). A writer of this one format is about a hundred lines
/// with its own test, and adds no packages to build.
struct PrometheusText {
    typealias Labels = [(name: String, value: String)]

    private(set) var text = ""

    /// Labels every sample carries (vLLM's `model_name`), written before a sample's own.
    let commonLabels: Labels

    init(commonLabels: Labels = []) {
        self.commonLabels = commonLabels
    }

    mutating func gauge(_ name: String, help: String, _ value: Double, labels: Labels = []) {
        header(name, help: help, type: "gauge")
        sample(name, labels, value)
    }

    /// A counter family with one sample per label set (a single unlabelled one by default).
    mutating func counter(_ name: String, help: String, _ samples: [(labels: Labels, value: Double)]) {
        precondition(name.hasSuffix("_total"), "counter \(name) must end in _total")
        header(name, help: help, type: "counter")
        for (labels, value) in samples { sample(name, labels, value) }
    }

    mutating func counter(_ name: String, help: String, _ value: Double) {
        counter(name, help: help, [(labels: [], value: value)])
    }

    mutating func histogram(_ name: String, help: String, _ histogram: Histogram) {
        header(name, help: help, type: "histogram")
        let cumulative = histogram.cumulativeCounts
        for (bound, count) in zip(histogram.upperBounds, cumulative) {
            sample(name + "_bucket", [(name: "le", value: Self.number(bound))], Double(count))
        }
        sample(name + "_bucket", [(name: "le", value: "+Inf")], Double(histogram.count))
        sample(name + "_sum", [], histogram.sum)
        sample(name + "_count", [], Double(histogram.count))
    }

    // MARK: Lines

    private mutating func header(_ name: String, help: String, type: String) {
        precondition(Self.isValidName(name), "invalid metric name \(name)")
        text += "# HELP \(name) \(Self.escapeHelp(help))\n# TYPE \(name) \(type)\n"
    }

    private mutating func sample(_ name: String, _ labels: Labels, _ value: Double) {
        text += name
        let all = commonLabels + labels
        if !all.isEmpty {
            text += "{" + all.map { "\($0.name)=\"\(Self.escapeLabel($0.value))\"" }.joined(separator: ",") + "}"
        }
        text += " " + Self.number(value) + "\n"
    }

    // MARK: Formatting

    /// As Swift prints a Double, which is as Python prints a float ("3.0", "0.25", "1e-05": the
    /// `le` strings match vLLM's), and Prometheus's spellings of the infinities and NaN.
    static func number(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        return value.description
    }

    /// A label value: backslash, double quote and line feed escaped.
    static func escapeLabel(_ value: String) -> String { escape(value, quote: true) }

    /// Help text: backslash and line feed escaped.
    static func escapeHelp(_ value: String) -> String { escape(value, quote: false) }

    private static func escape(_ value: String, quote: Bool) -> String {
        // By scalar: "\r\n" is one Character, and its line feed must be escaped too.
        var out = String.UnicodeScalarView()
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out.append(contentsOf: "\\\\".unicodeScalars)
            case "\"" where quote: out.append(contentsOf: "\\\"".unicodeScalars)
            case "\n": out.append(contentsOf: "\\n".unicodeScalars)
            default: out.append(scalar)
            }
        }
        return String(out)
    }

    /// `[a-zA-Z_:][a-zA-Z0-9_:]*`: vLLM's names use the colon.
    static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first else { return false }
        func letter(_ c: UInt8) -> Bool { (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || c == 95 || c == 58 }
        return letter(first) && name.utf8.allSatisfy { letter($0) || ($0 >= 48 && $0 <= 57) }
    }
}
