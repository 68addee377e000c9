import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import VTensor

struct OperationLatency: Codable {
    var operation: String
    var latency: Percentiles
}

struct MapperThroughput: Codable {
    var chunks: Int
    /// Map + set access of chunks already created (the pool's warm reserve).
    var mappingsPerSecond: Double
    /// Create + map + set access (cold pool).
    var coldMappingsPerSecond: Double
    /// Warm pool taken newest chunk first (LIFO) instead of the default, oldest first.
    var newestFirstMappingsPerSecond: Double
    var p50Micros: Double
    var p99Micros: Double
    /// Raw driver rate (map + set access per chunk, no manager) with 1, 2, 4 threads: does
    /// the driver let mapping work run in parallel?
    var threadedRates: [ThreadedRate]
}

struct ThreadedRate: Codable {
    var threads: Int
    var mappingsPerSecond: Double
    /// Chunks mapped in the reverse of their creation order.
    var reverseOrder = false
}

struct StepAheadResult: Codable {
    var scenario: String
    var steps: Int
    var requests: Int
    var stepMillis: Double
    var chunksPerStepMean: Double
    var chunksPerStepMax: Int
    var blockedWaits: Int
    var waitMeanMicros: Double
    var waitMaxMicros: Double
    /// The mapper's per-chunk latency during the scenario (kernels running meanwhile).
    var chunkP50Micros: Double
    var chunkP99Micros: Double
    var chunkMaxMicros: Double
    /// Steps whose wait blocked, and how long each waited (us).
    var blockedSteps: [Int]
    var blockedMicros: [Double]
}

/// One layer's K/V reads (`VMMBench.measureReadsUnderChurn`): milliseconds a read (medians of
/// timings of 10 reads each), with the mapper idle, mapping, unmapping, and idle again.
struct ReadsUnderChurn: Codable {
    var requests: Int
    var tokens: Int
    var bytesRead: Int
    var idleMillis: Double
    var mappingMillis: Double?
    var readsWhileMapping: Int
    var chunksMapped: Int
    var unmappingMillis: Double?
    var readsWhileUnmapping: Int
    var chunksUnmapped: Int
    var idleAfterMillis: Double
}

/// One layer's K/V reads by where the KV's chunks sit and what else is mapped and read
/// (`VMMBench.measurePlacement`): each phase's timings, each the median of 10 reads.
struct KVPlacementReads: Codable {
    struct Phase: Codable {
        var phase: String
        var kv: String
        var chunks: String
        var millis: [Double]
    }
    var requests: Int
    var tokens: Int
    var bytesRead: Int
    /// The trigger mode's trigger (`--placement-trigger`), nil for the phases.
    var trigger: String?
    var phases: [Phase]
}

/// One read of the reach stage: a layer's K/V of 64 requests at `tokens` each, in `layout`, with
/// `kvBytes` of KV mapped.
struct KVReachRead: Codable {
    var pass: Int
    var layout: String
    var tokens: Int
    var kvBytes: Int
    var bytesRead: Int
    var millis: [Double]
    /// The largest power of two dividing each request range's base: the least, and the median.
    var leastAlignment: Int = 0
    var medianAlignment: Int = 0

    /// The median timing, and the read rate it gives.
    var medianMillis: Double { median(millis) }
    var tbps: Double { Double(bytesRead) / (medianMillis / 1000) / 1e12 }
}

struct LaunchInterference: Codable {
    var idle: Percentiles
    var whileMapping: Percentiles
    var chunksMappedMeanwhile: Int
    var copyMillisIdle: Double
    /// The copy kernel (median of its timings while the mapper maps, each map + set access a change
    /// to the GPU's page tables under it), and how many timings that median is of.
    var copyMillisWhileMapping: Double
    var copiesWhileMapping: Int?
    /// The copy kernel (median of its timings) while the mapper unmaps freed chunks, each unmap a
    /// change to the GPU's page tables under the running kernel; and how many it unmapped meanwhile.
    var copyMillisWhileUnmapping: Double?
    var chunksUnmappedMeanwhile: Int?
    /// The copy kernel (median) while the mapper's idle loop creates chunks (`cuMemCreate`, no
    /// mapping), and how many it created meanwhile.
    var copyMillisWhileCreating: Double?
    var chunksCreatedMeanwhile: Int?
    /// Map + set access per chunk (us) with the GPU idle, and while a kernel runs.
    var mapGPUIdle: Percentiles
    var mapWhileKernelRuns: Percentiles
}

/// One run length of the access stage: `calls` set-access calls of `runChunks` chunks each over
/// freshly mapped chunks, and the same chunks unmapped a run per call where the driver takes it.
struct AccessRunCost: Codable {
    var runChunks: Int
    var calls: Int
    var setAccessPerCall: Percentiles
    var setAccessMicrosPerChunk: Double
    /// Per run: one cuMemUnmap over the run (`unmapInOneCall`), or one per chunk of it.
    var unmapPerCall: Percentiles?
    var unmapInOneCall: Bool
}

struct AccessRuns: Codable {
    var chunks: Int
    var runs: [AccessRunCost]
    /// Whether the backend unmaps several adjacent mappings in one call (its probe,
    /// `MemoryBackend.unmapsRuns`).
    var backendUnmapsRuns: Bool
    /// The mapper's mappings/s (warm reserve, 8 tensors), access per chunk and per run, alternated.
    var mapperPerChunk: [Double]
    var mapperPerRun: [Double]
    /// A 256 MiB copy kernel's median ms: idle, and while the mapper maps either way.
    var copyMillisIdle: Double?
    var copyMillisMappingPerChunk: Double?
    var copyMillisMappingPerRun: Double?
}

struct CopyBandwidth: Codable {
    var bytes: Int
    var mappedTBps: Double
    var plainTBps: Double
}

struct LayoutRead: Codable {
    var layout: String
    var requests: Int
    var tokens: Int
    var bytesRead: Int
    var millis: Double
    var tbps: Double
    var fractionOfPlain: Double
    var note: String?
}

/// One allocation of `chunks` chunks created, mapped, granted access, unmapped and released with
/// one driver call each (16 times).
struct SlabCost: Codable {
    var chunks: Int
    var create: Percentiles
    var map: Percentiles
    var setAccess: Percentiles
    var unmap: Percentiles
    var release: Percentiles
}

/// A prefix of `chunks` chunks packed into one slab (`VirtualMemory.packSlab`), then aliased by
/// followers that map it as one run, against followers aliasing the same prefix chunk by chunk.
struct PackedPrefixCost: Codable {
    var chunks: Int
    var followers: Int
    /// The pack: slab made, mapped for the copy, copied, the device synchronized.
    var packMillis: Double
    /// One follower's grow over the aliased prefix plus two fresh chunks, by the manager.
    var packedGrow: Percentiles
    var perChunkGrow: Percentiles
    /// Driver calls a follower made (maps, set accesses), packed and per chunk.
    var packedCallsPerFollower: Int
    var perChunkCallsPerFollower: Int
    /// 32-bit words of the followers' prefixes that did not read what the source holds (must be
    /// 0); a last follower maps chunks 32..<96 (a run at an offset into the slab), and that run
    /// is then cut in part, so `runSplits` is 1.
    var mismatches: Int
    var runSplits: Int
}

struct VMMBenchReport: Codable {
    var date: String
    var backend: String
    var device: String
    var chunkSize: Int
    var latencies: [OperationLatency]
    var mapper: MapperThroughput?
    var access: AccessRuns?
    var slabs: [SlabCost] = []
    var packed: PackedPrefixCost?
    var stepAhead: [StepAheadResult]
    var launch: LaunchInterference?
    var churn: ReadsUnderChurn?
    var placement: KVPlacementReads?
    var reach: [KVReachRead] = []
    var copy: CopyBandwidth?
    var layoutShape: String
    var layouts: [LayoutRead]
}

struct BenchVMMCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "vmm",
        abstract: "Virtual-memory costs: per-chunk latencies, mapper throughput, step-ahead waits, copy and KV-layout read bandwidth.")

    @OptionGroup var options: BackendOptions

    @Flag(help: "Print JSON on stdout instead of the tables.")
    var json = false

    @Option(name: .customLong("json-out"), help: "Also write the JSON report to this file.")
    var jsonOut: String?

    @Option(help: "Chunks for the latency and mapper measurements (default: 2000 on cuda, 256 on cpu).")
    var chunks: Int?

    @Option(help: "Comma-separated stages to run (latency, mapper, access, slabs, packed, steps, launch, churn, placement, reach, copy, layouts); default all.")
    var only: String?

    @Option(help: "Decode steps for the step-ahead measurement.")
    var steps = 200

    @Option(help: "The placement stage reads the blocked KV before and after this, once a fresh process: none, alloc-free-2g, alloc-free-2m, alloc-kept, vmm-unmap, vmm-release, slab-release, address-free (default: the stage's phases).")
    var placementTrigger: VMMBench.PlacementTrigger?

    func run() throws {
        let (kind, unavailable) = options.resolve()
        if kind == .cpu, let unavailable, options.backend == nil, !json { print("(\(unavailable); measuring the cpu backend)") }
        let device = try openDevice(kind, ordinal: options.device, hostCapacity: min(12 << 30, hostMemoryBytes() / 2))
        let stages = Set((only ?? VMMBench.allStages.joined(separator: ",")).split(separator: ",").map(String.init))
        if let unknown = stages.first(where: { !VMMBench.allStages.contains($0) }) {
            throw ValidationError("unknown stage '\(unknown)'; stages are \(VMMBench.allStages.joined(separator: ", "))")
        }
        let bench = VMMBench(device: device, chunks: chunks ?? (kind == .cuda ? 2000 : 256), steps: steps, log: !json, stages: stages,
                             placementTrigger: placementTrigger)
        let report = try bench.run()
        if let jsonOut { try writeFile(jsonOut, try jsonString(report) + "\n") }
        if json {
            print(try jsonString(report))
        } else {
            print(render(report))
        }
    }

    func render(_ r: VMMBenchReport) -> String {
        var out = "vtensor bench vmm — \(r.backend) on \(r.device), chunk \(mib(r.chunkSize)), \(r.date)\n\n"
        var lat = Table(title: "Per-chunk driver calls (us)", header: ["operation", "p50", "p99", "mean", "max", "n"])
        for l in r.latencies {
            lat.add([l.operation, fixed(l.latency.p50Micros, 1), fixed(l.latency.p99Micros, 1), fixed(l.latency.meanMicros, 1), fixed(l.latency.maxMicros, 1), "\(l.latency.count)"])
        }
        if !r.latencies.isEmpty { out += lat.render() + "\n" }
        if let m = r.mapper {
            var mapper = Table(title: "Asynchronous mapper", header: ["measure", "value"])
            mapper.add(["mappings/s (map + set access, warm pool, oldest chunk first)", fixed(m.mappingsPerSecond, 0)])
            mapper.add(["mappings/s (create + map + set access)", fixed(m.coldMappingsPerSecond, 0)])
            mapper.add(["mappings/s (warm pool, newest chunk first)", fixed(m.newestFirstMappingsPerSecond, 0)])
            mapper.add(["per-chunk latency p50 / p99 (us)", "\(fixed(m.p50Micros, 1)) / \(fixed(m.p99Micros, 1))"])
            for t in m.threadedRates {
                mapper.add(["raw driver mappings/s, \(t.threads) thread(s)\(t.reverseOrder ? ", reverse order" : "")", fixed(t.mappingsPerSecond, 0)])
            }
            out += mapper.render() + "\n"
        }
        if let a = r.access {
            var runs = Table(title: "Access granted per run of adjacent chunks (\(a.chunks) chunks, us)",
                             header: ["run (chunks)", "set access p50 / call", "p99", "us a chunk", "unmap p50 / call", "unmap"])
            for c in a.runs {
                runs.add(["\(c.runChunks)", fixed(c.setAccessPerCall.p50Micros, 1), fixed(c.setAccessPerCall.p99Micros, 1),
                          fixed(c.setAccessMicrosPerChunk, 2), c.unmapPerCall.map { fixed($0.p50Micros, 1) } ?? "-",
                          c.unmapInOneCall ? "one call" : "per chunk"])
            }
            out += runs.render() + "\n"
            out += "the backend unmaps a run in one call: \(a.backendUnmapsRuns ? "yes" : "no")\n\n"
            var mapper = Table(title: "Mapper with access per chunk and per run (mappings/s, alternated)", header: ["access", "runs"])
            mapper.add(["per chunk", a.mapperPerChunk.map { fixed($0, 0) }.joined(separator: " / ")])
            mapper.add(["per run", a.mapperPerRun.map { fixed($0, 0) }.joined(separator: " / ")])
            if let idle = a.copyMillisIdle {
                mapper.add(["copy kernel ms: idle", fixed(idle, 3)])
                mapper.add(["copy kernel ms: mapper mapping, access per chunk", a.copyMillisMappingPerChunk.map { fixed($0, 3) } ?? "-"])
                mapper.add(["copy kernel ms: mapper mapping, access per run", a.copyMillisMappingPerRun.map { fixed($0, 3) } ?? "-"])
            }
            out += mapper.render() + "\n"
        }
        if !r.slabs.isEmpty {
            var slabs = Table(title: "One allocation of n chunks, one driver call each (p50 us; the last column: set access a chunk)",
                              header: ["chunks", "create", "map", "set access", "unmap", "release", "set access / chunk"])
            for c in r.slabs {
                slabs.add(["\(c.chunks)", fixed(c.create.p50Micros, 1), fixed(c.map.p50Micros, 1), fixed(c.setAccess.p50Micros, 1),
                           fixed(c.unmap.p50Micros, 1), fixed(c.release.p50Micros, 1), fixed(c.setAccess.p50Micros / Double(c.chunks), 2)])
            }
            out += slabs.render() + "\n"
        }
        if let p = r.packed {
            var packed = Table(title: "A \(p.chunks)-chunk prefix aliased by \(p.followers) followers: packed into one slab (one run a follower) or chunk by chunk (pack: \(fixed(p.packMillis, 2)) ms)",
                               header: ["followers map", "grow p50 us", "p99 us", "driver calls a follower", "mismatched words", "runs split (1 on purpose)"])
            packed.add(["the packed slab", fixed(p.packedGrow.p50Micros, 1), fixed(p.packedGrow.p99Micros, 1), "\(p.packedCallsPerFollower)", "\(p.mismatches)", "\(p.runSplits)"])
            packed.add(["the source's chunks", fixed(p.perChunkGrow.p50Micros, 1), fixed(p.perChunkGrow.p99Micros, 1), "\(p.perChunkCallsPerFollower)", "", ""])
            out += packed.render() + "\n"
        }
        var steps = Table(title: "Consumer waits on mappings requested one step ahead", header: ["scenario", "steps", "requests", "step ms", "chunks/step", "max", "steps delayed", "wait mean us", "wait max us", "chunk p99 / max us"])
        for s in r.stepAhead {
            steps.add([s.scenario, "\(s.steps)", "\(s.requests)", fixed(s.stepMillis, 1), fixed(s.chunksPerStepMean, 1), "\(s.chunksPerStepMax)", "\(s.blockedSteps.count)", fixed(s.waitMeanMicros, 1), fixed(s.waitMaxMicros, 1), "\(fixed(s.chunkP99Micros, 1)) / \(fixed(s.chunkMaxMicros, 1))"])
        }
        if !r.stepAhead.isEmpty { out += steps.render() + "\n" }
        if let l = r.launch {
            var launch = Table(title: "Kernel launches while the mapper works (host us per cuLaunchKernel)", header: ["condition", "p50", "p99", "mean", "copy kernel ms"])
            launch.add(["mapper idle", fixed(l.idle.p50Micros, 2), fixed(l.idle.p99Micros, 2), fixed(l.idle.meanMicros, 2), fixed(l.copyMillisIdle, 3)])
            launch.add(["mapper mapping \(l.chunksMappedMeanwhile) chunks", fixed(l.whileMapping.p50Micros, 2), fixed(l.whileMapping.p99Micros, 2), fixed(l.whileMapping.meanMicros, 2), fixed(l.copyMillisWhileMapping, 3)])
            if let unmapping = l.copyMillisWhileUnmapping {
                launch.add(["mapper unmapping \(l.chunksUnmappedMeanwhile ?? 0) chunks", "-", "-", "-", fixed(unmapping, 3)])
            }
            if let creating = l.copyMillisWhileCreating {
                launch.add(["mapper creating \(l.chunksCreatedMeanwhile ?? 0) chunks (no mapping)", "-", "-", "-", fixed(creating, 3)])
            }
            out += launch.render() + "\n"
            var busy = Table(title: "Map + set access per chunk while the GPU computes (us)", header: ["condition", "p50", "p99", "max"])
            busy.add(["GPU idle", fixed(l.mapGPUIdle.p50Micros, 1), fixed(l.mapGPUIdle.p99Micros, 1), fixed(l.mapGPUIdle.maxMicros, 1)])
            busy.add(["kernel running", fixed(l.mapWhileKernelRuns.p50Micros, 1), fixed(l.mapWhileKernelRuns.p99Micros, 1), fixed(l.mapWhileKernelRuns.maxMicros, 1)])
            out += busy.render() + "\n"
        }
        if let c = r.churn {
            func tbps(_ ms: Double?) -> String { ms.map { fixed(Double(c.bytesRead) / ($0 / 1000) / 1e12, 3) } ?? "-" }
            var churn = Table(title: "One layer's K/V reads (\(c.requests) x \(c.tokens) tokens, blocked layout, \(mib(c.bytesRead))) while the mapper works",
                              header: ["mapper", "reads timed", "ms a read", "TB/s"])
            churn.add(["idle", "9 x 10", fixed(c.idleMillis, 4), tbps(c.idleMillis)])
            churn.add(["mapping \(c.chunksMapped) chunks", "\(c.readsWhileMapping) x 10", c.mappingMillis.map { fixed($0, 4) } ?? "-", tbps(c.mappingMillis)])
            churn.add(["unmapping \(c.chunksUnmapped) chunks", "\(c.readsWhileUnmapping) x 10", c.unmappingMillis.map { fixed($0, 4) } ?? "-",
                       tbps(c.unmappingMillis)])
            churn.add(["idle again", "9 x 10", fixed(c.idleAfterMillis, 4), tbps(c.idleAfterMillis)])
            out += churn.render() + "\n"
        }
        if let p = r.placement {
            var placement = Table(title: "One layer's K/V reads (\(p.requests) x \(p.tokens) tokens, \(mib(p.bytesRead))) by where the chunks sit and what else is mapped"
                                    + (p.trigger.map { ", trigger \($0)" } ?? ""),
                                  header: ["phase", "KV", "chunks", "ms a read (median)", "least", "most", "TB/s", "timings"])
            for a in p.phases {
                let m = median(a.millis)
                placement.add([a.phase, a.kv, a.chunks, fixed(m, 4), fixed(a.millis.min() ?? 0, 4), fixed(a.millis.max() ?? 0, 4),
                               fixed(Double(p.bytesRead) / (m / 1000) / 1e12, 3), a.millis.map { fixed($0, 3) }.joined(separator: " ")])
            }
            out += placement.render() + "\n"
        }
        if !r.reach.isEmpty {
            var reach = Table(title: "One layer's K/V reads of 64 requests by where their address ranges lie (TB/s; median of 5 x 10)",
                              header: ["pass", "layout", "tokens", "KV GiB", "MiB read", "ms", "TB/s", "ranges aligned (least / median)"])
            for a in r.reach {
                reach.add(["\(a.pass)", a.layout, "\(a.tokens)", fixed(Double(a.kvBytes) / Double(1 << 30), 1), mib(a.bytesRead),
                           fixed(a.medianMillis, 4), fixed(a.tbps, 3), mib(a.leastAlignment) + " / " + mib(a.medianAlignment)])
            }
            out += reach.render() + "\n"
        }
        if let c = r.copy {
            var copy = Table(title: "Copy bandwidth, \(mib(c.bytes)) read + written (TB/s)", header: ["memory", "TB/s"])
            copy.add(["virtual tensor (mapped chunks)", fixed(c.mappedTBps, 3)])
            copy.add(["plain allocation", fixed(c.plainTBps, 3)])
            out += copy.render() + "\n"
        }
        var layouts = Table(title: "Decode-style read of one layer's K and V, \(r.layoutShape)", header: ["layout", "requests x tokens", "MiB read", "ms", "TB/s", "vs plain"])
        for l in r.layouts {
            layouts.add([l.layout, "\(l.requests) x \(l.tokens)", fixed(Double(l.bytesRead) / 1_048_576, 0), fixed(l.millis, 3), fixed(l.tbps, 3), fixed(l.fractionOfPlain, 3) + (l.note.map { " (\($0))" } ?? "")])
        }
        if !r.layouts.isEmpty { out += layouts.render() }
        return out
    }
}
