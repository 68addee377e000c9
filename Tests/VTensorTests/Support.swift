@testable import VTensor

/// Page-sized chunks keep host tests fast while exercising many chunks.
let testChunk = 4096

func makeHost(capacityChunks: Int = 4096, slabParts: Bool = false) throws -> HostBackend {
    try HostBackend(chunkSize: testChunk, capacityBytes: capacityChunks * testChunk, slabParts: slabParts)
}

func makeMemory(_ backend: any MemoryBackend, budgetChunks: Int, low: Int = 2, high: Int = 8) throws -> VirtualMemory {
    try VirtualMemory(backend: backend, budget: .bytes(budgetChunks * backend.chunkSize), lowWatermark: low, highWatermark: high)
}

func store(_ value: UInt32, at address: UInt64) {
    pointer(address).storeBytes(of: value, as: UInt32.self)
}

func load(_ address: UInt64) -> UInt32 {
    pointer(address).load(as: UInt32.self)
}

/// The accounting the manager reports must match what the host backend actually holds.
func backendAgrees(_ memory: VirtualMemory, _ host: HostBackend) -> [String] {
    memory.audit { backendAgrees($0, host) }
}

/// Compares under the manager's lock, so a concurrent mapper cannot slip in between.
func backendAgrees(_ a: MemoryAccounting, _ host: HostBackend) -> [String] {
    let c = host.census()
    var problems: [String] = []
    if c.liveChunks != a.created { problems.append("backend has \(c.liveChunks) chunks, manager says \(a.created)") }
    if c.mappings != a.mappings { problems.append("backend has \(c.mappings) mappings, manager says \(a.mappings)") }
    if c.reservations != a.reservations { problems.append("backend has \(c.reservations) reservations, manager says \(a.reservations)") }
    if c.slabs != a.slabs { problems.append("backend has \(c.slabs) slabs, manager says \(a.slabs)") }
    if c.runMappings != a.runMappings { problems.append("backend has \(c.runMappings) run mappings, manager says \(a.runMappings)") }
    return problems
}
