import CLinux
import Glibc

/// A dedicated OS thread running one closure. The mapper needs a real thread (not a task on
/// Swift's cooperative pool): it blocks in driver calls and must keep a CUDA context current.
public final class WorkerThread: @unchecked Sendable {
    private var thread = pthread_t()
    private let body: @Sendable () -> Void

    public init(name: String, body: @escaping @Sendable () -> Void) {
        self.body = body
        // passRetained: the thread owns one reference to `self` until its closure returns.
        let context = Unmanaged.passRetained(self).toOpaque()
        let rc = pthread_create(&thread, nil, { raw in
            let worker = Unmanaged<WorkerThread>.fromOpaque(raw!).takeRetainedValue()
            worker.body()
            return nil
        }, context)
        precondition(rc == 0, "pthread_create failed: \(rc)")
        _ = vt_set_thread_name(thread, name)
    }

    public func join() { pthread_join(thread, nil) }
}
