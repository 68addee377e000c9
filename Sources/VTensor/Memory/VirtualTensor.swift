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
        /// Given back by its owner but still mapped: part of a run of a slab that maps (and
        /// unmaps) only whole, whose other slots are still held. The run retires whole when its
        /// last held slot is given back; a grow over the slot takes the chunk back (nobody else
        /// maps it: a slot stranded holds nothing anyone can alias). Its memory is in use.
        case stranded(PhysicalChunk)

        var chunk: PhysicalChunk? {
            switch self {
            case .empty: return nil
            case .mapped(let chunk), .retiring(let chunk, _), .pendingAlias(let chunk), .mapping(let chunk, _), .unmapping(let chunk),
                 .stranded(let chunk):
                return chunk
            }
        }

        /// The chunk this slot holds for data, mapped or about to be (not one retiring or stranded).
        var heldChunk: PhysicalChunk? {
            switch self {
            case .mapped(let chunk), .pendingAlias(let chunk), .mapping(let chunk, _): return chunk
            case .empty, .retiring, .unmapping, .stranded: return nil
            }
        }

        var isStranded: Bool { if case .stranded = self { return true } else { return false } }

        /// A driver call on this slot is running outside the lock: other operations on the slot wait.
        var isInFlight: Bool {
            switch self {
            case .mapping, .unmapping: return true
            default: return false
            }
        }
    }

    /// Written only through `setSlot` and `replaceSlots`, which keep `leadingMapped` true.
    private(set) var slots: [Slot]
    /// A lower bound on the slots mapped from index 0 on: every slot below it is `.mapped`.
    /// `VirtualMemory.holes` scans from here instead of from 0 (a decode row's growth job covers
    /// every chunk the row maps, every step), and raises it to what it found; any write of
    /// another state below it lowers it.
    private(set) var leadingMapped = 0

    func setSlot(_ index: Int, _ slot: Slot) {
        if index < leadingMapped {
            if case .mapped = slot {} else { leadingMapped = index }
        }
        slots[index] = slot
    }

    /// Replaces the whole table (a hand-over moves it to a successor).
    func replaceSlots(_ table: [Slot]) {
        precondition(table.count == slots.count, "a slot table keeps its size")
        slots = table
        leadingMapped = 0
    }

    /// Raises `leadingMapped` to `count` after a scan found slots 0..<count all mapped.
    func noteLeadingMapped(_ count: Int) {
        if count > leadingMapped { leadingMapped = count }
    }
    /// Slots mapped together by one `mapRun` (adjacent chunks of a slab): unmapped whole.
    var runs = MappingRuns()
    var isFreed = false
    /// Takes no new mappings (a prefix-cache holder): a grow, including one the mapper thread
    /// still has queued for the request it was, passes it by.
    var isSealed = false
    /// Slots below this are written whole (every byte) before anything reads them: a grow may
    /// map its fresh chunks there as runs of one slab (`VirtualMemory.freshSlabChunks`).
    var wholeWritesBelow = 0
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

/// The runs of a tensor's slots that one driver mapping covers (a slab's chunks mapped with one
/// `mapRun`). A run's slots are all mapped (some of them may be stranded: given back, waiting
/// for the rest), all retiring, or all being unmapped: it is retired and unmapped whole, or split
/// into single mappings first.
struct MappingRuns {
    /// First slot -> slots in the run (two or more).
    private(set) var lengths: [Int: Int] = [:]
    /// Every slot of a run -> the run's first slot.
    private var firstOf: [Int: Int] = [:]

    var isEmpty: Bool { lengths.isEmpty }
    var count: Int { lengths.count }

    func run(containing index: Int) -> Range<Int>? {
        guard !lengths.isEmpty, let first = firstOf[index] else { return nil }
        return first..<(first + lengths[first]!)
    }

    mutating func add(_ run: Range<Int>) {
        precondition(run.count > 1, "a run has two slots or more")
        lengths[run.lowerBound] = run.count
        for index in run { firstOf[index] = run.lowerBound }
    }

    mutating func remove(_ run: Range<Int>) {
        lengths[run.lowerBound] = nil
        for index in run { firstOf[index] = nil }
    }

    /// The runs that `indices` cover only in part.
    func cut(by indices: [Int]) -> [Range<Int>] {
        guard !lengths.isEmpty else { return [] }
        let chosen = Set(indices)
        var seen: Set<Int> = []
        var cut: [Range<Int>] = []
        for index in indices {
            guard let run = run(containing: index), seen.insert(run.lowerBound).inserted else { continue }
            if !run.allSatisfy(chosen.contains) { cut.append(run) }
        }
        return cut
    }
}
