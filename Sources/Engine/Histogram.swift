/// A Prometheus-style histogram: how many observations fell at or below each upper bound, and
/// their sum and count. Plain data: its owner guards it.
public struct Histogram: Sendable, Equatable {
    /// Ascending upper bounds; the `+Inf` bucket above them is implied.
    public let upperBounds: [Double]
    /// Observations per bucket (not cumulative); the last entry counts those above every bound.
    public private(set) var bucketCounts: [Int]
    public private(set) var sum = 0.0
    public private(set) var count = 0

    public init(upperBounds: [Double]) {
        precondition(zip(upperBounds, upperBounds.dropFirst()).allSatisfy { $0 < $1 }, "histogram bounds must ascend")
        self.upperBounds = upperBounds
        bucketCounts = Array(repeating: 0, count: upperBounds.count + 1)
    }

    /// Records `value` `times` times (a request's token gaps, each at the request's mean gap).
    public mutating func observe(_ value: Double, times: Int = 1) {
        guard times > 0 else { return }
        // A bucket holds values up to and including its bound (Prometheus's `le`).
        let index = upperBounds.firstIndex { value <= $0 } ?? upperBounds.count
        bucketCounts[index] += times
        sum += value * Double(times)
        count += times
    }

    /// Observations at or below each bound, then all of them (the `+Inf` bucket).
    public var cumulativeCounts: [Int] {
        var running = 0
        return bucketCounts.map { running += $0; return running }
    }
}
