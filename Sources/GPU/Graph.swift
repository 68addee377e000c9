import CCUDA

/// A CUDA graph captured from the kernels a closure queues on a stream, instantiated once and
/// replayed with one launch. Addresses and arguments are frozen at capture: the caller replays
/// it only while they are unchanged (virtual-tensor KV addresses are stable, which is what makes
/// decode steps capturable).
public final class CUDAGraphExec: @unchecked Sendable {
    let context: CUDAContext
    let api: GraphAPI
    let exec: CUgraphExec

    /// Whether the driver supports stream capture.
    public static func isSupported(context: CUDAContext) -> Bool { context.driver.api.graphs != nil }

    /// Captures what `body` queues on `stream` (nothing runs during capture). If `body` throws,
    /// the capture is ended and discarded and the error rethrown.
    public init(context: CUDAContext, stream: CUDAStream, body: () throws -> Void) throws {
        guard let api = context.driver.api.graphs else {
            throw GPUError.symbolNotFound(symbol: "cuStreamBeginCapture", library: "libcuda.so.1 (CUDA graphs)")
        }
        self.context = context
        self.api = api
        try context.makeCurrent()
        try context.driver.check(api.beginCapture(stream.handle, 1), "cuStreamBeginCapture")
        var graph: CUgraph? = nil
        do {
            try body()
        } catch {
            _ = api.endCapture(stream.handle, &graph)
            if let graph { _ = api.destroy(graph) }
            throw error
        }
        try context.driver.check(api.endCapture(stream.handle, &graph), "cuStreamEndCapture")
        guard let graph else { preconditionFailure("cuStreamEndCapture succeeded without a graph") }
        defer { _ = api.destroy(graph) }
        var exec: CUgraphExec? = nil
        try context.driver.check(api.instantiate(&exec, graph, 0), "cuGraphInstantiateWithFlags")
        guard let exec else { preconditionFailure("cuGraphInstantiateWithFlags succeeded without an executable graph") }
        self.exec = exec
    }

    deinit { _ = api.destroyExec(exec) }

    /// Queues the whole graph on `stream`.
    public func launch(on stream: CUDAStream) throws {
        try context.driver.check(api.launch(exec, stream.handle), "cuGraphLaunch")
    }
}
