import ArgumentParser
import CLICommon
import GPU
import Glibc
import Kernels
import VTensor

/// Runs named checks, printing PASS or FAIL for each with a detail line.
struct CheckRunner {
    var results: [(name: String, passed: Bool, detail: String)] = []

    /// Adds results of checks that printed their own lines.
    mutating func absorb(_ checks: [(name: String, passed: Bool, detail: String)]) {
        results += checks
    }

    mutating func run(_ name: String, _ body: () throws -> String) {
        do {
            let detail = try body()
            results.append((name, true, detail))
            print("PASS  \(name): \(detail)")
        } catch {
            results.append((name, false, String(describing: error)))
            print("FAIL  \(name): \(error)")
        }
    }

    var failures: Int { results.filter { !$0.passed }.count }
}

struct CheckFailed: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func require(_ condition: Bool, _ message: @autoclosure () -> String) throws {
    if !condition { throw CheckFailed(message()) }
}

struct SelftestCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "selftest",
        abstract: "Checks the virtual-memory layer on the CPU backend and, where a GPU exists, on the GPU.")

    @OptionGroup var options: BackendOptions

    func run() throws {
        let (kind, unavailable) = options.resolve()
        var runner = CheckRunner()
        print("== CPU backend (host virtual memory)")
        let host = try HostWork(capacityBytes: min(4 << 30, hostMemoryBytes() / 2))
        runVirtualMemoryChecks(on: host, runner: &runner)
        if kind == .cuda {
            print("== CUDA backend")
            do {
                let gpu = try openDevice(.cuda, ordinal: options.device, hostCapacity: 0) as! CUDAWork
                print("device: \(gpu.name), chunk \(mib(gpu.cuda.chunkSize))")
                runVirtualMemoryChecks(on: gpu, runner: &runner)
                runCUDAOnlyChecks(gpu, runner: &runner)
                print("== attention kernels against the CPU oracle")
                runAttentionChecks(gpu, runner: &runner)
            } catch {
                runner.run("open CUDA device") { throw error }
            }
        } else {
            print("GPU checks skipped: \(unavailable ?? "--backend cpu was given")")
        }
        print("\(runner.results.count - runner.failures) passed, \(runner.failures) failed")
        if runner.failures > 0 { throw ExitCode(1) }
    }
}

/// The checks that run identically on every backend.
func runVirtualMemoryChecks(on device: any DeviceWork, runner: inout CheckRunner) {
    let backend = device.backend
    let chunk = backend.chunkSize
    let words = chunk / 4
    let label = backend.name
    guard let memory = try? VirtualMemory(backend: backend, budget: .bytes(min(backend.totalPhysicalBytes, 1536 << 20)), lowWatermark: 4, highWatermark: 16) else {
        runner.run("[\(label)] create memory manager") { _ = try VirtualMemory(backend: backend, budget: .bytes(1536 << 20)); return "" }
        return
    }

    runner.run("[\(label)] bad input is refused with a named error") {
        var caught: [String] = []
        func expectError(_ what: String, _ body: () throws -> Void) throws {
            do { try body() } catch { caught.append("\(what): \(error)"); return }
            throw CheckFailed("\(what) was accepted")
        }
        try expectError("zero budget") { _ = try VirtualMemory(backend: backend, budget: .bytes(0)) }
        try expectError("budget above the device") { _ = try VirtualMemory(backend: backend, budget: .bytes(backend.totalPhysicalBytes + chunk)) }
        let t = try memory.makeTensor(bytes: 2 * chunk)
        try expectError("misaligned offset") { try memory.map(t, offset: 4096) }
        try memory.map(t, chunk: 0)
        try memory.unmap(t, chunk: 0)
        try expectError("double unmap") { try memory.unmap(t, chunk: 0) }
        try memory.free(t)
        try expectError("use after free") { try memory.map(t, chunk: 1) }
        try expectError("layout that cannot fit") {
            _ = try KVCache(shape: KVShape(layers: 200, kvHeads: 64, headDim: 256), layout: .perToken, memory: memory, maxTokensPerRequest: 16)
        }
        try memory.drain()
        return "\(caught.count) errors, e.g. \(caught[0])"
    }

    runner.run("[\(label)] map, write with the device, read back") {
        let t = try memory.makeTensor(bytes: 8 * chunk)
        defer { try? memory.free(t) }
        try memory.grow(t, toChunks: 8)
        let bad = try writeAndVerify(device, tensor: t, chunks: 0..<8, seedBase: 100)
        try require(bad == 0, "\(bad) words differ")
        return "8 chunks written and verified (\(mib(8 * chunk)))"
    }

    runner.run("[\(label)] alias: one chunk read through a second tensor") {
        let a = try memory.makeTensor(bytes: 6 * chunk)
        let b = try memory.makeTensor(bytes: 4 * chunk)
        defer { try? memory.free(a); try? memory.free(b) }
        try memory.grow(a, toChunks: 6)
        for i in 0..<6 { try device.fill(a.address(ofChunk: i), words: words, seed: UInt32(200 + i)) }
        for j in 0..<4 { try memory.alias(b, chunk: j, from: a, chunk: j + 2) }
        var bad = 0
        for j in 0..<4 { bad += try device.mismatches(b.address(ofChunk: j), words: words, seed: UInt32(202 + j)) }
        let host = try device.read(b.address(ofChunk: 1) + 40, words: 4)
        let expected = (10..<14).map { MemoryKernels.pattern(seed: 203, index: UInt64($0)) }
        try require(bad == 0 && host == expected, "\(bad) words differ through the alias; host read \(host) vs \(expected)")
        try require(memory.accounting.shared >= 4, "accounting shows \(memory.accounting.shared) shared chunks")
        return "4 chunks shared without copy; device and host read-back agree"
    }

    runner.run("[\(label)] fork a KV prefix: shared chunks alias, boundary copied, appends stay private") {
        let shape = KVShape.llama3_8B
        var notes: [String] = []
        for kind in KVLayoutKind.allCases {
            let cache = try KVCache(shape: shape, layout: kind, memory: memory, maxTokensPerRequest: 4096)
            let perChunk = cache.layout.tokensPerChunk
            let tokens = min(2 * perChunk + perChunk / 2, 4096)
            try cache.addRequest(1)
            try cache.reserve(1, tokens: tokens)
            try cache.setLength(1, tokens)
            let src = try cache.tensors(of: 1)
            let full = (tokens - 1) / perChunk
            for (r, t) in src.enumerated() {
                for c in 0...full { try device.fill(t.address(ofChunk: c), words: words, seed: UInt32(1000 + 16 * r + c)) }
            }
            try cache.fork(from: 1, prefix: tokens - 1, into: 2)
            let dst = try cache.tensors(of: 2)
            let boundaryWords = cache.layout.boundaryCopyBytes(tokens: (tokens - 1) % perChunk) / 4
            var bad = 0
            for (r, t) in dst.enumerated() {
                for c in 0..<full { bad += try device.mismatches(t.address(ofChunk: c), words: words, seed: UInt32(1000 + 16 * r + c)) }
                bad += try device.mismatches(t.address(ofChunk: full), words: boundaryWords, seed: UInt32(1000 + 16 * r + full))
                try require(memory.physicalChunk(t, chunk: 0) == memory.physicalChunk(src[r], chunk: 0), "full chunk not shared")
                try require(memory.physicalChunk(t, chunk: full) != memory.physicalChunk(src[r], chunk: full), "boundary chunk shared")
            }
            // The parent writes its boundary chunk again; the child's copy must not change.
            for (r, t) in src.enumerated() { try device.fill(t.address(ofChunk: full), words: words, seed: UInt32(9000 + r)) }
            for (r, t) in dst.enumerated() {
                bad += try device.mismatches(t.address(ofChunk: full), words: boundaryWords, seed: UInt32(1000 + 16 * r + full))
            }
            try require(bad == 0, "\(kind.rawValue): \(bad) words differ")
            try cache.free(1)
            try cache.free(2)
            notes.append("\(kind.rawValue) \(src.count)x\(full) shared")
        }
        try memory.drain()
        return notes.joined(separator: ", ")
    }

    runner.run("[\(label)] unmap and remap") {
        let t = try memory.makeTensor(bytes: 8 * chunk)
        defer { try? memory.free(t) }
        try memory.grow(t, toChunks: 8)
        try memory.shrink(t, toChunks: 4)
        try memory.drain()
        try require(memory.mappedChunkCount(t) == 4, "\(memory.mappedChunkCount(t)) chunks mapped after shrink")
        try memory.grow(t, toChunks: 8)
        let bad = try writeAndVerify(device, tensor: t, chunks: 4..<8, seedBase: 300)
        try require(bad == 0, "\(bad) words differ after remap")
        return "4 chunks unmapped, remapped, written and verified"
    }

    runner.run("[\(label)] asynchronous mapper fences") {
        let mapper = AsyncMapper(memory: memory, threadSetup: threadSetup(for: device))
        defer { mapper.shutdown() }
        let t = try memory.makeTensor(bytes: 64 * chunk)
        defer { try? memory.free(t) }
        let ticket = mapper.submit([(t, 64)])
        try mapper.wait(ticket)
        try require(memory.mappedChunkCount(t) == 64, "\(memory.mappedChunkCount(t)) of 64 chunks mapped")
        let bad = try writeAndVerify(device, tensor: t, chunks: stride(from: 0, to: 64, by: 9), seedBase: 400)
        try require(bad == 0, "\(bad) words differ")
        let stats = mapper.statistics
        return "64 chunks mapped on the mapper thread, p50 \(micros(stats.chunkLatencyP50)) us/chunk"
    }

    runner.run("[\(label)] memory goes back to the device") {
        try memory.drain()
        _ = try memory.trim(to: 0)
        let before = try backend.freePhysicalBytes()
        let n = min(512, memory.accounting.budgetChunks - memory.accounting.inUse - 8)
        let t = try memory.makeTensor(bytes: n * chunk)
        try memory.grow(t, toChunks: n)
        let during = try backend.freePhysicalBytes()
        try memory.free(t)
        try memory.drain()
        _ = try memory.trim(to: 0)
        let after = try backend.freePhysicalBytes()
        try require(before - during >= n * chunk * 9 / 10, "free memory fell by \(mib(before - during)) for \(mib(n * chunk)) mapped")
        try require(after >= before - 8 * chunk, "free memory \(mib(after)) did not recover to \(mib(before))")
        return "free \(mib(before)) -> \(mib(during)) with \(mib(n * chunk)) mapped -> \(mib(after)) after release"
    }

    runner.run("[\(label)] accounting audit") {
        let problems = memory.audit()
        try require(problems.isEmpty, problems.joined(separator: "; "))
        let a = memory.accounting
        return "created \(a.created), reserve \(a.inReserve), in use \(a.inUse), mappings \(a.mappings), \(a.totalCreated) created / \(a.totalReleased) released in all"
    }
}

/// Writes a seeded pattern into each listed chunk (seed: seedBase + index) with the device,
/// then counts the words that read back wrong.
func writeAndVerify(_ device: any DeviceWork, tensor: VirtualTensor, chunks: some Sequence<Int>, seedBase: UInt32) throws -> Int {
    let words = tensor.chunkSize / 4
    for i in chunks { try device.fill(tensor.address(ofChunk: i), words: words, seed: seedBase + UInt32(i)) }
    return try chunks.reduce(0) { $0 + (try device.mismatches(tensor.address(ofChunk: $1), words: words, seed: seedBase + UInt32($1))) }
}

/// The mapper thread must make the CUDA context current before driver calls.
func threadSetup(for device: any DeviceWork) -> (@Sendable () throws -> Void)? {
    guard let gpu = device as? CUDAWork else { return nil }
    let context = gpu.context
    return { try context.makeCurrent() }
}

/// Checks that need a real GPU: unmapping under a running kernel, and the kernel cache.
func runCUDAOnlyChecks(_ gpu: CUDAWork, runner: inout CheckRunner) {
    let chunk = gpu.cuda.chunkSize
    runner.run("[cuda] unmap waits for a kernel still reading") {
        let memory = try VirtualMemory(backend: gpu.cuda, budget: .bytes(64 * chunk), lowWatermark: 0, highWatermark: 0)
        let t = try memory.makeTensor(bytes: 16 * chunk)
        try memory.grow(t, toChunks: 16)
        try gpu.fill(t.base, words: 16 * chunk / 4, seed: 77)
        try gpu.context.memset8Async(destination: gpu.counter.address, value: 0, bytes: 8, stream: gpu.stream)
        // A 200 ms kernel, then a kernel reading all 16 chunks, both queued; then free at once.
        let start = monotonicNanos()
        try gpu.kernels.spin(cycles: 400_000_000, stream: gpu.stream)
        try gpu.kernels.checkPattern(address: t.base, words: 16 * chunk / 4, seed: 77, mismatches: gpu.counter.address, stream: gpu.stream)
        try memory.free(t)
        let reclaimedEarly = try memory.reclaim()
        try require(reclaimedEarly == 0, "\(reclaimedEarly) chunks unmapped while the kernel could still read them")
        try memory.drain()
        let waited = monotonicNanos() - start
        try gpu.stream.synchronize()
        let bad = try gpu.context.copyDeviceToHost(source: gpu.counter.address, count: 1, as: UInt64.self)[0]
        try require(bad == 0, "the reading kernel saw \(bad) wrong words")
        try require(memory.accounting.inUse == 0, "chunks still in use after drain")
        return "free deferred \(fixed(Double(waited) / 1e6, 1)) ms until the kernel finished; no fault, data intact"
    }

    runner.run("[cuda] kernel cache: compiled once per process and per machine") {
        let first = gpu.compiler.statistics
        _ = try MemoryKernels(compiler: gpu.compiler, rowBytes: gpu.kernels.rowBytes)
        let second = gpu.compiler.statistics
        try require(second.memoryHits == first.memoryHits + 1, "no in-process hit: \(second)")
        let fresh = KernelCompiler(context: gpu.context)
        _ = try MemoryKernels(compiler: fresh, rowBytes: gpu.kernels.rowBytes)
        let disk = fresh.statistics
        try require(disk.diskHits == 1 && disk.compiles == 0, "a new compiler recompiled instead of loading the disk cache: \(disk)")
        return "memory hit, then disk hit in \(fresh.diskCache?.directory ?? "?")"
    }
}

/// The attention kernels' own check suites (the same ones `vtensor dev decode` runs): every
/// kernel against the CPU oracle on fresh random inputs, outputs poisoned before each run.
func runAttentionChecks(_ gpu: CUDAWork, runner: inout CheckRunner) {
    let threads = max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    let decode = DecodeBench(gpu: gpu, reps: 1, ctasPerSM: nil, oracleThreads: threads, filter: nil,
                             variants: [.init(name: "standard", configs: [:], saturatingCTAs: nil)])
    runner.absorb(decode.runChecks().map { ("[cuda] decode: \($0.name)", $0.passed, $0.detail) })
    do {
        let prefillGPU = PrefillGPU(work: gpu)
        var results: [PrefillCheckResult] = []
        for c in PrefillChecks.cases { results += try PrefillChecks.run(c, gpu: prefillGPU, threads: threads, seed: 1) }
        for r in results {
            print("\(r.passed ? "PASS" : "FAIL")  [cuda] prefill: \(r.name) (\(r.config)): worst \(sci(r.worstSampleError)), overall \(sci(r.overallError)), \(r.unwritten) unwritten")
        }
        runner.absorb(results.map { ("[cuda] prefill: \($0.name)", $0.passed, "worst \(sci($0.worstSampleError))") })
    } catch {
        runner.run("[cuda] prefill and extend kernels") { throw error }
    }
}
