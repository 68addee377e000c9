import ArgumentParser
import Glibc
import Runtime

/// `--backend cuda|cpu`: the runtime's own choice of backend.
public typealias BackendKind = ComputeBackend
extension ComputeBackend: ExpressibleByArgument {}

/// `--backend` and `--device`, shared by every subcommand that picks a backend.
public struct BackendOptions: ParsableArguments {
    public init() {}

    @Option(help: "cuda or cpu (default: cuda when a CUDA device exists, else cpu).")
    public var backend: BackendKind?

    @Option(parsing: .unconditional, help: "CUDA device ordinal.")
    public var device: Int = 0

    public func validate() throws {
        if device < 0 { throw ValidationError("--device must be a CUDA device ordinal (0 or more), got \(device)") }
    }

    /// The backend to use, and why the GPU is unavailable when it is.
    public func resolve() -> (kind: BackendKind, gpuUnavailable: String?) {
        let reason = gpuUnavailableReason()
        if let backend { return (backend, reason) }
        return (reason == nil ? .cuda : .cpu, reason)
    }
}

/// nil when a CUDA device can be used; otherwise "no CUDA device: ...".
public func gpuUnavailableReason() -> String? { ModelRuntime.gpuUnavailableReason() }

/// The physical memory of this machine, for sizing the host backend.
public func hostMemoryBytes() -> Int {
    Int(sysconf(Int32(_SC_PHYS_PAGES))) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
