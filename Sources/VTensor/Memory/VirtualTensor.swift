/// A reserved, virtually contiguous address range whose physical chunks are mapped on demand.
///
/// The base address never changes during the tensor's life, so kernels (and captured CUDA
/// graphs) can keep using it while chunks come and go behind it. All mutation goes through
/// the `VirtualMemory` that made the tensor.
///
/// `@unchecked Sendable`: the mutable slot table is only touched under the owning
/// `VirtualMemory`'s lock; `id`, `base` and sizes are immutable.
public final class VirtualTensor: @unchecked Sendable, CustomStringConvertible {
    public let id: Int
    /// Device virtual address of byte 0.
    public let base: UInt64
    /// Reserved bytes: `chunkCount * chunkSize`.
    public let reservedBytes: Int
    public let chunkSize: Int
    public var chunkCount: Int { slots.count }

    enum Slot: Equatable {
        case empty
        case mapped(PhysicalChunk)
        /// Logically unmapped; physically unmapped once `fence` completes.
        case retiring(PhysicalChunk, Fence)
        /// An alias recorded but not mapped yet: the slot holds a reference on `chunk` (so the
        /// chunk outlives whoever else maps it) and the next grow over the slot maps it here, on
        /// the mapper thread, instead of a fresh chunk. Nothing can read the address before then.
        case pendingAlias(PhysicalChunk)
        /// Claimed by a thread that maps `chunk` here outside the manager's lock (the slot holds
        /// its reference already); `.mapped` when that is done. `fromPending`: the slot was a
        /// pending alias, and becomes one again if the map fails.
        case mapping(PhysicalChunk, fromPending: Bool)
        /// Its fence has completed and a thread unmaps it outside the manager's lock; `.empty`
        /// (and the reference dropped) when that is done.
        case unmapping(PhysicalChunk)

        var chunk: PhysicalChunk? {
            switch self {
            case .empty: return nil
            case .mapped(let chunk), .retiring(let chunk, _), .pendingAlias(let chunk), .mapping(let chunk, _), .unmapping(let chunk):
                return chunk
            }
        }

        /// The chunk this slot holds for data, mapped or about to be (not one retiring).
        var heldChunk: PhysicalChunk? {
            switch self {
            case .mapped(let chunk), .pendingAlias(let chunk), .mapping(let chunk, _): return chunk
            case .empty, .retiring, .unmapping: return nil
            }
        }

        /// A driver call on this slot is running outside the lock: other operations on the slot wait.
        var isInFlight: Bool {
            switch self {
            case .mapping, .unmapping: return true
            default: return false
            }
        }
    }

    var slots: [Slot]
    var isFreed = false
    /// Takes no new mappings (a prefix-cache holder): a grow, including one the mapper thread
    /// still has queued for the request it was, passes it by.
    var isSealed = false
    var reservationReleased = false
    /// Slots in `.mapping` / `.unmapping`: operations on the whole tensor wait for them.
    var mappingsInFlight = 0
    var unmappingsInFlight = 0

    init(id: Int, base: UInt64, chunkCount: Int, chunkSize: Int) {
        self.id = id
        self.base = base
        self.chunkSize = chunkSize
        self.reservedBytes = chunkCount * chunkSize
        self.slots = Array(repeating: .empty, count: chunkCount)
    }

    /// Address of chunk `index`.
    public func address(ofChunk index: Int) -> UInt64 {
        base + UInt64(index * chunkSize)
    }

    public var description: String { "tensor#\(id)@\(hex(base))" }
}
