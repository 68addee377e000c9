import CCUDA

/// A CUDA stream (`cuStreamCreate`), destroyed in `deinit`. Work queued on one stream runs in
/// order; separate streams let copies and page mapping overlap compute.
///
/// `@unchecked Sendable`: the handle never changes and streams may be used from any thread.
public final class CUDAStream: @unchecked Sendable {
    public let context: CUDAContext
    public let handle: CUstream

    /// `nonBlocking` (`CU_STREAM_NON_BLOCKING`) keeps the stream from synchronising with the
    /// legacy default stream, which vtensor never relies on.
    public init(context: CUDAContext, nonBlocking: Bool = true) throws {
        try context.makeCurrent()
        var stream: CUstream? = nil
        let flags = UInt32(nonBlocking ? CU_STREAM_NON_BLOCKING : CU_STREAM_DEFAULT)
        try context.driver.check(context.driver.api.cuStreamCreate(&stream, flags), "cuStreamCreate")
        guard let stream else { preconditionFailure("cuStreamCreate succeeded without a stream") }
        self.context = context
        self.handle = stream
    }

    deinit {
        // cuStreamDestroy returns at once; queued work still completes.
        _ = context.driver.api.cuStreamDestroy(handle)
    }

    /// `cuStreamSynchronize`: waits for everything queued so far.
    public func synchronize() throws {
        try context.driver.check(context.driver.api.cuStreamSynchronize(handle), "cuStreamSynchronize")
    }
}

extension Optional where Wrapped == CUDAStream {
    /// The stream's handle, or the legacy default stream (NULL) for nil.
    var handle: CUstream? { self?.handle }
}
