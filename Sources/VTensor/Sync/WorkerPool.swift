import Glibc
import Synchronization

/// Persistent worker threads for the CPU forward pass's parallel loops. A decode step on the
/// CPU hands work to the other cores a few hundred times (each matmul, attention); through
/// `DispatchQueue.concurrentPerform` every hand-off wakes a sleeping thread through the kernel
/// (about 12% of a SmolLM2 step on two cores, by perf). Here workers spin on a generation
/// counter for a while after each job, so back-to-back jobs start without a system call, and
/// sleep on a condition variable once the loop has gone quiet.
///
/// Protocol: the caller writes the job, then bumps `generation` (release); each worker handles
/// every generation exactly once (takes parts while any are left) and then counts itself in
/// `acks`; the caller returns only when all parts are done and every worker has acknowledged,
/// so no worker can still be reading the job when the next one is written.
///
/// `run` takes one caller at a time (a lock serializes callers) and is not reentrant; the
/// caller's thread takes parts too.
public final class WorkerPool: @unchecked Sendable {
    /// One pool for the process, with a worker per core beyond the first.
    public static let shared = WorkerPool(workers: max(0, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1))

    public let workers: Int
    private let generation = Atomic<Int>(0)
    private let nextPart = Atomic<Int>(0)
    private let remaining = Atomic<Int>(0)
    private let acks = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let wake = ConditionLock()
    private let callers = ConditionLock()
    // The job: written by the caller before the generation bump, read by workers after it.
    private var job: ((Int) -> Void)?
    private var parts = 0
    private var threads: [WorkerThread] = []
    /// How long an idle worker spins before it sleeps.
    private static let spinNanoseconds: UInt64 = 200_000

    public init(workers: Int) {
        self.workers = max(0, workers)
        for index in 0..<self.workers {
            // The threads hold the pool until `shutdown` (the shared pool lives as long as the process).
            threads.append(WorkerThread(name: "vtensor-cpu-\(index)") { self.workerLoop() })
        }
    }

    /// Calls `body(part)` for every part in 0..<parts, on the caller's thread and the workers,
    /// and returns when all are done. `maxThreads` 1 (or a pool without workers) runs them in order here.
    public func run(parts: Int, maxThreads: Int = .max, _ body: (Int) -> Void) {
        guard parts > 1, workers > 0, maxThreads > 1, !stopping.load(ordering: .relaxed) else {
            for part in 0..<parts { body(part) }
            return
        }
        callers.lock()
        defer { callers.unlock() }
        withoutActuallyEscaping(body) { body in
            job = body
            self.parts = parts
            nextPart.store(0, ordering: .relaxed)
            remaining.store(parts, ordering: .relaxed)
            acks.store(0, ordering: .relaxed)
            generation.add(1, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wake.withLock { wake.broadcast() } }
            drain()
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 || acks.load(ordering: .acquiring) < workers {
                spins += 1
                if spins > 2000 { sched_yield() }
            }
            job = nil
        }
    }

    /// Stops and joins the workers (for pools other than `shared`); `run` then works alone.
    public func shutdown() {
        callers.lock()
        defer { callers.unlock() }
        guard !stopping.load(ordering: .sequentiallyConsistent) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        wake.withLock { wake.broadcast() }
        for thread in threads { thread.join() }
        threads.removeAll()
    }

    /// Takes parts of the current job until none are left.
    private func drain() {
        guard let body = job else { return }
        let count = parts
        while true {
            let part = nextPart.add(1, ordering: .relaxed).oldValue
            if part >= count { return }
            body(part)
            remaining.subtract(1, ordering: .releasing)
        }
    }

    private func workerLoop() {
        var seen = 0
        while true {
            var start: UInt64 = 0
            var spins = 0
            while generation.load(ordering: .acquiring) == seen {
                spins += 1
                if spins & 255 != 0 { continue }  // read the clock now and then only
                let now = Self.monotonicNanoseconds()
                if start == 0 { start = now }
                if now - start > Self.spinNanoseconds {
                    // Sleep until the next job; the check under the lock (and the caller's
                    // broadcast under it) means no bump is missed.
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    wake.lock()
                    while generation.load(ordering: .sequentiallyConsistent) == seen { wake.wait() }
                    wake.unlock()
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    start = 0
                }
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .sequentiallyConsistent) { return }
            drain()
            acks.add(1, ordering: .releasing)
        }
    }

    private static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
