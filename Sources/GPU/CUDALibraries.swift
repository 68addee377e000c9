import Support

/// Where each CUDA library is looked for. Every list is a pure function of the environment so
/// the search order is tested; ``DynamicLibrary/open(_:candidates:consequence:)`` tries them in order.
///
/// - Driver: `libcuda.so.1` by name only. The driver belongs to the kernel module's install and
///   lives in the default loader path; a toolkit's `stubs/libcuda.so` must never be picked up.
/// - NVRTC and cuBLASLt: for each major version, 13 then 12: `$CUDA_HOME/lib64/<lib>.so.N`,
///   `$CUDA_PATH/lib64/<lib>.so.N`, `/usr/local/cuda/lib64/<lib>.so.N`, then the bare
///   `<lib>.so.N` (default loader path: `LD_LIBRARY_PATH`, ld.so.cache); finally the unversioned
///   `<lib>.so`. Duplicates (e.g. `CUDA_HOME=/usr/local/cuda`) are tried once.
public enum CUDALibraries {
    /// Major versions tried, newest first.
    public static let versions = [13, 12]
    public static let toolkitRoot = "/usr/local/cuda"

    public static let driverCandidates = ["libcuda.so.1"]

    public static func nvrtcCandidates(environment: [String: String]) -> [String] {
        candidates(library: "libnvrtc", environment: environment)
    }

    public static func cublasLtCandidates(environment: [String: String]) -> [String] {
        candidates(library: "libcublasLt", environment: environment)
    }

    /// Toolkit roots in search order: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`.
    public static func toolkitRoots(environment: [String: String]) -> [String] {
        unique([environment.nonEmpty("CUDA_HOME"), environment.nonEmpty("CUDA_PATH"), toolkitRoot].compactMap { $0 })
    }

    /// `<root>/include` for each toolkit root; NVRTC ships no headers of its own.
    public static func includeDirectoryCandidates(environment: [String: String]) -> [String] {
        toolkitRoots(environment: environment).map { $0 + "/include" }
    }

    /// The first of ``includeDirectoryCandidates(environment:)`` that holds `cuda_runtime.h`
    /// or `cuda.h`, or nil.
    public static func toolkitIncludeDirectory(environment: [String: String]) -> String? {
        includeDirectoryCandidates(environment: environment).first { directory in
            FileSystem.isRegularFile(directory + "/cuda.h") || FileSystem.isRegularFile(directory + "/cuda_runtime.h")
        }
    }

    static func candidates(library: String, environment: [String: String]) -> [String] {
        let roots = toolkitRoots(environment: environment)
        var list: [String] = []
        for version in versions {
            let file = "\(library).so.\(version)"
            list += roots.map { "\($0)/lib64/\(file)" }
            list.append(file)
        }
        list.append("\(library).so")
        return unique(list)
    }

    private static func unique(_ items: [String]) -> [String] {
        var seen: Set<String> = []
        return items.filter { seen.insert($0).inserted }
    }
}
