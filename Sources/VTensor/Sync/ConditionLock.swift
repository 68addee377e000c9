import Glibc

/// A mutex with a condition variable (pthread), for the few places that must sleep until
/// another thread changes state: the mapper's queue and its tickets. `Synchronization.Mutex`
/// has no condition variable, hence this class.
///
/// `@unchecked Sendable`: the pthread objects are heap-allocated once, never moved, and are
/// the synchronization themselves.
public final class ConditionLock: @unchecked Sendable {
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    private let condition: UnsafeMutablePointer<pthread_cond_t>

    public init() {
        mutex = .allocate(capacity: 1)
        condition = .allocate(capacity: 1)
        precondition(pthread_mutex_init(mutex, nil) == 0, "pthread_mutex_init failed")
        precondition(pthread_cond_init(condition, nil) == 0, "pthread_cond_init failed")
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    public func lock() { pthread_mutex_lock(mutex) }
    public func unlock() { pthread_mutex_unlock(mutex) }

    @inline(__always)
    public func withLock<T>(_ body: () throws -> T) rethrows -> T {
        lock()
        defer { unlock() }
        return try body()
    }

    /// Waits on the condition; the caller must hold the lock.
    public func wait() { pthread_cond_wait(condition, mutex) }

    /// Waits at most `seconds`; returns false on timeout. The caller must hold the lock.
    public func wait(seconds: Double) -> Bool {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let nanos = Int(now.tv_nsec) + Int((seconds - Double(Int(seconds))) * 1e9)
        var deadline = timespec()
        deadline.tv_sec = now.tv_sec + Int(seconds) + nanos / 1_000_000_000
        deadline.tv_nsec = nanos % 1_000_000_000
        return pthread_cond_timedwait(condition, mutex, &deadline) == 0
    }

    public func broadcast() { pthread_cond_broadcast(condition) }
}

/// Monotonic time in nanoseconds.
@inline(__always)
public func monotonicNanos() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
