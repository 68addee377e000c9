import CCUDA

/// Thin throwing wrappers over the CUDA virtual memory management (VMM) calls that back the
/// KV cache: reserve a virtual range once, then map and unmap physical pages into it as
/// sequences grow and shrink, without moving data or invalidating pointers.
///
/// Devices are CUDA ordinals. The calls act on the driver, not on a context, but a thread
/// that issues them should have made a ``CUDAContext`` current.
extension CUDADriver {
    /// `cuMemAddressReserve`: reserves `size` bytes of device virtual address space (no memory).
    /// `alignment` 0 means the default (the allocation granularity).
    public func reserveAddressRange(size: Int, alignment: Int = 0) throws -> UInt64 {
        precondition(size > 0 && alignment >= 0, "bad reservation size \(size) / alignment \(alignment)")
        var address: CUdeviceptr = 0
        try check(api.cuMemAddressReserve(&address, size, alignment, 0, 0), "cuMemAddressReserve")
        return address
    }

    /// `cuMemAddressFree`: returns a range from ``reserveAddressRange(size:alignment:)``; unmap it first.
    public func freeAddressRange(_ address: UInt64, size: Int) throws {
        try check(api.cuMemAddressFree(address, size), "cuMemAddressFree")
    }

    /// `cuMemCreate`: allocates `size` bytes of pinned device memory on `device`, with no
    /// shareable handle type. `size` must be a multiple of ``allocationGranularity(device:recommended:)``.
    public func createPhysical(size: Int, device: Int) throws -> UInt64 {
        precondition(size > 0, "physical allocation size must be positive")
        var properties = CUDADriver.allocationProperties(device: device)
        var handle: CUmemGenericAllocationHandle = 0
        try check(api.cuMemCreate(&handle, size, &properties, 0), "cuMemCreate")
        return handle
    }

    /// `cuMemRelease`: drops our reference; the memory is freed once it is also unmapped everywhere.
    public func releasePhysical(_ handle: UInt64) throws {
        try check(api.cuMemRelease(handle), "cuMemRelease")
    }

    /// `cuMemMap`: maps all of the physical allocation `handle` (offset 0) at `address`.
    /// The range is not accessible until ``setAccess(address:size:device:readWrite:)``.
    public func map(address: UInt64, size: Int, handle: UInt64) throws {
        try check(api.cuMemMap(address, size, 0, handle, 0), "cuMemMap")
    }

    /// `cuMemMap` of `size` bytes of `handle` from byte `offset` on (a part of an allocation of
    /// several chunks); `offset` and `size` are multiples of the granularity.
    public func map(address: UInt64, size: Int, offset: Int, handle: UInt64) throws {
        try check(api.cuMemMap(address, size, offset, handle, 0), "cuMemMap")
    }

    /// `cuMemUnmap`: unmaps `size` bytes at `address`; the device must no longer be using them.
    public func unmap(address: UInt64, size: Int) throws {
        try check(api.cuMemUnmap(address, size), "cuMemUnmap")
    }

    /// `cuMemSetAccess`: lets `device` read (and write, if `readWrite`) a mapped range.
    public func setAccess(address: UInt64, size: Int, device: Int, readWrite: Bool = true) throws {
        var descriptor = CUmemAccessDesc()
        descriptor.location.type = Int32(CU_MEM_LOCATION_TYPE_DEVICE)
        descriptor.location.id = Int32(device)
        descriptor.flags = Int32(readWrite ? CU_MEM_ACCESS_FLAGS_PROT_READWRITE : CU_MEM_ACCESS_FLAGS_PROT_READ)
        try check(api.cuMemSetAccess(address, size, &descriptor, 1), "cuMemSetAccess")
    }

    /// `cuMemGetAllocationGranularity` for the allocations ``createPhysical(size:device:)`` makes:
    /// sizes and mapping offsets must be multiples of the minimum (2 MiB on current GPUs); the
    /// recommended one performs better.
    public func allocationGranularity(device: Int, recommended: Bool = false) throws -> Int {
        var properties = CUDADriver.allocationProperties(device: device)
        var granularity = 0
        let option = recommended ? CU_MEM_ALLOC_GRANULARITY_RECOMMENDED : CU_MEM_ALLOC_GRANULARITY_MINIMUM
        try check(
            api.cuMemGetAllocationGranularity(&granularity, &properties, Int32(option)),
            "cuMemGetAllocationGranularity")
        return granularity
    }

    static func allocationProperties(device: Int) -> CUmemAllocationProp {
        precondition(device >= 0, "device ordinal must not be negative")
        var properties = CUmemAllocationProp()
        properties.type = Int32(CU_MEM_ALLOCATION_TYPE_PINNED)
        properties.requestedHandleTypes = Int32(CU_MEM_HANDLE_TYPE_NONE)
        properties.location.type = Int32(CU_MEM_LOCATION_TYPE_DEVICE)
        properties.location.id = Int32(device)
        return properties
    }
}
