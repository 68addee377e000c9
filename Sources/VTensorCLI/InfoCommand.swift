import ArgumentParser
import CLICommon
import GPU
import Glibc
import VTensor

struct HostFacts: Codable {
    var pageSize: Int
    var physicalMemory: Int
    var chunkSize: Int
    var memfdWorks: Bool
    var error: String?

    static func collect() -> HostFacts {
        var facts = HostFacts(pageSize: Int(sysconf(Int32(_SC_PAGESIZE))), physicalMemory: hostMemoryBytes(),
                              chunkSize: 2 << 20, memfdWorks: false)
        do {
            let host = try HostBackend(chunkSize: facts.chunkSize, capacityBytes: 4 * facts.chunkSize)
            let base = try host.reserve(bytes: facts.chunkSize)
            let chunk = try host.createChunk()
            try host.map(chunk, at: base)
            try host.setAccess(at: base, bytes: facts.chunkSize)
            try host.unmap(at: base)
            try host.releaseChunk(chunk)
            try host.releaseReservation(base: base, bytes: facts.chunkSize)
            facts.memfdWorks = true
        } catch {
            facts.error = String(describing: error)
        }
        return facts
    }
}

struct InfoReport: Codable {
    var gpu: GPUReport
    var host: HostFacts
}

struct InfoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "info", abstract: "Devices, memory, driver and library versions, VMM granularity.")

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() throws {
        let report = InfoReport(gpu: GPUReport.collect(), host: HostFacts.collect())
        if json {
            print(try jsonString(report))
            return
        }
        let gpu = report.gpu
        if gpu.available {
            print("CUDA driver \(gpu.driverVersion.map { "\($0 / 1000).\($0 % 1000 / 10)" } ?? "?") (\(gpu.driverPath ?? "?"))")
            for d in gpu.devices {
                print("device \(d.ordinal): \(d.name), compute capability \(d.computeCapability), \(d.multiprocessorCount) SMs, L2 \(mib(d.l2CacheBytes))")
                print("  memory: \(gib(d.totalMemory)) total, \(d.freeMemory.map(gib) ?? "?") free; bus \(d.memoryBusWidthBits) bit at \(d.memoryClockKHz / 1000) MHz")
                print("  virtual memory management: \(d.supportsVirtualMemory ? "yes" : "no"), granularity \(d.granularity.map(mib) ?? "?") (recommended \(d.recommendedGranularity.map(mib) ?? "?"))")
                if let error = d.error { print("  note: \(error)") }
            }
            if !gpu.driverDlsymFallbacks.isEmpty { print("  resolved with dlsym: \(gpu.driverDlsymFallbacks.joined(separator: ", "))") }
        } else {
            print(gpu.reason ?? "no CUDA device")
        }
        func library(_ name: String, _ lib: GPUReport.Library) {
            print("\(name): " + (lib.loaded ? "\(lib.version ?? "?") (\(lib.path ?? "?"))" : "not loaded: \(lib.error ?? "?")"))
        }
        library("NVRTC", gpu.nvrtc)
        library("cuBLASLt", gpu.cublasLt)
        let host = report.host
        print("host backend: page size \(host.pageSize) B, chunk \(mib(host.chunkSize)), physical memory \(gib(host.physicalMemory)), memfd + mmap \(host.memfdWorks ? "works" : "FAILED: \(host.error ?? "?")")")
    }
}
