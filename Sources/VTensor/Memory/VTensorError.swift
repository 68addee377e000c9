/// Errors a user of the virtual-memory layer can cause or meet: bad budgets, misuse of a
/// tensor through a public API, memory exhaustion, and backend failures. Internal invariant
/// violations are preconditions instead.
public enum VTensorError: Error, CustomStringConvertible, Equatable, Sendable {
    case invalidBudget(String)
    case invalidWatermarks(String)
    case outOfMemory(String)
    case misalignedOffset(offset: Int, chunkSize: Int)
    case chunkOutOfRange(tensor: Int, chunk: Int, chunkCount: Int)
    case alreadyMapped(tensor: Int, chunk: Int)
    case notMapped(tensor: Int, chunk: Int)
    case tensorFreed(tensor: Int)
    case invalidSize(String)
    case layoutDoesNotFit(String)
    case unknownRequest(Int)
    case duplicateRequest(Int)
    case capacityExceeded(String)
    case backend(operation: String, message: String)

    public var description: String {
        switch self {
        case .invalidBudget(let why): return "invalid memory budget: \(why)"
        case .invalidWatermarks(let why): return "invalid pool watermarks: \(why)"
        case .outOfMemory(let why): return "out of memory: \(why)"
        case let .misalignedOffset(offset, chunkSize):
            return "offset \(offset) is not a multiple of the chunk size \(chunkSize)"
        case let .chunkOutOfRange(tensor, chunk, count):
            return "chunk \(chunk) is outside tensor \(tensor), which spans \(count) chunks"
        case let .alreadyMapped(tensor, chunk): return "chunk \(chunk) of tensor \(tensor) is already mapped"
        case let .notMapped(tensor, chunk): return "chunk \(chunk) of tensor \(tensor) is not mapped"
        case let .tensorFreed(tensor): return "tensor \(tensor) was already freed"
        case .invalidSize(let why): return "invalid size: \(why)"
        case .layoutDoesNotFit(let why): return "KV layout does not fit: \(why)"
        case .unknownRequest(let id): return "no KV cache for request \(id)"
        case .duplicateRequest(let id): return "request \(id) already has a KV cache"
        case .capacityExceeded(let why): return "capacity exceeded: \(why)"
        case let .backend(operation, message): return "\(operation) failed: \(message)"
        }
    }

    /// Wraps a backend failure; out-of-memory keeps its meaning.
    static func from(_ error: any Error) -> VTensorError {
        if let error = error as? VTensorError { return error }
        if let error = error as? BackendError {
            return error.isOutOfMemory ? .outOfMemory("device: \(error.description)") : .backend(operation: error.operation, message: error.message)
        }
        return .backend(operation: "backend", message: String(describing: error))
    }
}
