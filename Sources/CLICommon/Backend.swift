import ArgumentParser
import GPU
import Glibc

public enum BackendKind: String, ExpressibleByArgument, Codable, CaseIterable {
    case cuda, cpu
}

/// `--backend` and `--device`, shared by every subcommand that picks a backend.
public struct BackendOptions: ParsableArguments {
    public init() {}

    @Option(help: "cuda or cpu (default: cuda when a CUDA device exists, else cpu).")
    public var backend: BackendKind?

    @Option(help: "CUDA device ordinal.")
    public var device: Int = 0

    /// The backend to use, and why the GPU is unavailable when it is.
    public func resolve() -> (kind: BackendKind, gpuUnavailable: String?) {
        let reason = gpuUnavailableReason()
        if let backend { return (backend, reason) }
        return (reason == nil ? .cuda : .cpu, reason)
    }
}

/// nil when a CUDA device can be used; otherwise "no CUDA device: ...".
public func gpuUnavailableReason() -> String? {
    do {
        let driver = try CUDADriver.shared()
        return driver.deviceCount > 0 ? nil : "no CUDA device: the driver reports 0 devices"
    } catch {
        let text = String(describing: error)
        return text.hasPrefix("no CUDA device") ? text : "no CUDA device: \(text)"
    }
}

/// The physical memory of this machine, for sizing the host backend.
public func hostMemoryBytes() -> Int {
    Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
