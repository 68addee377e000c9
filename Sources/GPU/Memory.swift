import CCUDA

/// Device memory from `cuMemAlloc`, freed in `deinit`: for weights and scratch buffers, whose
/// size is known up front (the KV cache uses virtual memory instead).
///
/// `@unchecked Sendable`: address and size never change; the memory itself is the caller's
/// to synchronise, as with any device pointer.
public final class DeviceBuffer: @unchecked Sendable {
    public let context: CUDAContext
    public let address: UInt64
    public let bytes: Int

    public init(context: CUDAContext, bytes: Int) throws {
        precondition(bytes > 0, "device buffer size must be positive")
        try context.makeCurrent()
        var address: CUdeviceptr = 0
        try context.driver.check(context.driver.api.cuMemAlloc(&address, bytes), "cuMemAlloc")
        self.context = context
        self.address = address
        self.bytes = bytes
    }

    deinit {
        // cuMemFree synchronises implicitly with outstanding work that uses the buffer.
        _ = context.driver.api.cuMemFree(address)
    }
}

/// Copies and fills on raw device addresses, so they work on ``DeviceBuffer``s and on mapped
/// virtual ranges alike. The synchronous ones make the context current; the asynchronous
/// ones, meant for hot paths, expect it current already (``CUDAContext/makeCurrent()``).
extension CUDAContext {
    /// `cuMemcpyHtoD`: copies `source` to `destination` and returns once the copy is done.
    public func copyHostToDevice(destination: UInt64, source: UnsafeRawBufferPointer) throws {
        guard let base = source.baseAddress, source.count > 0 else { return }
        try makeCurrent()
        try driver.check(driver.api.cuMemcpyHtoD(destination, base, source.count), "cuMemcpyHtoD")
    }

    /// ``copyHostToDevice(destination:source:)`` for an array of plain values.
    public func copyHostToDevice<T: BitwiseCopyable>(destination: UInt64, from values: [T]) throws {
        try values.withUnsafeBytes { try copyHostToDevice(destination: destination, source: $0) }
    }

    /// `cuMemcpyDtoH`: copies `destination.count` bytes from `source`, waiting for the copy.
    public func copyDeviceToHost(destination: UnsafeMutableRawBufferPointer, source: UInt64) throws {
        guard let base = destination.baseAddress, destination.count > 0 else { return }
        try makeCurrent()
        try driver.check(driver.api.cuMemcpyDtoH(base, source, destination.count), "cuMemcpyDtoH")
    }

    /// ``copyDeviceToHost(destination:source:)`` into a new array of `count` values.
    public func copyDeviceToHost<T: BitwiseCopyable>(source: UInt64, count: Int, as type: T.Type = T.self) throws -> [T] {
        precondition(count >= 0, "negative element count")
        return try [T](unsafeUninitializedCapacity: count) { buffer, initialized in
            try copyDeviceToHost(destination: UnsafeMutableRawBufferPointer(buffer), source: source)
            initialized = count
        }
    }

    /// `cuMemcpyDtoDAsync`: queues a device-to-device copy on `stream` (nil: default stream).
    public func copyDeviceToDeviceAsync(destination: UInt64, source: UInt64, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes >= 0, "negative copy size")
        if bytes == 0 { return }
        try driver.check(driver.api.cuMemcpyDtoDAsync(destination, source, bytes, stream.handle), "cuMemcpyDtoDAsync")
    }

    /// `cuMemcpyDtoHAsync`: queues a device-to-host copy into `destination`, which must stay valid
    /// (and unread) until the stream passes the copy; page-locked memory makes it a DMA the host
    /// does not wait for.
    public func copyDeviceToHostAsync(destination: UnsafeMutableRawPointer, source: UInt64, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes >= 0, "negative copy size")
        if bytes == 0 { return }
        try driver.check(driver.api.cuMemcpyDtoHAsync(destination, source, bytes, stream.handle), "cuMemcpyDtoHAsync")
    }

    /// `cuMemcpyHtoDAsync`: queues a host-to-device copy. `source` must stay valid until the
    /// stream reaches the copy; for pageable memory the driver stages it and may block.
    public func copyHostToDeviceAsync(destination: UInt64, source: UnsafeRawBufferPointer, stream: CUDAStream?) throws {
        guard let base = source.baseAddress, source.count > 0 else { return }
        try driver.check(
            driver.api.cuMemcpyHtoDAsync(destination, base, source.count, stream.handle), "cuMemcpyHtoDAsync")
    }

    /// `cuMemsetD8Async`: queues filling `bytes` bytes at `destination` with `value`.
    public func memset8Async(destination: UInt64, value: UInt8, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes >= 0, "negative fill size")
        if bytes == 0 { return }
        try driver.check(driver.api.cuMemsetD8Async(destination, value, bytes, stream.handle), "cuMemsetD8Async")
    }
}

extension CUDAContext {
    /// Host memory for copies the host does not wait for: page-locked when the driver allows it
    /// (`cuMemAllocHost`), else ordinary memory (the driver then stages each copy itself).
    func allocateHostMemory(bytes: Int) -> (pointer: UnsafeMutableRawPointer, pageLocked: Bool) {
        var raw: UnsafeMutableRawPointer? = nil
        if let allocate = driver.api.cuMemAllocHost, driver.api.cuMemFreeHost != nil, allocate(&raw, bytes) == CUDA_SUCCESS, let raw {
            return (raw, true)
        }
        return (UnsafeMutableRawPointer.allocate(byteCount: bytes, alignment: 256), false)
    }

    /// Frees what `allocateHostMemory` returned.
    func freeHostMemory(_ pointer: UnsafeMutableRawPointer, pageLocked: Bool) {
        if pageLocked { _ = driver.api.cuMemFreeHost?(pointer) } else { pointer.deallocate() }
    }
}

/// Host memory that a hot path queues its uploads from, reused call after call: page-locked
/// when the driver allows it (so `cuMemcpyHtoDAsync` is a DMA the host does not wait for or
/// stage), else ordinary memory. An event recorded after each round of copies keeps the next
/// round from overwriting bytes a queued copy has not read yet.
///
/// Use: `begin(bytes:)`, write into the memory it returns, `upload` ranges of it, `end(stream:)`.
/// `@unchecked Sendable`: one user at a time, as with a stream.
public final class UploadStaging: @unchecked Sendable {
    public let context: CUDAContext
    public private(set) var capacity = 0
    /// Whether the memory is page-locked (false: the driver stages each copy itself).
    public private(set) var pageLocked = false
    private var pointer: UnsafeMutableRawPointer?
    private let copied: CUDAEvent
    private var pending = false

    public init(context: CUDAContext) throws {
        self.context = context
        copied = try CUDAEvent(context: context)
    }

    deinit {
        // The event's wait cannot fail in a way deinit could report; free after it.
        if pending { _ = context.driver.api.cuEventSynchronize(copied.handle) }
        release()
    }

    /// Waits for the last round's copies to have read their bytes, grows to `bytes` if needed,
    /// and returns the memory to write this round's bytes into.
    public func begin(bytes: Int) throws -> UnsafeMutableRawPointer {
        precondition(bytes > 0, "staging size must be positive")
        if pending {
            try copied.synchronize()
            pending = false
        }
        if bytes > capacity {
            release()
            let size = max(bytes, capacity * 3 / 2, 64 << 10)
            (pointer, pageLocked) = context.allocateHostMemory(bytes: size)
            capacity = size
        }
        return pointer!
    }

    /// Queues a copy of `count` bytes at `offset` of this round's memory to `destination`.
    public func upload(offset: Int, count: Int, to destination: UInt64, stream: CUDAStream?) throws {
        precondition(offset >= 0 && offset + count <= capacity, "upload outside the staging memory")
        guard count > 0, let pointer else { return }
        try context.copyHostToDeviceAsync(destination: destination, source: UnsafeRawBufferPointer(start: pointer + offset, count: count),
                                          stream: stream)
    }

    /// Ends the round: the next `begin` waits until `stream` has passed this round's copies.
    public func end(stream: CUDAStream?) throws {
        try copied.record(on: stream)
        pending = true
    }

    private func release() {
        guard let pointer else { return }
        context.freeHostMemory(pointer, pageLocked: pageLocked)
        self.pointer = nil
        capacity = 0
    }
}

/// Host memory that results are copied back into while the host goes on: page-locked when the
/// driver allows it, with an event marking when the last copy into it has landed.
///
/// `@unchecked Sendable`: one user at a time, as with a stream.
public final class DownloadBuffer: @unchecked Sendable {
    public let context: CUDAContext
    public let capacity: Int
    public let pageLocked: Bool
    public let pointer: UnsafeMutableRawPointer
    private let landed: CUDAEvent
    private var pending = false

    public init(context: CUDAContext, bytes: Int) throws {
        precondition(bytes > 0, "a download buffer needs a positive size")
        self.context = context
        capacity = bytes
        landed = try CUDAEvent(context: context)
        (pointer, pageLocked) = context.allocateHostMemory(bytes: bytes)
    }

    deinit {
        if pending { _ = context.driver.api.cuEventSynchronize(landed.handle) }
        context.freeHostMemory(pointer, pageLocked: pageLocked)
    }

    /// Queues a copy of `bytes` from `source` into the start of this buffer, then marks it.
    public func download(from source: UInt64, bytes: Int, stream: CUDAStream?) throws {
        precondition(bytes <= capacity, "download of \(bytes) bytes exceeds the buffer's \(capacity)")
        if pending { try landed.synchronize(); pending = false }
        try context.copyDeviceToHostAsync(destination: pointer, source: source, bytes: bytes, stream: stream)
        try landed.record(on: stream)
        pending = true
    }

    /// Waits until the last queued copy has landed; the bytes are then the host's to read.
    public func wait() throws {
        guard pending else { return }
        try landed.synchronize()
        pending = false
    }
}
