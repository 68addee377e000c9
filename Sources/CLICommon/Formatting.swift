/// Number formatting without Foundation (String(format:) would pull in ICU data).
public func fixed(_ value: Double, _ digits: Int = 2) -> String {
    guard value.isFinite else { return value.isNaN ? "nan" : (value > 0 ? "inf" : "-inf") }
    var scale = 1.0
    for _ in 0..<digits { scale *= 10 }
    let rounded = (abs(value) * scale).rounded()
    let whole = Int(rounded / scale)
    let fraction = Int(rounded - Double(whole) * scale)
    var text = (value < 0 && rounded != 0 ? "-" : "") + String(whole)
    if digits > 0 {
        let f = String(fraction)
        text += "." + String(repeating: "0", count: digits - f.count) + f
    }
    return text
}

public func mib(_ bytes: Int) -> String { fixed(Double(bytes) / 1_048_576, 1) + " MiB" }
public func gib(_ bytes: Int) -> String { fixed(Double(bytes) / 1_073_741_824, 2) + " GiB" }
public func micros(_ nanos: UInt64) -> String { fixed(Double(nanos) / 1000, 1) }

/// A plain text table: the first column left-aligned, the others right-aligned. A cell longer
/// than `wideCell` characters (a sentence of detail, as in a metric/value table) is left out of
/// its column's width and printed as it is, so one long line does not pad every other row.
public struct Table {
    public static let wideCell = 48
    public var title: String
    public var header: [String]
    public var rows: [[String]] = []

    public init(title: String, header: [String], rows: [[String]] = []) {
        self.title = title
        self.header = header
        self.rows = rows
    }

    public mutating func add(_ row: [String]) { rows.append(row) }

    public func render() -> String {
        var widths = header.map(\.count)
        for row in rows {
            for (i, cell) in row.enumerated() where i < widths.count && cell.count <= Self.wideCell { widths[i] = max(widths[i], cell.count) }
        }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, cell in
                let pad = String(repeating: " ", count: max(0, (i < widths.count ? widths[i] : 0) - cell.count))
                return i == 0 ? cell + pad : pad + cell
            }.joined(separator: "  ")
        }
        var out = "\(title)\n" + line(header) + "\n" + widths.map { String(repeating: "-", count: $0) }.joined(separator: "  ") + "\n"
        for row in rows { out += line(row) + "\n" }
        return out
    }
}

/// Percentiles of nanosecond samples.
public struct Percentiles: Codable {
    public var count: Int
    public var p50Micros: Double
    public var p99Micros: Double
    public var meanMicros: Double
    public var maxMicros: Double

    public init(_ samples: [UInt64]) {
        let sorted = samples.sorted()
        count = sorted.count
        guard !sorted.isEmpty else { p50Micros = 0; p99Micros = 0; meanMicros = 0; maxMicros = 0; return }
        p50Micros = Double(sorted[sorted.count / 2]) / 1000
        p99Micros = Double(sorted[min(sorted.count - 1, sorted.count * 99 / 100)]) / 1000
        meanMicros = Double(sorted.reduce(0, +)) / Double(sorted.count) / 1000
        maxMicros = Double(sorted.last!) / 1000
    }
}

public func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? 0 : sorted[sorted.count / 2]
}
