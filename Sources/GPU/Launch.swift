import CCUDA

/// One kernel parameter, by value. `cuLaunchKernel` takes an array of pointers, one per
/// parameter, each pointing at a value laid out as the kernel's C++ signature expects.
public enum KernelArgument: Sendable, Equatable {
    /// A device address (`T*` in the kernel).
    case pointer(UInt64)
    case int32(Int32)
    case uint32(UInt32)
    case int64(Int64)
    case uint64(UInt64)
    case float32(Float)

    /// A ``DeviceBuffer``'s address.
    public static func buffer(_ buffer: DeviceBuffer) -> KernelArgument { .pointer(buffer.address) }

    /// Size in bytes, which is also the natural alignment of every case.
    public var size: Int {
        switch self {
        case .pointer, .int64, .uint64: 8
        case .int32, .uint32, .float32: 4
        }
    }

    public var alignment: Int { size }

    /// Where each argument goes in one buffer (each at its natural alignment), and its size.
    static func layout(_ arguments: [KernelArgument]) -> (offsets: [Int], size: Int) {
        var offsets: [Int] = []
        offsets.reserveCapacity(arguments.count)
        var end = 0
        for argument in arguments {
            let offset = (end + argument.alignment - 1) & ~(argument.alignment - 1)
            offsets.append(offset)
            end = offset + argument.size
        }
        return (offsets, end)
    }

    /// Calls `body` with the `void**` array `cuLaunchKernel` wants, pointing into aligned
    /// scratch storage holding the values; both live only during `body`.
    static func withPacked<R>(
        _ arguments: [KernelArgument], _ body: (UnsafeMutablePointer<UnsafeMutableRawPointer?>) throws -> R
    ) rethrows -> R {
        let (offsets, size) = layout(arguments)
        return try withUnsafeTemporaryAllocation(byteCount: max(size, 8), alignment: 8) { storage in
            try withUnsafeTemporaryAllocation(of: UnsafeMutableRawPointer?.self, capacity: max(arguments.count, 1)) {
                pointers in
                let base = storage.baseAddress!
                for (index, argument) in arguments.enumerated() {
                    let slot = base + offsets[index]
                    switch argument {
                    case let .pointer(value): slot.storeBytes(of: value, as: UInt64.self)
                    case let .int32(value): slot.storeBytes(of: value, as: Int32.self)
                    case let .uint32(value): slot.storeBytes(of: value, as: UInt32.self)
                    case let .int64(value): slot.storeBytes(of: value, as: Int64.self)
                    case let .uint64(value): slot.storeBytes(of: value, as: UInt64.self)
                    case let .float32(value): slot.storeBytes(of: value, as: Float.self)
                    }
                    pointers[index] = slot
                }
                return try body(pointers.baseAddress!)
            }
        }
    }
}

/// A loaded CUBIN (`cuModuleLoadData`), unloaded in `deinit` (`cuModuleUnload`). Functions
/// taken from it keep it alive.
///
/// `@unchecked Sendable`: the handle never changes; modules may be used from any thread.
public final class KernelModule: @unchecked Sendable {
    public let context: CUDAContext
    public let handle: CUmodule
    /// The name given at compile time, for messages.
    public let name: String

    /// Loads `image` (a CUBIN for this device) into `context`.
    public init(context: CUDAContext, image: [UInt8], name: String) throws {
        precondition(!image.isEmpty, "empty module image")
        try context.makeCurrent()
        var module: CUmodule? = nil
        try image.withUnsafeBytes { bytes in
            try context.driver.check(context.driver.api.cuModuleLoadData(&module, bytes.baseAddress), "cuModuleLoadData")
        }
        guard let module else { preconditionFailure("cuModuleLoadData succeeded without a module") }
        self.context = context
        self.handle = module
        self.name = name
    }

    deinit {
        _ = context.driver.api.cuModuleUnload(handle)
    }

    /// `cuModuleGetFunction`: the kernel called `name` (declare it `extern "C"` to avoid mangling).
    public func function(named name: String) throws -> KernelFunction {
        var function: CUfunction? = nil
        try context.driver.check(context.driver.api.cuModuleGetFunction(&function, handle, name), "cuModuleGetFunction")
        guard let function else { preconditionFailure("cuModuleGetFunction succeeded without a function") }
        return KernelFunction(module: self, handle: function, name: name)
    }
}

/// A kernel in a ``KernelModule``.
///
/// `@unchecked Sendable`: an immutable handle plus the module that keeps it valid.
public struct KernelFunction: @unchecked Sendable {
    public let module: KernelModule
    public let handle: CUfunction
    public let name: String

    /// `cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)`: kernels must opt in to more than
    /// 48 KiB of dynamic shared memory, up to ``CUDADevice/maxSharedMemoryPerBlockOptIn``.
    public func setMaxDynamicSharedMemory(_ bytes: Int) throws {
        precondition(bytes >= 0 && bytes <= Int(Int32.max), "bad shared memory size \(bytes)")
        try module.context.driver.check(
            module.context.driver.api.cuFuncSetAttribute(
                handle, Int32(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES), Int32(bytes)),
            "cuFuncSetAttribute")
    }

    /// Whether launches can ask for programmatic dependent launch (cuLaunchKernelEx exists).
    public var supportsProgrammaticLaunch: Bool { module.context.driver.api.cuLaunchKernelEx != nil }

    /// `cuLaunchKernelEx` with programmatic stream serialization (Hopper's programmatic
    /// dependent launch): the kernel may start before the previous kernel on `stream` finishes;
    /// it must execute `griddepcontrol.wait` before reading anything that kernel wrote. Falls
    /// back to a plain launch where the driver lacks cuLaunchKernelEx.
    public func launchDependent(
        grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int = 0, stream: CUDAStream,
        arguments: [KernelArgument]
    ) throws {
        guard module.context.driver.api.cuLaunchKernelEx != nil else {
            return try launch(grid: grid, block: block, sharedMemoryBytes: sharedMemoryBytes, stream: stream, arguments: arguments)
        }
        try launchEx(attribute: Int32(CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION), grid: grid, block: block,
                     sharedMemoryBytes: sharedMemoryBytes, stream: stream, arguments: arguments)
    }

    /// A cooperative launch: every block of the grid is resident at once, so the kernel may
    /// synchronize the whole grid. The grid must not exceed ``maxActiveBlocksPerMultiprocessor(blockSize:)``
    /// times the SM count. Throws where the driver lacks cuLaunchKernelEx.
    public func launchCooperative(
        grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int = 0, stream: CUDAStream,
        arguments: [KernelArgument]
    ) throws {
        guard module.context.driver.api.cuLaunchKernelEx != nil else {
            throw GPUError.symbolNotFound(symbol: "cuLaunchKernelEx", library: "libcuda.so.1 (cooperative launch)")
        }
        try launchEx(attribute: Int32(CU_LAUNCH_ATTRIBUTE_COOPERATIVE), grid: grid, block: block,
                     sharedMemoryBytes: sharedMemoryBytes, stream: stream, arguments: arguments)
    }

    /// Blocks of `blockSize` threads one SM can hold at once (cuOccupancyMaxActiveBlocksPerMultiprocessor).
    public func maxActiveBlocksPerMultiprocessor(blockSize: Int, sharedMemoryBytes: Int = 0) throws -> Int {
        guard let query = module.context.driver.api.cuOccupancyMaxActiveBlocksPerMultiprocessor else {
            throw GPUError.symbolNotFound(symbol: "cuOccupancyMaxActiveBlocksPerMultiprocessor", library: "libcuda.so.1")
        }
        var blocks: Int32 = 0
        try module.context.driver.check(query(&blocks, handle, Int32(blockSize), sharedMemoryBytes), "cuOccupancyMaxActiveBlocksPerMultiprocessor")
        return Int(blocks)
    }

    private func launchEx(attribute id: Int32, grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int,
                          stream: CUDAStream, arguments: [KernelArgument]) throws {
        let launchEx = module.context.driver.api.cuLaunchKernelEx!
        let dimensions = [grid.0, grid.1, grid.2, block.0, block.1, block.2]
        precondition(dimensions.allSatisfy { $0 >= 1 && $0 <= Int(UInt32.max) }, "bad launch shape \(grid) x \(block)")
        var attribute = CUlaunchAttribute()
        attribute.id = id
        attribute.value.programmaticStreamSerializationAllowed = 1  // the same int as .cooperative
        let result = withUnsafeMutablePointer(to: &attribute) { attributes in
            var config = CUlaunchConfig(gridDimX: UInt32(grid.0), gridDimY: UInt32(grid.1), gridDimZ: UInt32(grid.2),
                                        blockDimX: UInt32(block.0), blockDimY: UInt32(block.1), blockDimZ: UInt32(block.2),
                                        sharedMemBytes: UInt32(sharedMemoryBytes), hStream: stream.handle, attrs: attributes, numAttrs: 1)
            return KernelArgument.withPacked(arguments) { parameters in launchEx(&config, handle, parameters, nil) }
        }
        try module.context.driver.check(result, "cuLaunchKernelEx")
    }

    /// `cuLaunchKernel`: queues the kernel on `stream` (nil: the legacy default stream).
    /// `arguments` must match the kernel's parameters in order and type; the context must be
    /// current on this thread. Launch errors show here; faults only at the next synchronisation.
    public func launch(
        grid: (Int, Int, Int), block: (Int, Int, Int), sharedMemoryBytes: Int = 0, stream: CUDAStream?,
        arguments: [KernelArgument]
    ) throws {
        let dimensions = [grid.0, grid.1, grid.2, block.0, block.1, block.2]
        precondition(dimensions.allSatisfy { $0 >= 1 && $0 <= Int(UInt32.max) }, "bad launch shape \(grid) x \(block)")
        precondition(sharedMemoryBytes >= 0 && sharedMemoryBytes <= Int(UInt32.max), "bad shared memory size")
        let api = module.context.driver.api
        let result = KernelArgument.withPacked(arguments) { parameters in
            api.cuLaunchKernel(
                handle, UInt32(grid.0), UInt32(grid.1), UInt32(grid.2), UInt32(block.0), UInt32(block.1),
                UInt32(block.2), UInt32(sharedMemoryBytes), stream.handle, parameters, nil)
        }
        try module.context.driver.check(result, "cuLaunchKernel")
    }
}
