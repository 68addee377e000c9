import CCUDA

/// One device's primary context, retained for this object's lifetime.
///
/// The primary context (`cuDevicePrimaryCtxRetain`) is the one the CUDA runtime and cuBLASLt
/// also use, so everything in the process shares one context per device instead of paying for
/// several. A context is current per thread: every wrapper here that creates or queries
/// something makes it current first, but code calling the raw ``DriverAPI``, launching
/// kernels or copying asynchronously from a new thread (a page-mapper thread, say) must call
/// ``makeCurrent()`` once on that thread.
///
/// `@unchecked Sendable`: all stored properties are immutable, and a primary context may be
/// used from any thread.
public final class CUDAContext: @unchecked Sendable {
    public let driver: CUDADriver
    public let device: CUDADevice
    /// The `CUdevice` handle (not always equal to the ordinal).
    public let deviceHandle: CUdevice
    public let handle: CUcontext

    /// Retains device `ordinal`'s primary context and makes it current on this thread.
    ///
    /// - Throws: ``GPUError`` when the driver is missing or the ordinal does not exist,
    ///   ``CUDAError`` when a driver call fails.
    public init(device ordinal: Int = 0) throws {
        precondition(ordinal >= 0, "device ordinal must not be negative")
        let driver = try CUDADriver.shared()
        guard ordinal < driver.deviceCount else {
            throw GPUError.noDevice(
                reason: "device \(ordinal) requested but the driver (\(driver.versionString)) reports \(driver.deviceCount) device(s)")
        }
        let device = try CUDADevice(ordinal: ordinal, driver: driver)
        var deviceHandle: CUdevice = 0
        try driver.check(driver.api.cuDeviceGet(&deviceHandle, Int32(ordinal)), "cuDeviceGet")
        var context: CUcontext? = nil
        try driver.check(driver.api.cuDevicePrimaryCtxRetain(&context, deviceHandle), "cuDevicePrimaryCtxRetain")
        guard let context else {
            preconditionFailure("cuDevicePrimaryCtxRetain succeeded without a context")
        }
        self.driver = driver
        self.device = device
        self.deviceHandle = deviceHandle
        self.handle = context
        do {
            try makeCurrent()
        } catch {
            _ = driver.api.cuDevicePrimaryCtxRelease(deviceHandle)
            throw error
        }
    }

    deinit {
        // cuDevicePrimaryCtxRelease: drop our retain; the context dies with the last one.
        _ = driver.api.cuDevicePrimaryCtxRelease(deviceHandle)
    }

    public var ordinal: Int { device.ordinal }

    /// `cuCtxSetCurrent`: binds this context to the calling thread (a thread-local store).
    public func makeCurrent() throws {
        try driver.check(driver.api.cuCtxSetCurrent(handle), "cuCtxSetCurrent")
    }

    /// `cuMemGetInfo`: free and total device memory in bytes, as the driver sees them now.
    public func memoryInfo() throws -> (free: Int, total: Int) {
        try makeCurrent()
        var free = 0
        var total = 0
        try driver.check(driver.api.cuMemGetInfo(&free, &total), "cuMemGetInfo")
        return (free, total)
    }

    /// `cuCtxSynchronize`: waits for all work in the context; reports asynchronous faults.
    public func synchronize() throws {
        try makeCurrent()
        try driver.check(driver.api.cuCtxSynchronize(), "cuCtxSynchronize")
    }
}
