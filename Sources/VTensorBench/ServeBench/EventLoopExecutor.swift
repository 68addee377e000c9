import NIOCore

/// Runs the client's tasks on its own event loops instead of Swift's shared cooperative pool.
///
/// Two reasons. The pool has a thread per core, and anything else in the process that blocks
/// one (a synchronous test waiting on a subprocess, say) would stall the sending and the
/// timing of requests. And a request's continuation then resumes on the event loop that
/// completed its response (`any()` is the current loop when called from one): no hop to
/// another thread a request.
final class EventLoopGroupExecutor: TaskExecutor {
    let group: any EventLoopGroup

    init(group: any EventLoopGroup) { self.group = group }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        group.any().execute { job.runSynchronously(on: executor) }
    }
}
