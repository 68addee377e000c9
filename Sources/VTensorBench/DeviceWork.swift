import ArgumentParser
import CLICommon
import GPU
import Kernels
import VTensor

/// What the checks and benchmarks need from a device, implemented by the GPU (kernels) and by
/// the CPU (loops over host memory), so the same check runs on both backends.
protocol DeviceWork: AnyObject {
    var name: String { get }
    var backend: any MemoryBackend { get }
    /// Writes `pattern(seed, i)` into `words` 32-bit words at `address` (asynchronously on the GPU).
    func fill(_ address: UInt64, words: Int, seed: UInt32) throws
    /// Number of words differing from the pattern (synchronous).
    func mismatches(_ address: UInt64, words: Int, seed: UInt32) throws -> Int
    /// Reads `count` words back to the host.
    func read(_ address: UInt64, words: Int) throws -> [UInt32]
    func synchronize() throws
}

final class HostWork: DeviceWork {
    let host: HostBackend
    var backend: any MemoryBackend { host }
    let name = "cpu (host virtual memory)"

    init(capacityBytes: Int) throws {
        host = try HostBackend(chunkSize: 2 << 20, capacityBytes: capacityBytes)
    }

    func fill(_ address: UInt64, words: Int, seed: UInt32) throws {
        let p = UnsafeMutablePointer<UInt32>(bitPattern: UInt(address))!
        for i in 0..<words { p[i] = MemoryKernels.pattern(seed: seed, index: UInt64(i)) }
    }

    func mismatches(_ address: UInt64, words: Int, seed: UInt32) throws -> Int {
        guard host.isAccessible(address: address, bytes: words * 4) else {
            throw BackendError(operation: "read", message: "\(words * 4) bytes at 0x\(String(address, radix: 16)) are not all mapped")
        }
        let p = UnsafePointer<UInt32>(bitPattern: UInt(address))!
        var bad = 0
        for i in 0..<words where p[i] != MemoryKernels.pattern(seed: seed, index: UInt64(i)) { bad += 1 }
        return bad
    }

    func read(_ address: UInt64, words: Int) throws -> [UInt32] {
        Array(UnsafeBufferPointer(start: UnsafePointer<UInt32>(bitPattern: UInt(address))!, count: words))
    }

    func synchronize() throws {}
}

final class CUDAWork: DeviceWork {
    let context: CUDAContext
    let stream: CUDAStream
    let cuda: CUDABackend
    let compiler: KernelCompiler
    let kernels: MemoryKernels
    let counter: DeviceBuffer
    var backend: any MemoryBackend { cuda }
    var name: String { "\(context.device.name) (sm_\(context.device.computeCapability.major)\(context.device.computeCapability.minor))" }

    init(device: Int, rowBytes: Int = 2048) throws {
        context = try CUDAContext(device: device)
        stream = try CUDAStream(context: context)
        cuda = try CUDABackend(context: context, workStream: stream)
        compiler = KernelCompiler(context: context)
        kernels = try MemoryKernels(compiler: compiler, rowBytes: rowBytes)
        counter = try DeviceBuffer(context: context, bytes: 8)
    }

    func fill(_ address: UInt64, words: Int, seed: UInt32) throws {
        try context.makeCurrent()
        try kernels.fillPattern(address: address, words: words, seed: seed, stream: stream)
    }

    func mismatches(_ address: UInt64, words: Int, seed: UInt32) throws -> Int {
        try context.makeCurrent()
        try context.memset8Async(destination: counter.address, value: 0, bytes: 8, stream: stream)
        try kernels.checkPattern(address: address, words: words, seed: seed, mismatches: counter.address, stream: stream)
        try stream.synchronize()
        return Int(try context.copyDeviceToHost(source: counter.address, count: 1, as: UInt64.self)[0])
    }

    func read(_ address: UInt64, words: Int) throws -> [UInt32] {
        try stream.synchronize()
        return try context.copyDeviceToHost(source: address, count: words, as: UInt32.self)
    }

    func synchronize() throws { try stream.synchronize() }
}

/// Opens the chosen backend, or explains why it cannot.
func openDevice(_ kind: BackendKind, ordinal: Int, hostCapacity: Int) throws -> any DeviceWork {
    switch kind {
    case .cpu:
        return try HostWork(capacityBytes: hostCapacity)
    case .cuda:
        if let reason = gpuUnavailableReason() { throw ValidationError(reason) }
        return try CUDAWork(device: ordinal)
    }
}
