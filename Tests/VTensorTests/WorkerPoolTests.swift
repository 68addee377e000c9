import Foundation
import Synchronization
import XCTest
@testable import VTensor

/// The CPU forward pass's thread pool: every part runs exactly once per job, jobs do not
/// bleed into each other, callers on several threads are serialized, and a pool with no
/// workers (or maxThreads 1) runs the parts in order on the caller.
final class WorkerPoolTests: XCTestCase {
    func testEveryPartRunsExactlyOncePerJob() {
        let pool = WorkerPool(workers: 3)
        defer { pool.shutdown() }
        for job in 0..<2000 {
            let parts = 1 + job % 17
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: parts)
            counts.initialize(repeating: 0, count: parts)
            pool.run(parts: parts) { part in counts[part] += 1 }
            XCTAssertEqual(Array(UnsafeBufferPointer(start: counts, count: parts)), Array(repeating: 1, count: parts), "job \(job)")
            counts.deallocate()
        }
    }

    /// A worker that holds a part for milliseconds (as a descheduled thread on a busy core)
    /// makes the caller run the next jobs alone; after the solo period the workers take parts again.
    func testStalledWorkerSendsJobsToTheCallerForAWhile() {
        let pool = WorkerPool(workers: 1)
        defer { pool.shutdown() }
        let caller = pthread_self()
        var stalled = false
        for _ in 0..<2000 where !stalled {
            let before = pool.contention.stalls
            pool.run(parts: 4) { _ in
                if pthread_equal(pthread_self(), caller) == 0 { usleep(5000); return }
                // The caller's parts take a moment, so the worker gets to claim one.
                let end = WorkerPool.monotonicNanoseconds() + 50_000
                while WorkerPool.monotonicNanoseconds() < end {}
            }
            stalled = pool.contention.stalls > before
        }
        XCTAssertTrue(stalled, "a worker never took a part")
        let onWorkers = Atomic<Int>(0)
        let soloBefore = pool.contention.soloJobs
        for _ in 0..<5 {
            pool.run(parts: 4) { _ in if pthread_equal(pthread_self(), caller) == 0 { onWorkers.add(1, ordering: .relaxed) } }
        }
        XCTAssertEqual(onWorkers.load(ordering: .relaxed), 0)
        XCTAssertEqual(pool.contention.soloJobs - soloBefore, 5)
        usleep(60_000)
        // Within two seconds (stalls on a loaded machine may start more solo periods meanwhile).
        let deadline = WorkerPool.monotonicNanoseconds() + 2_000_000_000
        while onWorkers.load(ordering: .relaxed) == 0 && WorkerPool.monotonicNanoseconds() < deadline {
            pool.run(parts: 8) { _ in
                if pthread_equal(pthread_self(), caller) == 0 { onWorkers.add(1, ordering: .relaxed) }
                let end = WorkerPool.monotonicNanoseconds() + 20_000
                while WorkerPool.monotonicNanoseconds() < end {}
            }
        }
        XCTAssertGreaterThan(onWorkers.load(ordering: .relaxed), 0, "the workers were not tried again after the solo period")
    }

    /// Shutdown right after jobs, many times: a worker that read the shutdown's generation as a
    /// job before it saw `stopping` used to sleep for good, and the join hung (seen in CI-like runs).
    func testShutdownRightAfterJobsJoinsEveryWorker() {
        for round in 0..<2000 {
            let pool = WorkerPool(workers: 6)
            let sum = Atomic<Int>(0)
            for _ in 0..<(round % 4) { pool.run(parts: 6) { part in sum.add(part, ordering: .relaxed) } }
            pool.shutdown()
            XCTAssertEqual(sum.load(ordering: .relaxed), 15 * (round % 4))
        }
    }

    /// More workers than cores, parts that sometimes sleep: workers wake late, after jobs they
    /// were meant for have ended; each part still runs exactly once, in its own job.
    func testOversubscribedWorkersNeverTouchAnEndedJob() {
        let pool = WorkerPool(workers: 7)
        defer { pool.shutdown() }
        for job in 0..<600 {
            let parts = 1 + job % 23
            let counts = UnsafeMutablePointer<Int>.allocate(capacity: parts)
            counts.initialize(repeating: 0, count: parts)
            let owner = Atomic<Int>(job)
            pool.run(parts: parts) { part in
                XCTAssertEqual(owner.load(ordering: .relaxed), job, "a part of job \(job) ran after its job")
                if part % 7 == 3 { usleep(50) }
                counts[part] += 1
            }
            owner.store(-1, ordering: .relaxed)
            XCTAssertEqual(Array(UnsafeBufferPointer(start: counts, count: parts)), Array(repeating: 1, count: parts), "job \(job)")
            counts.deallocate()
        }
    }

    func testJobsAfterTheWorkersFellAsleep() {
        let pool = WorkerPool(workers: 2)
        defer { pool.shutdown() }
        for _ in 0..<3 {
            usleep(2000)  // longer than the spin: the workers sleep, and the next job must wake them
            let total = Atomic<Int>(0)
            pool.run(parts: 64) { part in total.add(part, ordering: .relaxed) }
            XCTAssertEqual(total.load(ordering: .relaxed), 64 * 63 / 2)
        }
    }

    func testCallersOnSeveralThreadsAreSerialized() {
        let pool = WorkerPool(workers: 2)
        defer { pool.shutdown() }
        let total = Atomic<Int>(0)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<200 { pool.run(parts: 8) { _ in total.add(1, ordering: .relaxed) } }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 4 * 200 * 8)
    }

    func testWithoutWorkersThePartsRunInOrderOnTheCaller() {
        for (pool, limit) in [(WorkerPool(workers: 0), Int.max), (WorkerPool(workers: 2), 1)] {
            var order: [Int] = []
            let caller = pthread_self()
            pool.run(parts: 5, maxThreads: limit) { part in
                XCTAssertTrue(pthread_equal(pthread_self(), caller) != 0)
                order.append(part)
            }
            XCTAssertEqual(order, [0, 1, 2, 3, 4])
            pool.shutdown()
        }
    }
}
