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
