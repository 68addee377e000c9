import VTensor

/// Runs an `Engine` on its own thread: steps while there is work, sleeps when there is none,
/// and hands each request's outputs to the handler it was submitted with. Callers on any thread
/// (HTTP event loops, a CLI) submit and abort; nothing they do blocks on a step.
public final class EngineLoop: @unchecked Sendable {
    public typealias Handler = @Sendable (RequestOutput) -> Void

    public let engine: Engine
    /// Latency histograms of the requests that ended (for /metrics).
    public let latencies = RequestLatencies()
    private let condition = ConditionLock()
    private var handlers: [RequestID: Handler] = [:]
    private var stopping = false
    private var thread: WorkerThread?

    public init(engine: Engine) {
        self.engine = engine
        thread = WorkerThread(name: "vtensor-engine") { [self] in run() }
    }

    deinit { shutdown() }

    /// Queues a request; `onOutput` receives its outputs on the engine thread, the last one with
    /// `finish` set. Throws when the engine refuses the request or the loop has stopped.
    @discardableResult
    public func submit(_ request: GenerationRequest, onOutput: @escaping Handler) throws -> RequestID {
        try condition.withLock {
            guard !stopping else { throw EngineError.stopped }
            // Registered under the lock the dispatcher takes, so no output can miss its handler.
            let id = try engine.add(request)
            handlers[id] = onOutput
            condition.broadcast()
            return id
        }
    }

    /// Queues several requests to join the same step (`Engine.add(_:)`), or none; `onOutput`
    /// receives each one's outputs with its index in `requests`.
    @discardableResult
    public func submit(_ requests: [GenerationRequest], onOutput: @escaping @Sendable (Int, RequestOutput) -> Void) throws -> [RequestID] {
        try condition.withLock {
            guard !stopping else { throw EngineError.stopped }
            let ids = try engine.add(requests)
            for (index, id) in ids.enumerated() { handlers[id] = { onOutput(index, $0) } }
            condition.broadcast()
            return ids
        }
    }

    /// The request's outputs as an async stream; cancelling the stream's consumer aborts it.
    public func stream(_ request: GenerationRequest) throws -> (id: RequestID, outputs: AsyncStream<RequestOutput>) {
        let (stream, continuation) = AsyncStream.makeStream(of: RequestOutput.self)
        let id = try submit(request) { output in
            continuation.yield(output)
            if output.isFinal { continuation.finish() }
        }
        continuation.onTermination = { [weak self] reason in
            if case .cancelled = reason { self?.abort(id) }
        }
        return (id, stream)
    }

    /// Cancels a request; false when it is unknown or already finished.
    @discardableResult
    public func abort(_ id: RequestID) -> Bool {
        condition.withLock {
            let queued = engine.abort(id)
            condition.broadcast()
            return queued
        }
    }

    /// Drops every cached prefix no running request uses, at the next step (one runs now when
    /// the engine is idle). False when the engine has no prefix cache.
    @discardableResult
    public func resetPrefixCache() -> Bool {
        condition.withLock {
            let queued = engine.resetPrefixCache()
            condition.broadcast()
            return queued
        }
    }

    /// Stops taking requests and aborts those still in flight, without waiting: the engine thread
    /// delivers their final `abort` outputs, then ends. A server's drain deadline calls this.
    public func stop() {
        condition.withLock {
            guard !stopping else { return }
            stopping = true
            for id in handlers.keys { _ = engine.abort(id) }
            condition.broadcast()
        }
    }

    /// `stop()`, then joins the thread once the step under way and the abort outputs are done.
    public func shutdown() {
        stop()
        let thread = condition.withLock { () -> WorkerThread? in
            defer { self.thread = nil }
            return self.thread
        }
        thread?.join()
    }

    private func run() {
        while true {
            let proceed = condition.withLock { () -> Bool in
                while !engine.hasWork && !stopping { condition.wait() }
                return engine.hasWork
            }
            guard proceed else { return }
            let outputs = engine.step()
            let deliveries = condition.withLock { () -> [(Handler, RequestOutput)] in
                outputs.compactMap { output in
                    guard let handler = handlers[output.id] else { return nil }
                    if output.isFinal { handlers[output.id] = nil }
                    return (handler, output)
                }
            }
            // Observed before the handlers run: a client that saw its last output finds it counted.
            for output in outputs where output.isFinal {
                if let timing = output.timing { latencies.observe(timing) }
            }
            for (handler, output) in deliveries { handler(output) }
        }
    }
}
