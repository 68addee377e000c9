import Testing
@testable import Engine

/// Histograms as Prometheus reads them: a value on a bound falls in that bound's bucket, the
/// cumulative counts end with every observation, and a request's gaps count once each.
@Suite struct HistogramTests {
    @Test func bucketsHoldValuesUpToTheirBound() {
        var histogram = Histogram(upperBounds: [1, 5])
        for value in [0.5, 1.0, 1.5, 5.0, 9.0] { histogram.observe(value) }
        #expect(histogram.bucketCounts == [2, 2, 1])
        #expect(histogram.cumulativeCounts == [2, 4, 5])
        #expect(histogram.count == 5)
        #expect(histogram.sum == 0.5 + 1.0 + 1.5 + 5.0 + 9.0)
    }

    @Test func repeatedObservationsCountEachTime() {
        var histogram = Histogram(upperBounds: [0.1])
        histogram.observe(0.05, times: 3)
        histogram.observe(7, times: 0)
        #expect(histogram.cumulativeCounts == [3, 3])
        #expect(histogram.count == 3)
        #expect(abs(histogram.sum - 0.15) < 1e-12)
    }

    /// A request with 5 tokens has 4 gaps, recorded at its mean gap; one that never generated
    /// adds no first-token time; both count in end-to-end and queue time.
    @Test func requestLatenciesFromTimings() {
        let latencies = RequestLatencies()
        latencies.observe(RequestTiming(queue: 0.01, firstToken: 0.2, total: 1.0, outputTokens: 5))
        latencies.observe(RequestTiming(queue: 0.5, firstToken: nil, total: 0.5, outputTokens: 0))
        let s = latencies.snapshot
        #expect(s.endToEnd.count == 2 && s.queue.count == 2)
        #expect(s.timeToFirstToken.count == 1 && s.timeToFirstToken.sum == 0.2)
        #expect(s.interToken.count == 4)
        #expect(abs(s.interToken.sum - (1.0 - 0.2)) < 1e-12, "the gaps add up to first token -> end")
        #expect(s.endToEnd.upperBounds == RequestLatencies.requestBounds)
    }
}
