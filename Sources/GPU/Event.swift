import CCUDA

/// A CUDA event (`cuEventCreate`): a marker in a stream to wait for, poll, or time against.
///
/// `@unchecked Sendable`: the handle never changes and events may be used from any thread.
public final class CUDAEvent: @unchecked Sendable {
    public let context: CUDAContext
    public let handle: CUevent
    /// Whether the event records timestamps; events without are cheaper to record and wait on.
    public let timing: Bool

    public init(context: CUDAContext, timing: Bool = false) throws {
        try context.makeCurrent()
        var event: CUevent? = nil
        let flags = UInt32(timing ? CU_EVENT_DEFAULT : CU_EVENT_DISABLE_TIMING)
        try context.driver.check(context.driver.api.cuEventCreate(&event, flags), "cuEventCreate")
        guard let event else { preconditionFailure("cuEventCreate succeeded without an event") }
        self.context = context
        self.handle = event
        self.timing = timing
    }

    deinit {
        _ = context.driver.api.cuEventDestroy(handle)
    }

    /// `cuEventRecord`: marks the current end of `stream` (nil: the legacy default stream).
    public func record(on stream: CUDAStream?) throws {
        try context.driver.check(context.driver.api.cuEventRecord(handle, stream.handle), "cuEventRecord")
    }

    /// `cuEventQuery` without blocking: `CUDA_ERROR_NOT_READY` means false, not an error.
    public func isComplete() throws -> Bool {
        let result = context.driver.api.cuEventQuery(handle)
        if result == CUDAError.notReady.code { return false }
        try context.driver.check(result, "cuEventQuery")
        return true
    }

    /// `cuEventSynchronize`: blocks until the recorded work is done.
    public func synchronize() throws {
        try context.driver.check(context.driver.api.cuEventSynchronize(handle), "cuEventSynchronize")
    }

    /// `cuEventElapsedTime`: milliseconds between two completed timing events.
    public static func elapsedMilliseconds(from start: CUDAEvent, to end: CUDAEvent) throws -> Float {
        precondition(start.timing && end.timing, "elapsed time needs events created with timing: true")
        var milliseconds: Float = 0
        try start.context.driver.check(
            start.context.driver.api.cuEventElapsedTime(&milliseconds, start.handle, end.handle), "cuEventElapsedTime")
        return milliseconds
    }
}
