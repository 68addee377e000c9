import Synchronization

/// The latencies of ended requests as histograms with vLLM's bucket bounds (dashboards and
/// gateways built for vLLM read them as they are). `EngineLoop` observes each request's timing
/// as it hands out the request's last output; any thread reads them.
public final class RequestLatencies: Sendable {
    public struct Snapshot: Sendable, Equatable {
        /// Arrival to the first generated token (requests that generated one).
        public var timeToFirstToken = Histogram(upperBounds: RequestLatencies.timeToFirstTokenBounds)
        /// One observation per gap between two generated tokens. `RequestTiming` keeps the first
        /// and last token's times only, so each of a request's gaps is recorded at its mean: the
        /// count and the sum are exact, a single gap's bucket is its request's average.
        public var interToken = Histogram(upperBounds: RequestLatencies.interTokenBounds)
        /// Arrival to the end, for every request that ended (aborted ones included).
        public var endToEnd = Histogram(upperBounds: RequestLatencies.requestBounds)
        /// Arrival to the first step (to the end, for one that never ran).
        public var queue = Histogram(upperBounds: RequestLatencies.requestBounds)
    }

    private let state = Mutex(Snapshot())

    public init() {}

    public func observe(_ timing: RequestTiming) {
        state.withLock { s in
            s.endToEnd.observe(timing.total)
            s.queue.observe(timing.queue)
            if let first = timing.firstToken { s.timeToFirstToken.observe(first) }
            if let gap = timing.interToken { s.interToken.observe(gap, times: timing.outputTokens - 1) }
        }
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    // vLLM's bounds (vllm/v1/metrics/loggers.py), in seconds.
    public static let timeToFirstTokenBounds: [Double] = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                                          1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]
    public static let interTokenBounds: [Double] = [0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
                                                    1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0]
    public static let requestBounds: [Double] = [0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                                                 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0]
}
