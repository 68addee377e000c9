import Dispatch
import Glibc
import Synchronization
import Testing
@testable import VTensor

/// The mapper makes its driver calls outside the memory manager's lock (slots claimed under it,
/// mapped or unmapped without it, published under it). Random work on this thread runs against a
/// mapper that keeps growing the same tensors: every operation the engine uses, on tensors
/// whose growth is in flight. After every operation the books agree with themselves and with the
/// host backend's own census; every few operations each mapped slot reads what was written into
/// the physical chunk the manager says it maps; at the end nothing is left.
@Suite struct ConcurrentMemoryTests {
    struct Live {
        var tensor: VirtualTensor
        var chunks: Int
        var ticket: MapTicket?
    }

    /// `accessPerRun`: the mapper grants access, and unmaps, once per run of adjacent chunks.
    @Test(arguments: [false, true], [false, true])
    func randomWorkAgainstAMapperGrowingTheSameTensors(ordersWork: Bool, accessPerRun: Bool) throws {
        // Random aliasing takes any part of a packed slab: a backend that maps slabs in part (the
        // engine's randomized suite runs slabs that map only whole, as on CUDA).
        let host = try HostBackend(chunkSize: testChunk, capacityBytes: 8192 * testChunk, ordersWork: ordersWork, slabParts: true)
        let counts = try run(host, seed: (ordersWork ? 7 : 11) + (accessPerRun ? 100 : 0), accessPerRun: accessPerRun)
        // The manager gone (its copy-on-write scratch range too), the device holds nothing.
        #expect(host.census() == .init(liveChunks: 0, mappings: 0, reservations: 0))
        // The run did what it is for. How many frees land while the mapper still maps depends on
        // the machine's load (17 and 20 in one loaded run on two shared cores): enough to be sure the race is run.
        #expect(counts["freed while mapping", default: 0] >= 5, "\(counts)")
        #expect(counts["handed over", default: 0] > 50 && counts["aliased", default: 0] > 200 && counts["leases", default: 0] > 50, "\(counts)")
        // Slab runs were mapped, and some were cut in part and split. A pack needs a source the
        // mapper has mapped two chunks of by then, so how many of the ~115 tries pack depends on
        // the load too (49 in one full-suite run on two shared cores).
        #expect(counts["packed", default: 0] >= 25 && counts["run mappings seen", default: 0] > 0 && counts["runs split", default: 0] > 0, "\(counts)")
    }

    func run(_ host: HostBackend, seed: UInt64, accessPerRun: Bool) throws -> [String: Int] {
        let memory = try VirtualMemory(backend: host, budget: .bytes(8192 * testChunk), lowWatermark: 8, highWatermark: 24,
                                       accessPerRun: accessPerRun, unmapPerRun: accessPerRun)
        let mapper = AsyncMapper(memory: memory, sliceChunks: 8)
        var rng = SplitMix64(seed: seed)
        func pick(_ n: Int) -> Int { Int(rng.next() % UInt64(n)) }
        var live: [Live] = []
        // Device work: leases on mapped chunks that another thread ends a moment later (a fence
        // the manager waits for under its lock then completes without this thread).
        let leasesOpen = Mutex(0)
        var counts: [String: Int] = [:]
        var nextValue: UInt32 = 1

        /// Writes a new value into each distinct chunk mapped by a finished tensor (through one of
        /// its mappings), then reads every mapping of it: all must see that value.
        func checkContents() throws {
            var finished: [VirtualTensor] = []
            for entry in live {
                if let ticket = entry.ticket, !mapper.isDone(ticket) { continue }
                finished.append(entry.tensor)
            }
            let places = memory.inspect { inspector in
                finished.flatMap { tensor in
                    (0..<tensor.chunkCount).compactMap { index in
                        inspector.physicalChunk(tensor, chunk: index).map { (tensor, index, $0) }
                    }
                }
            }
            var written: [PhysicalChunk: UInt32] = [:]
            for (tensor, index, chunk) in places where written[chunk] == nil {
                written[chunk] = nextValue
                store(nextValue, at: tensor.address(ofChunk: index) + 8)
                nextValue += 1
            }
            for (tensor, index, chunk) in places {
                let seen = load(tensor.address(ofChunk: index) + 8)
                #expect(seen == written[chunk], "\(tensor) chunk \(index) reads \(seen), its chunk holds \(written[chunk]!)")
            }
        }

        for step in 0..<1500 {
            let op = live.count < 6 ? 0 : pick(11)
            counts["\(op)", default: 0] += 1
            switch op {
            case 0, 1:
                // A new tensor, maybe aliasing a live one's held chunks, grown on the mapper.
                let size = 1 + pick(24)
                let tensor = try memory.makeTensor(bytes: size * testChunk)
                if !live.isEmpty, pick(2) == 0 {
                    let source = live[pick(live.count)].tensor
                    let held = memory.inspect { inspector in
                        (0..<min(size, source.chunkCount)).prefix { inspector.isHeld(source, chunk: $0) }.count
                    }
                    if held > 0 {
                        let k = 1 + pick(held)
                        try memory.aliasOnGrow((0..<k).map { (tensor, $0, source, $0) })
                        counts["aliased", default: 0] += k
                    }
                }
                let chunks = 1 + pick(size)
                let ticket = mapper.submit([(tensor, chunks)], priority: pick(3))
                if pick(4) == 0 {
                    // Gone at once (a request aborted as it starts): its growth is queued or running.
                    if !mapper.isDone(ticket) { counts["freed while mapping", default: 0] += 1 }
                    try memory.free(tensor)
                } else {
                    live.append(Live(tensor: tensor, chunks: chunks, ticket: ticket))
                }
            case 2:
                // Freed, often while its growth is queued or in flight.
                let victim = live.remove(at: pick(2) == 0 ? live.count - 1 : pick(live.count))
                if let ticket = victim.ticket, !mapper.isDone(ticket) { counts["freed while mapping", default: 0] += 1 }
                try memory.free(victim.tensor)
            case 3:
                let i = pick(live.count)
                try memory.shrink(live[i].tensor, toChunks: pick(live[i].chunks + 1))
            case 4:
                // Handed over: the queued growth passes the old object by; the successor grows again.
                let i = pick(live.count)
                let successor = try memory.handOver(live[i].tensor)
                live[i].tensor = successor
                live[i].ticket = mapper.submit([(successor, live[i].chunks)], priority: pick(3))
                counts["handed over", default: 0] += 1
            case 5:
                let i = pick(live.count)
                let tensor = live[i].tensor
                try memory.release(tensor, chunks: (0..<tensor.chunkCount).filter { _ in pick(3) == 0 })
            case 6:
                let i = pick(live.count)
                do {
                    try memory.makePrivate(live[i].tensor, chunk: pick(live[i].tensor.chunkCount))
                } catch VTensorError.notMapped {
                    counts["private of a hole", default: 0] += 1
                }
            case 7:
                _ = try memory.reclaim(limit: 1 + pick(16))
            case 8:
                // This thread grows the same tensor the mapper may be growing.
                let i = pick(live.count)
                try memory.grow(live[i].tensor, toChunks: live[i].chunks)
            case 9:
                // A mapped prefix packed into a slab, held by a new sealed tensor as pending
                // aliases; tensors made later alias it (ops 0 and 1) and the mapper maps each
                // run of it in one call. Releases, shrinks and copy-on-write then cut those runs.
                let source = live[pick(live.count)].tensor
                let mapped = memory.inspect { inspector in (0..<source.chunkCount).prefix { inspector.isMapped(source, chunk: $0) }.count }
                guard mapped >= 2 else { break }
                let holder = try memory.makeTensor(bytes: source.chunkCount * testChunk)
                let k = 2 + pick(mapped - 1)
                if try memory.packSlab(from: source, chunks: 0..<k, into: holder) {
                    try memory.seal(holder)
                    live.append(Live(tensor: holder, chunks: 0, ticket: nil))
                    counts["packed", default: 0] += 1
                    // A follower grown here at once (one run), now and then cut in part at once too.
                    let follower = try memory.makeTensor(bytes: (k + 2) * testChunk)
                    try memory.aliasOnGrow((0..<k).map { (follower, $0, holder, $0) })
                    counts["aliased", default: 0] += k
                    try memory.grow(follower, toChunks: k + 1)
                    if pick(2) == 0 { try memory.release(follower, chunks: [pick(k)]) }
                    live.append(Live(tensor: follower, chunks: k + 1, ticket: nil))
                } else {
                    try memory.free(holder)
                }
            default:
                let i = pick(live.count)
                let tensor = live[i].tensor
                let mapped = memory.inspect { inspector in (0..<tensor.chunkCount).filter { inspector.isMapped(tensor, chunk: $0) } }
                if let index = mapped.randomElement(using: &rng) {
                    let lease = try host.beginRead(address: tensor.address(ofChunk: index), bytes: testChunk)
                    leasesOpen.withLock { $0 += 1 }
                    DispatchQueue.global().asyncAfter(deadline: .now() + .microseconds(200 + pick(2000))) {
                        host.endRead(lease)
                        leasesOpen.withLock { $0 -= 1 }
                    }
                    counts["leases", default: 0] += 1
                }
            }
            let problems = memory.audit { backendAgrees($0, host) }
            #expect(problems == [], "step \(step), op \(op): \(problems)")
            let accounting = memory.accounting
            if accounting.runMappings > 0 { counts["run mappings seen", default: 0] += 1 }
            counts["runs split"] = accounting.runSplits
            if step % 8 == 0 { try checkContents() }
        }
        for entry in live {
            if let ticket = entry.ticket { try mapper.wait(ticket) }
        }
        try checkContents()
        for entry in live {
            // Grown again whole after shrinks and releases.
            try memory.grow(entry.tensor, toChunks: entry.chunks)
            #expect(memory.inspect { inspector in (0..<entry.chunks).allSatisfy { inspector.isMapped(entry.tensor, chunk: $0) } })
        }
        try checkContents()
        for entry in live { try memory.free(entry.tensor) }
        while leasesOpen.withLock({ $0 }) > 0 { usleep(1000) }
        mapper.shutdown()
        try memory.drain()
        _ = try memory.trim(to: 0)
        #expect(memory.audit { backendAgrees($0, host) } == [])
        #expect(host.census().liveChunks == 0 && host.census().mappings == 0)
        return counts
    }
}
