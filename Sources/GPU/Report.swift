/// What this machine offers vtensor: driver, devices, NVRTC and cuBLASLt, with the reason
/// for anything missing. For `vtensor doctor`-style output and for benchmark records.
public struct GPUReport: Codable, Sendable {
    public struct Device: Codable, Sendable {
        public var ordinal: Int
        public var name: String
        /// e.g. "9.0".
        public var computeCapability: String
        public var totalMemory: Int
        /// Free memory as `cuMemGetInfo` saw it (nil if no context could be made).
        public var freeMemory: Int?
        public var multiprocessorCount: Int
        public var l2CacheBytes: Int
        public var maxSharedMemoryPerBlockOptIn: Int
        public var memoryClockKHz: Int
        public var memoryBusWidthBits: Int
        public var supportsVirtualMemory: Bool
        /// VMM allocation granularity, minimum and recommended (nil without VMM or on error).
        public var granularity: Int?
        public var recommendedGranularity: Int?
        /// Why some of the above could not be read.
        public var error: String?
    }

    public struct Library: Codable, Sendable {
        public var loaded: Bool
        public var version: String?
        /// The candidate that opened.
        public var path: String?
        public var error: String?
    }

    /// True when the driver loaded and reports at least one device.
    public var available: Bool
    /// Why not, when `available` is false: "no CUDA device: ...".
    public var reason: String?
    /// `cuDriverGetVersion`, e.g. 13000.
    public var driverVersion: Int?
    public var driverPath: String?
    /// Driver functions resolved with `dlsym` because `cuGetProcAddress_v2` did not serve them.
    public var driverDlsymFallbacks: [String]
    public var devices: [Device]
    public var nvrtc: Library
    public var cublasLt: Library
    /// Whether a cuBLASLt handle could be created and destroyed on device 0 (nil if not tried).
    public var cublasLtHandleWorks: Bool?

    /// Gathers the report. Never throws: every failure becomes a reason string. Retains each
    /// device's primary context briefly to read free memory.
    public static func collect() -> GPUReport {
        var report = GPUReport(
            available: false, reason: nil, driverVersion: nil, driverPath: nil, driverDlsymFallbacks: [], devices: [],
            nvrtc: Library(loaded: false), cublasLt: Library(loaded: false), cublasLtHandleWorks: nil)
        var firstContext: CUDAContext?
        do {
            let driver = try CUDADriver.shared()
            report.driverVersion = Int(driver.version)
            report.driverPath = driver.library.path
            report.driverDlsymFallbacks = driver.resolvedWithDlsym
            for ordinal in 0..<driver.deviceCount {
                let (device, context) = deviceReport(ordinal: ordinal, driver: driver)
                report.devices.append(device)
                if firstContext == nil { firstContext = context }
            }
            report.available = !report.devices.isEmpty
            if report.devices.isEmpty {
                report.reason = GPUError.noDevice(reason: "driver \(driver.versionString) reports no devices").description
            }
        } catch let error as GPUError {
            if case .noDevice = error { report.reason = error.description } else {
                report.reason = GPUError.noDevice(reason: error.description).description
            }
        } catch {
            report.reason = GPUError.noDevice(reason: "\(error)").description
        }

        do {
            let nvrtc = try NVRTC.shared()
            report.nvrtc = Library(loaded: true, version: nvrtc.version.description, path: nvrtc.library.path)
        } catch {
            report.nvrtc.error = "\(error)"
        }
        do {
            let cublasLt = try CuBLASLt.shared()
            report.cublasLt = Library(loaded: true, version: cublasLt.versionString, path: cublasLt.library.path)
            if let firstContext {
                do {
                    _ = try cublasLt.makeHandle(context: firstContext)
                    report.cublasLtHandleWorks = true
                } catch {
                    report.cublasLtHandleWorks = false
                    report.cublasLt.error = "\(error)"
                }
            }
        } catch {
            report.cublasLt.error = "\(error)"
        }
        return report
    }

    private static func deviceReport(ordinal: Int, driver: CUDADriver) -> (Device, CUDAContext?) {
        let info: CUDADevice
        do {
            info = try CUDADevice(ordinal: ordinal, driver: driver)
        } catch {
            let device = Device(
                ordinal: ordinal, name: "?", computeCapability: "?", totalMemory: 0, multiprocessorCount: 0,
                l2CacheBytes: 0, maxSharedMemoryPerBlockOptIn: 0, memoryClockKHz: 0, memoryBusWidthBits: 0,
                supportsVirtualMemory: false, error: "\(error)")
            return (device, nil)
        }
        var device = Device(
            ordinal: ordinal, name: info.name, computeCapability: info.computeCapability.description,
            totalMemory: info.totalMemory, multiprocessorCount: info.multiprocessorCount,
            l2CacheBytes: info.l2CacheBytes, maxSharedMemoryPerBlockOptIn: info.maxSharedMemoryPerBlockOptIn,
            memoryClockKHz: info.memoryClockKHz, memoryBusWidthBits: info.memoryBusWidthBits,
            supportsVirtualMemory: info.supportsVirtualMemory)
        var context: CUDAContext?
        var errors: [String] = []
        do {
            let made = try CUDAContext(device: ordinal)
            context = made
            device.freeMemory = try made.memoryInfo().free
        } catch {
            errors.append("\(error)")
        }
        if info.supportsVirtualMemory {
            do {
                device.granularity = try driver.allocationGranularity(device: ordinal)
                device.recommendedGranularity = try driver.allocationGranularity(device: ordinal, recommended: true)
            } catch {
                errors.append("\(error)")
            }
        }
        device.error = errors.isEmpty ? nil : errors.joined(separator: "; ")
        return (device, context)
    }

    /// A human-readable summary, one fact per line.
    public var summary: String {
        var lines: [String] = []
        if let driverVersion {
            lines.append("driver: \(driverVersion / 1000).\(driverVersion % 1000 / 10) (\(driverPath ?? "?"))")
        }
        if !available { lines.append("GPU: unavailable: \(reason ?? "unknown reason")") }
        for device in devices {
            var line = "GPU \(device.ordinal): \(device.name), sm \(device.computeCapability), "
            line += "\(mebibytes(device.totalMemory)) MiB"
            if let free = device.freeMemory { line += " (\(mebibytes(free)) MiB free)" }
            line += ", \(device.multiprocessorCount) SMs, L2 \(mebibytes(device.l2CacheBytes)) MiB, VMM "
            line += device.supportsVirtualMemory ? "yes" : "no"
            if let granularity = device.granularity { line += " (granularity \(granularity / 1024) KiB)" }
            if let error = device.error { line += "; error: \(error)" }
            lines.append(line)
        }
        for (name, library) in [("NVRTC", nvrtc), ("cuBLASLt", cublasLt)] {
            if library.loaded {
                lines.append("\(name): \(library.version ?? "?") (\(library.path ?? "?"))"
                    + (library.error.map { "; error: \($0)" } ?? ""))
            } else {
                lines.append("\(name): unavailable: \(library.error ?? "unknown reason")")
            }
        }
        return lines.joined(separator: "\n")
    }

    private func mebibytes(_ bytes: Int) -> Int { bytes / (1024 * 1024) }
}

extension GPUReport.Device {
    init(
        ordinal: Int, name: String, computeCapability: String, totalMemory: Int, multiprocessorCount: Int,
        l2CacheBytes: Int, maxSharedMemoryPerBlockOptIn: Int, memoryClockKHz: Int, memoryBusWidthBits: Int,
        supportsVirtualMemory: Bool, error: String? = nil
    ) {
        self.init(
            ordinal: ordinal, name: name, computeCapability: computeCapability, totalMemory: totalMemory,
            freeMemory: nil, multiprocessorCount: multiprocessorCount, l2CacheBytes: l2CacheBytes,
            maxSharedMemoryPerBlockOptIn: maxSharedMemoryPerBlockOptIn, memoryClockKHz: memoryClockKHz,
            memoryBusWidthBits: memoryBusWidthBits, supportsVirtualMemory: supportsVirtualMemory, granularity: nil,
            recommendedGranularity: nil, error: error)
    }
}

extension GPUReport.Library {
    init(loaded: Bool, version: String? = nil, path: String? = nil) {
        self.init(loaded: loaded, version: version, path: path, error: nil)
    }
}
