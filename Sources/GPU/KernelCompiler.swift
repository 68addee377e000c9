import Glibc
import Support
import Synchronization

/// Compiles CUDA C++ kernels with NVRTC at run time, for the context's exact GPU, and caches
/// the CUBINs in memory (per compiler) and on disk (shared by processes).
///
/// Kernels should be self-contained (no `#include`): NVRTC ships without toolkit headers.
/// Sendable: the mutable state (modules by key, counters, warnings) is behind a `Mutex`.
public final class KernelCompiler: Sendable {
    /// How often each path served a ``module(source:name:options:archSuffix:includeToolkitHeaders:)`` call.
    public struct Statistics: Equatable, Sendable {
        /// NVRTC compilations.
        public var compiles = 0
        /// CUBINs loaded from the disk cache.
        public var diskHits = 0
        /// Modules returned from this compiler's memory.
        public var memoryHits = 0

        public init(compiles: Int = 0, diskHits: Int = 0, memoryHits: Int = 0) {
            self.compiles = compiles
            self.diskHits = diskHits
            self.memoryHits = memoryHits
        }
    }

    private struct State {
        var modules: [String: KernelModule] = [:]
        var statistics = Statistics()
        var warnings: [String] = []
        /// Cleared after the first failed store, so an unwritable directory costs one warning.
        var diskWritable = true
    }

    public let context: CUDAContext
    /// The on-disk cache, or nil when disabled or no directory could be chosen.
    public let diskCache: KernelCache?
    private let state = Mutex(State())

    /// - Parameters:
    ///   - cacheDirectory: where CUBINs are kept; nil means
    ///     ``KernelCache/defaultDirectory(environment:)`` of the process environment.
    ///   - useDiskCache: false keeps the cache in memory only.
    public init(context: CUDAContext, cacheDirectory: String? = nil, useDiskCache: Bool = true) {
        self.context = context
        let directory = cacheDirectory ?? KernelCache.defaultDirectory(environment: ProcessEnvironment.current())
        self.diskCache = useDiskCache ? directory.map(KernelCache.init(directory:)) : nil
    }

    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Cache problems met so far (also printed to stderr); they never fail a compile.
    public var warnings: [String] { state.withLock { $0.warnings } }

    /// The options passed to NVRTC, in order: `--gpu-architecture=sm_XY<archSuffix>`,
    /// `-default-device`, `--std=c++17`, the toolkit include path if asked for and found, then
    /// the caller's `options`. Pure, so the cache key is testable.
    public static func compileOptions(
        computeCapability: ComputeCapability, options: [String], archSuffix: String = "",
        toolkitIncludeDirectory: String? = nil
    ) -> [String] {
        precondition(archSuffix.allSatisfy { $0.isLetter }, "architecture suffix must be letters, like \"a\"")
        var all = ["--gpu-architecture=\(computeCapability.architecture(suffix: archSuffix))", "-default-device", "--std=c++17"]
        if let toolkitIncludeDirectory { all.append("--include-path=\(toolkitIncludeDirectory)") }
        return all + options
    }

    /// The loaded module for `source`, compiling it only when neither cache has it.
    ///
    /// - Parameters:
    ///   - name: the program name NVRTC uses in messages.
    ///   - options: extra NVRTC options (not `-O3`: NVRTC rejects it).
    ///   - archSuffix: `"a"` compiles for `sm_90a` and the like, for architecture-specific
    ///     instructions (wgmma, setmaxnreg); such CUBINs run only on exactly that architecture.
    ///   - includeToolkitHeaders: adds `--include-path=<toolkit>/include` when one is found
    ///     (``CUDALibraries/toolkitIncludeDirectory(environment:)``).
    /// - Throws: ``GPUError/compilationFailed(kernel:log:message:)`` with NVRTC's log, other
    ///   ``GPUError``s when NVRTC is missing, ``CUDAError`` when the module does not load.
    public func module(
        source: String, name: String, options: [String] = [], archSuffix: String = "",
        includeToolkitHeaders: Bool = false
    ) throws -> KernelModule {
        let nvrtc = try NVRTC.shared()
        let includeDirectory =
            includeToolkitHeaders ? CUDALibraries.toolkitIncludeDirectory(environment: ProcessEnvironment.current()) : nil
        let key = KernelCacheKey(
            source: source,
            options: KernelCompiler.compileOptions(
                computeCapability: context.device.computeCapability, options: options, archSuffix: archSuffix,
                toolkitIncludeDirectory: includeDirectory),
            computeCapability: context.device.computeCapability, nvrtcVersion: nvrtc.version,
            driverVersion: context.driver.version)
        let text = key.text

        let cached = state.withLock { state -> KernelModule? in
            guard let module = state.modules[text] else { return nil }
            state.statistics.memoryHits += 1
            return module
        }
        if let cached { return cached }

        // Compiling outside the lock lets different kernels compile in parallel; two threads
        // racing on the same kernel both compile, and the first module stored wins.
        if let diskCache, let image = diskCache.load(key),
            let module = try? KernelModule(context: context, image: image, name: name)
        {
            return remember(module, for: text) { $0.diskHits += 1 }
        }
        let image = try nvrtc.compile(source: source, name: name, options: key.options)
        let module = try KernelModule(context: context, image: image, name: name)
        if let diskCache, state.withLock({ $0.diskWritable }) {
            do {
                try diskCache.store(image, for: key)
            } catch {
                state.withLock { $0.diskWritable = false }
                warn("not writing kernels to \(diskCache.directory) (compiling still works): \(error)")
            }
        }
        return remember(module, for: text) { $0.compiles += 1 }
    }

    private func remember(_ module: KernelModule, for text: String, count: (inout Statistics) -> Void) -> KernelModule {
        state.withLock { state in
            count(&state.statistics)
            if let existing = state.modules[text] { return existing }
            state.modules[text] = module
            return module
        }
    }

    private func warn(_ message: String) {
        state.withLock { $0.warnings.append(message) }
        let line = Array("vtensor: warning: \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
