import GPU

/// One CUDA program as the project compiles it: source, NVRTC options, architecture suffix.
public struct KernelSource: Sendable {
    public var name: String
    public var source: String
    public var options: [String]
    public var archSuffix: String

    public init(name: String, source: String, options: [String] = [], archSuffix: String = "") {
        self.name = name
        self.source = source
        self.options = options
        self.archSuffix = archSuffix
    }
}

/// Every kernel program vtensor builds, in the configurations it uses: what
/// `vtensor kernels compile` compiles (with no GPU: NVRTC alone) to check sources and read
/// register and spill reports before spending GPU time.
public enum KernelCatalog {
    public static var all: [KernelSource] {
        [MemoryKernels.program(rowBytes: 2048)]
            + PrefillAttention.catalog
            + DecodeAttention.catalog + KVWriteKernel.catalog
    }
}
