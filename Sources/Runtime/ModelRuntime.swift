import Support
import Foundation
import Glibc
import GPU
import Models
import VTensor

/// Where a model computes.
public enum ComputeBackend: String, Sendable, Codable, CaseIterable {
    case cuda, cpu
}

/// How to build a model for serving: the backend and the sizes fixed at construction.
public struct ModelRuntimeOptions: Sendable {
    /// nil: CUDA when a device exists, else the CPU.
    public var backend: ComputeBackend?
    public var device = 0
    /// The cap on KV memory; nil: 90% of the GPU memory free after weights and workspace, or
    /// 2 GiB of host memory on the CPU (where a fraction is of the machine's memory).
    public var kvBudget: MemoryBudget?
    /// Address space reserved per sequence; nil: the model's context.
    public var maxTokensPerSequence: Int?
    /// The most tokens and sequences one step carries (the GPU's workspace is sized for them).
    public var maxStepTokens = 8192
    public var maxStepRows = 256
    /// CPU threads; nil: every processor this process may use.
    public var threads: Int?
    /// CPU: a GGUF's Q4_0/Q4_1/Q8_0 matrices stay in their block format (and only in it).
    public var nativeCPUWeights = true
    /// GPU: the kernel choices fixed at construction.
    public var gpu = GPUModel.Options()
    /// GPU: virtual tensors (held while used) or the paged baseline (the budget reserved up front).
    public var kvMode = KVMode.vtensor

    public init() {}
}

/// A model built for a backend, with its KV cache: the one place that chooses the backend and
/// constructs the model, so every command and the server build it the same way.
public struct ModelRuntime: @unchecked Sendable {
    public let model: any LanguageModel
    public let backend: ComputeBackend
    /// The model's files (tokenizer, chat template, generation config); nil for a dummy preset.
    public let loaded: LoadedModel?
    /// For reports: backend, device and precision.
    public let description: String
    /// Runs first on the engine's mapper thread (the GPU's context made current there).
    public let mapperThreadSetup: (@Sendable () throws -> Void)?

    /// nil when a CUDA device can be used; otherwise why not, starting "no CUDA device".
    public static func gpuUnavailableReason() -> String? {
        do {
            let driver = try CUDADriver.shared()
            return driver.deviceCount > 0 ? nil : "no CUDA device: the driver reports 0 devices"
        } catch {
            let text = String(describing: error)
            return text.hasPrefix("no CUDA device") ? text : "no CUDA device: \(text)"
        }
    }

    /// The backend `options` asks for, or the default; throws when CUDA is asked for and absent.
    public static func resolveBackend(_ requested: ComputeBackend?) throws -> ComputeBackend {
        let reason = gpuUnavailableReason()
        switch requested {
        case .cuda?:
            if let reason { throw RuntimeError.unsupported("--backend cuda: \(reason)") }
            return .cuda
        case .cpu?: return .cpu
        case nil: return reason == nil ? .cuda : .cpu
        }
    }

    /// Opens `path` (a Hugging Face directory, a `.gguf`, a preset with `.dummy`, or nil for the
    /// embedded default) on the chosen backend. A dummy preset on the GPU gets its random weights
    /// generated on the device (no host copy of an 8B model).
    public static func open(_ path: String?, format: LoadFormat = .auto, options: ModelRuntimeOptions = ModelRuntimeOptions()) throws -> ModelRuntime {
        let backend = try resolveBackend(options.backend)
        switch backend {
        case .cuda:
            var loaded: LoadedModel? = nil
            let config: ModelConfig
            if format == .dummy, let path, let preset = ModelPresets.config(named: path) {
                config = preset
            } else {
                // A checkpoint directory goes to the device from its mapped files, with no host copy.
                loaded = try LoadedModel.open(path, format: format, hostWeights: false)
                config = loaded!.config
            }
            let gpu = try GPUModel(config: config, weights: format == .dummy ? nil : loaded?.hostWeights,
                                   device: options.device, kvBudget: options.kvBudget ?? .fractionOfFree(0.9),
                                   checkpoint: format == .dummy ? nil : loaded?.checkpoint, maxBatchTokens: options.maxStepTokens,
                                   maxLogitRows: options.maxStepRows, maxTokensPerSequence: options.maxTokensPerSequence,
                                   options: options.gpu, kvMode: options.kvMode)
            let context = gpu.context
            return ModelRuntime(model: gpu, backend: .cuda, loaded: loaded,
                                description: "cuda, \(gpu.name), bf16" + (options.kvMode == .paged ? ", paged KV" : ""),
                                mapperThreadSetup: { try context.makeCurrent() })
        case .cpu:
            guard options.kvMode == .vtensor else { throw RuntimeError.unsupported("the paged KV cache (--kv paged) runs on the GPU only") }
            let loaded = try LoadedModel.open(path, format: format, keepBlocks: options.nativeCPUWeights)
            let threads = options.threads ?? Processors.available
            let budget: Int
            switch options.kvBudget {
            case .bytes(let bytes)?: budget = bytes
            case .fractionOfFree(let fraction)?:
                // The host's memory stands in for the device's.
                budget = Int(Double(sysconf(Int32(_SC_PHYS_PAGES)) * sysconf(Int32(_SC_PAGESIZE))) * fraction)
            case .fractionOfTotal?:
                throw RuntimeError.unsupported("a share of the GPU's memory (--gpu-memory-utilization) does not apply to the CPU: give --kv-budget-mib")
            case nil: budget = 2 << 30
            }
            let cpu = try loaded.cpuModel(kvBudgetBytes: budget, maxTokensPerSequence: options.maxTokensPerSequence, threads: threads,
                                          nativeWeights: options.nativeCPUWeights)
            let label = "cpu, \(threads) thread\(threads == 1 ? "" : "s"), "
                + (cpu.quantized != nil ? "GGUF blocks (fp32 prefill, int8-activation decode)" : "fp32")
            return ModelRuntime(model: cpu, backend: .cpu, loaded: loaded, description: label, mapperThreadSetup: nil)
        }
    }

    /// GPU: the cuBLASLt products the model set up when it loaded, how long that took, and what
    /// the autotune chose and where its choices came from; nil on the CPU.
    public var matmulReport: String? {
        guard let gpu = model as? GPUModel, gpu.matmulWarmup.shapes > 0 else { return nil }
        let warmup = "cuBLASLt: \(gpu.matmulWarmup.shapes) products set up at load in \(Int(gpu.matmulWarmup.ms.rounded())) ms"
        guard let tune = GPUModel.autotuneSummary(gpu.matmulAutotuned, cacheNote: gpu.matmulTuningCacheNote) else { return warmup }
        return warmup + "; autotune: " + tune
    }

    /// KV memory the model's cache holds now and at its peak, and the weights' and workspace's
    /// device bytes where they apply (GPU).
    public var memoryReport: String {
        var text: String
        if let paged = model.kvStorage.pagedCache {
            let a = paged.accounting
            text = "KV paged: \(paged.poolBytes >> 20) MiB reserved up front (\(paged.pageCount) pages of \(paged.pageTokens) tokens), "
                + "\(a.usedPages) pages in use, peak \(a.peakUsedPages)"
        } else if let cache = model.kvStorage.virtualCache {
            let memory = cache.memory.accounting
            text = "KV \(memory.inUse * memory.chunkSize >> 20) MiB in use, peak \(memory.peakCreated * memory.chunkSize >> 20) MiB created "
            + "(\(memory.chunkSize >> 20 > 0 ? "\(memory.chunkSize >> 20) MiB" : "\(memory.chunkSize >> 10) KiB") chunks, held while used), "
            + "\(memory.created * memory.chunkSize >> 20) MiB held now"
        } else {
            text = "KV: none"
        }
        if let gpu = model as? GPUModel {
            text += "; weights \(gpu.weights.bytes >> 20) MiB, workspace \(gpu.workspaceBytes >> 20) MiB"
        }
        return text
    }
}
