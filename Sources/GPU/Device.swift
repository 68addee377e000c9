import CCUDA

/// A GPU's compute capability, e.g. 9.0 for H100/H200.
public struct ComputeCapability: Hashable, Comparable, Codable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int

    public init(major: Int, minor: Int) {
        self.major = major
        self.minor = minor
    }

    /// The NVRTC architecture name, e.g. `sm_90`, or `sm_90a` with `suffix: "a"`.
    public func architecture(suffix: String = "") -> String { "sm_\(major)\(minor)\(suffix)" }

    public var description: String { "\(major).\(minor)" }

    public static func < (lhs: Self, rhs: Self) -> Bool { (lhs.major, lhs.minor) < (rhs.major, rhs.minor) }
}

/// What vtensor needs to know about one GPU, read once with `cuDeviceGetAttribute`.
public struct CUDADevice: Hashable, Codable, Sendable {
    public var ordinal: Int
    public var name: String
    public var computeCapability: ComputeCapability
    public var totalMemory: Int
    public var multiprocessorCount: Int
    public var l2CacheBytes: Int
    /// Dynamic shared memory a block may opt into with ``KernelFunction/setMaxDynamicSharedMemory(_:)``.
    public var maxSharedMemoryPerBlockOptIn: Int
    /// Peak memory clock in kHz, 0 if the driver no longer reports it.
    public var memoryClockKHz: Int
    /// Memory bus width in bits, 0 if the driver no longer reports it.
    public var memoryBusWidthBits: Int
    /// Whether `cuMemCreate`/`cuMemMap` work here; the KV cache needs it.
    public var supportsVirtualMemory: Bool

    /// Reads device `ordinal` (`cuDeviceGet`, `cuDeviceGetName`, `cuDeviceTotalMem`, attributes).
    public init(ordinal: Int, driver: CUDADriver) throws {
        precondition(ordinal >= 0, "device ordinal must not be negative")
        let api = driver.api
        var device: CUdevice = 0
        try driver.check(api.cuDeviceGet(&device, Int32(ordinal)), "cuDeviceGet")
        var nameBuffer = [CChar](repeating: 0, count: 256)
        try driver.check(api.cuDeviceGetName(&nameBuffer, Int32(nameBuffer.count - 1), device), "cuDeviceGetName")
        var memory = 0
        try driver.check(api.cuDeviceTotalMem(&memory, device), "cuDeviceTotalMem")

        func attribute(_ id: Int) throws -> Int {
            var value: Int32 = 0
            try driver.check(api.cuDeviceGetAttribute(&value, Int32(id), device), "cuDeviceGetAttribute")
            return Int(value)
        }
        // CUDA 13 deprecates the memory clock attributes; they are informational, so 0 if refused.
        func optionalAttribute(_ id: Int) -> Int { (try? attribute(id)) ?? 0 }

        self.ordinal = ordinal
        self.name = nameBuffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        self.totalMemory = memory
        self.computeCapability = ComputeCapability(
            major: try attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
            minor: try attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR))
        self.multiprocessorCount = try attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        self.l2CacheBytes = try attribute(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)
        self.maxSharedMemoryPerBlockOptIn = try attribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
        self.memoryClockKHz = optionalAttribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE)
        self.memoryBusWidthBits = optionalAttribute(CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH)
        self.supportsVirtualMemory = try attribute(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED) != 0
    }

    /// Every device the driver reports, in ordinal order.
    public static func all(driver: CUDADriver) throws -> [CUDADevice] {
        try (0..<driver.deviceCount).map { try CUDADevice(ordinal: $0, driver: driver) }
    }

    /// Theoretical peak DRAM bandwidth in bytes/s (double data rate), 0 if unknown.
    public var peakMemoryBandwidth: Double {
        2 * Double(memoryClockKHz) * 1000 * Double(memoryBusWidthBits) / 8
    }

    /// Throws ``GPUError/virtualMemoryUnsupported(device:name:)`` unless VMM works here.
    public func requireVirtualMemory() throws {
        if !supportsVirtualMemory { throw GPUError.virtualMemoryUnsupported(device: ordinal, name: name) }
    }
}
