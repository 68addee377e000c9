import Synchronization

/// Loads a library wrapper at most once per process, on first use, from any thread.
///
/// The outcome, failure included, is kept: the environment that decided it does not change
/// while the process runs, and repeated `dlopen`/`cuInit` attempts would only cost time.
/// Sendable: the loaded value sits in an `AtomicLazyReference` (set once, read without a
/// lock) and the loading itself and any failure are behind a `Mutex`.
final class LoadOnce<Value: AnyObject & Sendable>: Sendable {
    private let value = AtomicLazyReference<Value>()
    private let failure = Mutex<(any Error)?>(nil)

    /// The value, loading it with `load` if this is the first call. Other threads wait while
    /// one loads. `load` must not call ``get(_:)`` on the same loader (the mutex is not recursive).
    func get(_ load: () throws -> Value) throws -> Value {
        if let loaded = value.load() { return loaded }
        return try failure.withLock { failure in
            if let loaded = value.load() { return loaded }
            if let failure { throw failure }
            do {
                return value.storeIfNil(try load())
            } catch {
                failure = error
                throw error
            }
        }
    }

    /// The value if it loaded already; never loads and never blocks.
    var loaded: Value? { value.load() }
}
