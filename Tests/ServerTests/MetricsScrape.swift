import Foundation

/// One read of /metrics, parsed strictly: every sample belongs to a family declared by `# HELP`
/// and `# TYPE` before it, counters end in `_total`, no series repeats, and each histogram's
/// buckets ascend in `le`, never decrease, and end at `+Inf` equal to `_count`.
struct MetricsScrape {
    struct Series: Hashable {
        let name: String
        let labels: [String: String]
    }

    private(set) var values: [Series: Double] = [:]
    /// Family name -> its TYPE.
    private(set) var types: [String: String] = [:]

    init(_ text: String) throws {
        var helped: Set<String> = []
        var order: [Series] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) where !line.isEmpty {
            if line.hasPrefix("# HELP ") {
                let name = String(line.dropFirst(7).prefix { $0 != " " })
                guard helped.insert(name).inserted else { throw TestFailure("HELP of \(name) twice") }
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4, helped.contains(String(parts[2])) else { throw TestFailure("TYPE without HELP: \(line)") }
                guard ["gauge", "counter", "histogram"].contains(parts[3]) else { throw TestFailure("unknown type: \(line)") }
                if parts[3] == "counter" && !parts[2].hasSuffix("_total") { throw TestFailure("counter without _total: \(line)") }
                types[String(parts[2])] = String(parts[3])
                continue
            }
            guard !line.hasPrefix("#") else { continue }
            let series = try Self.series(line)
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...].replacingOccurrences(of: "+Inf", with: "inf")) else {
                throw TestFailure("no value: \(line)")
            }
            guard family(of: series.name) != nil else { throw TestFailure("sample before its TYPE: \(line)") }
            guard values.updateValue(value, forKey: series) == nil else { throw TestFailure("series twice: \(line)") }
            order.append(series)
        }
        try checkHistograms(order)
    }

    /// The family a sample name belongs to (a histogram's `_bucket`, `_sum`, `_count`).
    func family(of name: String) -> String? {
        if types[name] != nil && types[name] != "histogram" { return name }
        for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) {
            let base = String(name.dropLast(suffix.count))
            if types[base] == "histogram" { return base }
        }
        return nil
    }

    /// The value of the one series of `name` whose labels include `labels`.
    func value(_ name: String, _ labels: [String: String] = [:]) throws -> Double {
        let matches = values.filter { series, _ in
            series.name == name && labels.allSatisfy { key, value in series.labels[key] == value }
        }
        guard matches.count == 1, let value = matches.first?.value else {
            throw TestFailure("\(matches.count) series of \(name) \(labels)")
        }
        return value
    }

    /// The sum over every series of `name` (a counter over all its label values).
    func sum(_ name: String) -> Double {
        values.filter { $0.key.name == name }.map(\.value).reduce(0, +)
    }

    private func checkHistograms(_ order: [Series]) throws {
        for (family, type) in types where type == "histogram" {
            let buckets = order.filter { $0.name == family + "_bucket" }
            guard let last = buckets.last, last.labels["le"] == "+Inf" else { throw TestFailure("\(family): no +Inf bucket last") }
            var bound = -Double.infinity, count = 0.0
            for bucket in buckets {
                guard let le = bucket.labels["le"], let upper = Double(le.replacingOccurrences(of: "+Inf", with: "inf")), upper > bound else {
                    throw TestFailure("\(family): buckets out of order at \(bucket.labels)")
                }
                guard values[bucket]! >= count else { throw TestFailure("\(family): bucket count falls at le=\(le)") }
                bound = upper
                count = values[bucket]!
            }
            var labels = last.labels
            labels["le"] = nil
            guard values[Series(name: family + "_count", labels: labels)] == count else { throw TestFailure("\(family): +Inf != _count") }
            guard values[Series(name: family + "_sum", labels: labels)] != nil else { throw TestFailure("\(family): no _sum") }
        }
    }

    /// `name{a="x",b="y"}` (values may hold escaped quotes and commas).
    private static func series(_ line: String) throws -> Series {
        guard let brace = line.firstIndex(of: "{") else {
            return Series(name: String(line.prefix { $0 != " " }), labels: [:])
        }
        let name = String(line[..<brace])
        var labels: [String: String] = [:]
        var index = line.index(after: brace)
        let end = line.endIndex
        while index < end && line[index] != "}" {
            guard let equals = line[index...].firstIndex(of: "="), line.index(after: equals) < end,
                  line[line.index(after: equals)] == "\"" else {
                throw TestFailure("bad labels: \(line)")
            }
            let key = String(line[index..<equals])
            var value = ""
            var cursor = line.index(equals, offsetBy: 2)
            while cursor < end && line[cursor] != "\"" {
                if line[cursor] == "\\" {
                    cursor = line.index(after: cursor)
                    guard cursor < end else { break }
                    value.append(line[cursor] == "n" ? "\n" : line[cursor])
                } else {
                    value.append(line[cursor])
                }
                cursor = line.index(after: cursor)
            }
            guard cursor < end else { throw TestFailure("unterminated label value: \(line)") }
            labels[key] = value
            index = line.index(after: cursor)
            if index < end && line[index] == "," { index = line.index(after: index) }
        }
        guard index < end else { throw TestFailure("unterminated labels: \(line)") }
        return Series(name: name, labels: labels)
    }
}
