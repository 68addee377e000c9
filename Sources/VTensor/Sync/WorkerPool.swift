import Glibc
import Synchronization

/// Persistent worker threads for the CPU forward pass's parallel loops. A decode step on the
/// CPU hands work to the other cores a few hundred times (each matmul, attention); through
/// `DispatchQueue.concurrentPerform` every hand-off wakes a sleeping thread through the kernel
/// (about 12% of a SmolLM2 step on two cores, by perf). Here workers spin on the job ticket for
/// a while after each job, so back-to-back jobs start without a system call, and sleep on a
/// condition variable once the loop has gone quiet.
///
/// No job waits for every worker to show up: on a shared machine a worker may not be scheduled
/// for milliseconds, and the caller and the workers that do run take its parts. A part is
/// claimed with one compare-and-swap on a ticket that packs (job generation, parts, next part),
/// so a worker that wakes late claims nothing of a finished job and never reads its closure;
/// the caller returns once every part is done. Callers split work into several parts a thread
/// so that a stalled thread holds back at most one small part.
///
/// A part a descheduled worker has claimed still holds the caller until that worker runs again
/// (on a core shared with a busy process, a scheduler slice: milliseconds), so two threads on a
/// contended machine can be slower than one. The caller measures how long it waits for others
/// after finishing its own parts; a wait longer than its own work plus `stallNanoseconds` is a
/// stall. So is a job during which the caller itself was off its core for a good share of the
/// time (its thread's CPU time against the clock, sampled every few jobs): it then held a part
/// that the workers waited for. After a stall, jobs run on the caller alone for a while (20 ms,
/// four times longer each time stalls recur, up to two seconds; the idle workers sleep, so the
/// scheduler gives the caller a core to itself), then the workers are tried again: on a machine
/// that stays busy, a probe (and its stall) comes every two seconds.
///
/// `run` takes one caller at a time (a lock serializes callers) and is not reentrant; the
/// caller's thread takes parts too.
public final class WorkerPool: @unchecked Sendable {
    /// One pool for the process, with a worker per core beyond the first.
    public static let shared = WorkerPool(workers: max(0, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))) - 1))

    public let workers: Int
    /// (generation << 40) | (parts << 20) | next part.
    private let ticket = Atomic<UInt64>(0)
    private let remaining = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let stopping = Atomic<Bool>(false)
    private let wake = ConditionLock()
    private let callers = ConditionLock()
    // The job: written by the caller before the ticket is published; read only by a thread that
    // has claimed one of its parts (so the job cannot end, or be replaced, under it).
    private var job: ((Int) -> Void)?
    private var threads: [WorkerThread] = []
    /// How long an idle worker spins before it sleeps.
    private static let spinNanoseconds: UInt64 = 200_000
    /// How many parts a parallel loop cuts its work into for each thread it may use.
    public static let partsPerThread = 2
    /// Most parts one job may have (20 bits of the ticket).
    public static let maxParts = (1 << 20) - 1
    /// A wait for other threads' parts this much longer than the caller's own work is a stall.
    static let stallNanoseconds: UInt64 = 300_000
    /// How long jobs run on the caller alone after a first stall, and at most.
    static let firstSoloNanoseconds: UInt64 = 20_000_000
    static let longestSoloNanoseconds: UInt64 = 2_000_000_000
    /// Jobs without a stall after which a stall counts as a first one again.
    static let cleanJobsToForget = 256
    /// Every this many parallel jobs, the caller's CPU time is compared with the clock.
    static let cpuTimeSampleInterval = 8
    /// Sampled jobs shorter than this are not judged (the clocks' resolution and costs).
    static let cpuTimeSampleMinimumNanoseconds: UInt64 = 200_000

    // Guarded by `callers`.
    private var soloUntil: UInt64 = 0
    private var soloPeriod: UInt64 = 0
    private var cleanJobs = 0
    private var parallelJobs = 0
    private let stallCount = Atomic<Int>(0)
    private let soloJobCount = Atomic<Int>(0)

    /// Stalls seen (the caller held up by a worker, or off its own core) and jobs run on the
    /// caller alone after them.
    public var contention: (stalls: Int, soloJobs: Int) {
        (stallCount.load(ordering: .relaxed), soloJobCount.load(ordering: .relaxed))
    }

    private static func generation(_ t: UInt64) -> UInt64 { t >> 40 }
    private static func parts(_ t: UInt64) -> Int { Int((t >> 20) & 0xFFFFF) }
    private static func next(_ t: UInt64) -> Int { Int(t & 0xFFFFF) }

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
        precondition(parts <= Self.maxParts, "\(parts) parts exceed the pool's \(Self.maxParts)")
        callers.lock()
        defer { callers.unlock() }
        let start = Self.monotonicNanoseconds()
        if start < soloUntil {
            soloJobCount.add(1, ordering: .relaxed)
            for part in 0..<parts { body(part) }
            return
        }
        parallelJobs &+= 1
        let cpuStart = parallelJobs % Self.cpuTimeSampleInterval == 0 ? Self.threadCPUNanoseconds() : nil
        withoutActuallyEscaping(body) { body in
            job = body
            remaining.store(parts, ordering: .relaxed)
            let generation = (Self.generation(ticket.load(ordering: .relaxed)) + 1) & 0xFFFFFF
            ticket.store(generation << 40 | UInt64(parts) << 20, ordering: .sequentiallyConsistent)
            if sleepers.load(ordering: .sequentiallyConsistent) > 0 { wake.withLock { wake.broadcast() } }
            drain(generation)
            let ownDone = Self.monotonicNanoseconds()
            var spins = 0
            while remaining.load(ordering: .acquiring) > 0 {
                spins += 1
                if spins > 2000 { sched_yield() }
            }
            job = nil
            let end = spins == 0 ? ownDone : Self.monotonicNanoseconds()
            var descheduled = false
            if let cpuStart, end - start >= Self.cpuTimeSampleMinimumNanoseconds {
                // Off the core for over a third of the job: the caller shares its core with another busy thread.
                descheduled = (Self.threadCPUNanoseconds() - cpuStart) * 3 < (end - start) * 2
            }
            noteWait(own: ownDone - start, waited: end - ownDone, descheduled: descheduled, now: end)
        }
    }

    /// Starts or lengthens a solo period after a stall; forgets stalls after enough clean jobs.
    private func noteWait(own: UInt64, waited: UInt64, descheduled: Bool, now: UInt64) {
        if descheduled || waited > own + Self.stallNanoseconds {
            stallCount.add(1, ordering: .relaxed)
            soloPeriod = soloPeriod == 0 ? Self.firstSoloNanoseconds : min(soloPeriod * 4, Self.longestSoloNanoseconds)
            soloUntil = now + soloPeriod
            cleanJobs = 0
        } else if soloPeriod > 0 {
            cleanJobs += 1
            if cleanJobs >= Self.cleanJobsToForget { soloPeriod = 0 }
        }
    }

    /// Stops and joins the workers (for pools other than `shared`); `run` then works alone.
    public func shutdown() {
        callers.lock()
        defer { callers.unlock() }
        guard !stopping.load(ordering: .sequentiallyConsistent) else { return }
        stopping.store(true, ordering: .sequentiallyConsistent)
        let generation = (Self.generation(ticket.load(ordering: .relaxed)) + 1) & 0xFFFFFF
        ticket.store(generation << 40, ordering: .sequentiallyConsistent)
        wake.withLock { wake.broadcast() }
        for thread in threads { thread.join() }
        threads.removeAll()
    }

    /// Claims and runs parts of job `generation` until none are left (or another job is out).
    private func drain(_ generation: UInt64) {
        var t = ticket.load(ordering: .acquiring)
        while Self.generation(t) == generation && Self.next(t) < Self.parts(t) {
            let (exchanged, current) = ticket.compareExchange(expected: t, desired: t + 1, ordering: .acquiringAndReleasing)
            guard exchanged else {
                t = current
                continue
            }
            job!(Self.next(t))
            remaining.subtract(1, ordering: .releasing)
            t = ticket.load(ordering: .acquiring)
        }
    }

    private func workerLoop() {
        var seen: UInt64 = 0
        while true {
            var start: UInt64 = 0
            var spins = 0
            // `stopping` is checked with the generation: shutdown may publish its generation
            // after this thread read `seen` (it then looks like a job already taken).
            while Self.generation(ticket.load(ordering: .acquiring)) == seen && !stopping.load(ordering: .relaxed) {
                spins += 1
                if spins & 255 != 0 { continue }  // read the clock now and then only
                let now = Self.monotonicNanoseconds()
                if start == 0 { start = now }
                if now - start > Self.spinNanoseconds {
                    // Sleep until the next job; the check under the lock (and the caller's
                    // broadcast under it) means no job is missed.
                    sleepers.add(1, ordering: .sequentiallyConsistent)
                    wake.lock()
                    while Self.generation(ticket.load(ordering: .sequentiallyConsistent)) == seen
                            && !stopping.load(ordering: .sequentiallyConsistent) { wake.wait() }
                    wake.unlock()
                    sleepers.subtract(1, ordering: .sequentiallyConsistent)
                    start = 0
                }
            }
            if stopping.load(ordering: .sequentiallyConsistent) { return }
            seen = Self.generation(ticket.load(ordering: .acquiring))
            drain(seen)
        }
    }

    static func threadCPUNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }

    static func monotonicNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
    }
}
