import Engine
import Synchronization

/// One engine output, tagged with the response choice it belongs to.
struct ChoiceOutput: Sendable {
    let choice: Int
    let output: RequestOutput
}

/// The engine requests behind one response's choices, submitted together: their outputs come
/// merged into one stream in the order the engine thread delivers them, which ends once every
/// request has given its final output. Each choice is its own engine request; requests for the
/// same prompt share its K/V through the engine's prefix cache.
struct ChoiceStream: Sendable {
    let ids: [RequestID]
    let outputs: AsyncStream<ChoiceOutput>
    let loop: EngineLoop

    /// Submits every request or none, to join the same engine step (so a response's choices are
    /// batched the same way each time the request is sent).
    init(loop: EngineLoop, requests: [GenerationRequest]) throws {
        self.loop = loop
        let (stream, continuation) = AsyncStream.makeStream(of: ChoiceOutput.self)
        let open = Countdown(requests.count)
        let ids: [RequestID]
        do {
            ids = try loop.submit(requests) { choice, output in
                continuation.yield(ChoiceOutput(choice: choice, output: output))
                if output.isFinal, open.finishOne() { continuation.finish() }
            }
        } catch {
            continuation.finish()
            throw error
        }
        let submitted = ids
        continuation.onTermination = { reason in
            if case .cancelled = reason { for id in submitted { loop.abort(id) } }
        }
        self.ids = ids
        outputs = stream
    }

    /// Aborts every request still running; true if any was.
    @discardableResult
    func abortAll() -> Bool {
        ids.reduce(false) { loop.abort($1) || $0 }
    }
}

/// Counts requests that have not finished yet.
private final class Countdown: Sendable {
    private let left: Mutex<Int>

    init(_ count: Int) { left = Mutex(count) }

    /// One more finished; true when it was the last.
    func finishOne() -> Bool {
        left.withLock { count in
            count -= 1
            return count == 0
        }
    }
}
