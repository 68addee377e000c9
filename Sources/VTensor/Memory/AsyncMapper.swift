/// A ticket for mapping work submitted to the `AsyncMapper`: the consumer's fence.
public struct MapTicket: Hashable, Sendable {
    public let id: UInt64
}

/// What the mapper measured.
public struct MapperStatistics: Sendable, Codable, Equatable {
    public var jobsSubmitted = 0
    public var jobsCompleted = 0
    public var jobsFailed = 0
    public var chunksMapped = 0
    public var currentQueueDepth = 0
    public var maxQueueDepth = 0
    /// Consumer waits: how many, how many found the job unfinished, total and worst time.
    public var waits = 0
    public var blockedWaits = 0
    public var waitNanosTotal: UInt64 = 0
    public var waitNanosMax: UInt64 = 0
    /// Per-chunk mapping latency (take + map + set access), nanoseconds.
    public var chunkLatencyP50: UInt64 = 0
    public var chunkLatencyP99: UInt64 = 0
    public var chunkLatencyMax: UInt64 = 0
    public var busyNanos: UInt64 = 0
}

/// Maps what coming steps need on its own thread while the GPU computes the current one.
///
/// The engine submits the growth the next step needs (`submit`), launches the current step,
/// then `wait`s on the ticket before launching the next: if the mapper kept up, the wait
/// returns at once. Jobs run in priority order (the step that needs them: lower first, FIFO
/// among equals) and in slices of `sliceChunks` chunks, so a large prefill mapping requested
/// early never holds back the next decode step's few chunks. When idle, the mapper completes
/// retirements and refills the pool's warm reserve, so chunk creation is off the critical path.
///
/// One thread: measured on H100, the driver serializes map + set-access calls (two threads
/// map fewer chunks per second than one; docs/perf.md).
public final class AsyncMapper: @unchecked Sendable {
    public typealias Job = [(tensor: VirtualTensor, chunks: Int)]

    private let memory: VirtualMemory
    private let condition = ConditionLock()
    private struct Item {
        let ticket: UInt64
        let priority: Int
        let sequence: UInt64
        let job: Job
        var holes: [(tensor: VirtualTensor, index: Int)]?
        var cursor = 0
    }

    private var queue: [Item] = []
    /// Chunks mapped before the queue is looked at again (about 1 ms of driver calls); a packed
    /// prefix's run, mapped in one call, counts as one.
    public let sliceChunks: Int
    private var results: [UInt64: Result<Void, VTensorError>] = [:]
    private var nextTicket: UInt64 = 1
    private var stopping = false
    private var stats = MapperStatistics()
    private var latencies: [UInt64] = []
    private var latencyCursor = 0
    private static let latencySamples = 1 << 16
    private var threads: [WorkerThread] = []
    private var setupError: (any Error)?

    /// - Parameters:
    ///   - threadSetup: runs first on the mapper thread (for CUDA: make the context current).
    public init(memory: VirtualMemory, sliceChunks: Int = 32, threadSetup: (@Sendable () throws -> Void)? = nil) {
        precondition(sliceChunks > 0, "slices must map at least one chunk")
        self.memory = memory
        self.sliceChunks = sliceChunks
        // The worker holds the mapper strongly until `shutdown` ends its loop.
        threads = [WorkerThread(name: "vtensor-mapper") { [self] in
            do {
                try threadSetup?()
            } catch {
                self.condition.withLock { self.setupError = error }
            }
            self.run()
        }]
    }

    deinit { shutdown() }

    /// Queues mapping work; returns at once. `priority`: lower runs first (use the step that
    /// needs the memory).
    public func submit(_ job: Job, priority: Int = 0) -> MapTicket {
        condition.withLock {
            let ticket = nextTicket
            nextTicket += 1
            queue.append(Item(ticket: ticket, priority: priority, sequence: ticket, job: job))
            stats.jobsSubmitted += 1
            stats.currentQueueDepth = queue.count
            stats.maxQueueDepth = max(stats.maxQueueDepth, queue.count)
            condition.broadcast()
            return MapTicket(id: ticket)
        }
    }

    /// Whether the job behind the ticket has finished (successfully or not).
    public func isDone(_ ticket: MapTicket) -> Bool {
        condition.withLock { results[ticket.id] != nil }
    }

    /// Blocks until the job is done; rethrows its error. Each ticket is waited on once.
    public func wait(_ ticket: MapTicket) throws {
        let start = monotonicNanos()
        let result: Result<Void, VTensorError> = condition.withLock {
            var blocked = false
            while results[ticket.id] == nil {
                blocked = true
                condition.wait()
            }
            let waited = monotonicNanos() - start
            stats.waits += 1
            if blocked { stats.blockedWaits += 1 }
            stats.waitNanosTotal += waited
            stats.waitNanosMax = max(stats.waitNanosMax, waited)
            return results.removeValue(forKey: ticket.id)!
        }
        try result.get()
    }

    public var statistics: MapperStatistics {
        condition.withLock {
            var s = stats
            let sorted = latencies.sorted()
            if !sorted.isEmpty {
                s.chunkLatencyP50 = sorted[sorted.count / 2]
                s.chunkLatencyP99 = sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
                s.chunkLatencyMax = sorted.last!
            }
            return s
        }
    }

    /// Forgets the measurements so far (benchmarks call this after warm-up).
    public func resetStatistics() {
        condition.withLock {
            let depth = stats.currentQueueDepth
            stats = MapperStatistics()
            stats.currentQueueDepth = depth
            latencies.removeAll(keepingCapacity: true)
            latencyCursor = 0
        }
    }

    /// Finishes queued jobs, then stops the thread. Call it when done: until then the thread
    /// keeps the mapper and its memory manager alive.
    public func shutdown() {
        let running = condition.withLock { () -> Bool in
            guard !stopping else { return false }
            stopping = true
            condition.broadcast()
            return true
        }
        if running {
            threads.forEach { $0.join() }
            // The threads' closures hold the mapper (and through it the memory manager):
            // dropping them breaks the cycle, so both can be released.
            threads = []
        }
    }

    private func record(latency: UInt64) {
        // Caller holds the lock. A ring of samples bounds memory on long runs.
        if latencies.count < Self.latencySamples {
            latencies.append(latency)
        } else {
            latencies[latencyCursor] = latency
            latencyCursor = (latencyCursor + 1) % Self.latencySamples
        }
    }

    private func run() {
        while true {
            let picked: Item? = condition.withLock {
                while queue.isEmpty && !stopping {
                    // Idle: housekeeping in small steps (a few chunks each), looking at the
                    // queue in between, so a job that arrives meanwhile waits for one step at
                    // most. Nothing left to do: sleep until a job arrives or 2 ms pass.
                    condition.unlock()
                    let work = ((try? memory.reclaim(limit: 4)) ?? 0) + ((try? memory.replenish(limit: 4)) ?? 0)
                    condition.lock()
                    if work == 0 && queue.isEmpty && !stopping { _ = condition.wait(seconds: 0.002) }
                }
                guard let best = queue.indices.min(by: { (queue[$0].priority, queue[$0].sequence) < (queue[$1].priority, queue[$1].sequence) }) else {
                    return nil
                }
                return queue.remove(at: best)
            }
            guard var item = picked else { return }
            let start = monotonicNanos()
            var chunkTimes: [UInt64] = []
            var failure: VTensorError?
            if let setupError = condition.withLock({ setupError }) {
                failure = .backend(operation: "mapper thread setup", message: String(describing: setupError))
            } else {
                do {
                    // A tensor freed while its growth waited here (its request left) is passed by.
                    if item.holes == nil { item.holes = try memory.holes(in: item.job, skippingFreed: true) }
                    let holes = item.holes!
                    let end = memory.sliceEnd(holes, from: item.cursor, calls: sliceChunks)
                    try memory.mapHoles(holes[item.cursor..<end], skippingFreed: true) { chunkTimes.append($0) }
                    item.cursor = end
                } catch {
                    failure = VTensorError.from(error)
                }
            }
            let busy = monotonicNanos() - start
            condition.withLock {
                for t in chunkTimes { record(latency: t) }
                stats.chunksMapped += chunkTimes.count
                stats.busyNanos += busy
                if let failure {
                    stats.jobsCompleted += 1
                    stats.jobsFailed += 1
                    results[item.ticket] = .failure(failure)
                } else if item.cursor < item.holes!.count {
                    queue.append(item)  // keeps its priority and place among equals
                    return
                } else {
                    stats.jobsCompleted += 1
                    results[item.ticket] = .success(())
                }
                stats.currentQueueDepth = queue.count
                condition.broadcast()
            }
        }
    }
}
