import CCUDA

/// A half-precision matrix product through cuBLASLt (`cublasLtMatmul`, fp32 accumulation):
/// D[m x n] = A^T B with A stored k x m and B k x n, column-major ("TN"), D m x n. Used to
/// measure the device's matmul ceiling next to our own kernels.
///
/// `@unchecked Sendable`: immutable handles; calls are serialized by the caller's stream.
public final class CuBLASLtMatmul: @unchecked Sendable {
    /// `@unchecked Sendable`: immutable C function addresses.
    struct API: @unchecked Sendable {
        let descCreate: PFN_cublasLtMatmulDescCreate
        let descDestroy: PFN_cublasLtMatmulDescDestroy
        let descSetAttribute: PFN_cublasLtMatmulDescSetAttribute
        let layoutCreate: PFN_cublasLtMatrixLayoutCreate
        let layoutDestroy: PFN_cublasLtMatrixLayoutDestroy
        let matmul: PFN_cublasLtMatmul
        // Choosing an algorithm (`candidates`).
        let preferenceCreate: PFN_cublasLtMatmulPreferenceCreate
        let preferenceDestroy: PFN_cublasLtMatmulPreferenceDestroy
        let preferenceSetAttribute: PFN_cublasLtMatmulPreferenceSetAttribute
        let getHeuristic: PFN_cublasLtMatmulAlgoGetHeuristic
        // Reading and changing an algorithm (`splitVariants`, `configuration`).
        let capGetAttribute: PFN_cublasLtMatmulAlgoCapGetAttribute
        let configGetAttribute: PFN_cublasLtMatmulAlgoConfigGetAttribute
        let configSetAttribute: PFN_cublasLtMatmulAlgoConfigSetAttribute
        let check: PFN_cublasLtMatmulAlgoCheck

        init(_ library: DynamicLibrary) throws {
            descCreate = try library.function("cublasLtMatmulDescCreate", as: PFN_cublasLtMatmulDescCreate.self)
            descDestroy = try library.function("cublasLtMatmulDescDestroy", as: PFN_cublasLtMatmulDescDestroy.self)
            descSetAttribute = try library.function("cublasLtMatmulDescSetAttribute", as: PFN_cublasLtMatmulDescSetAttribute.self)
            layoutCreate = try library.function("cublasLtMatrixLayoutCreate", as: PFN_cublasLtMatrixLayoutCreate.self)
            layoutDestroy = try library.function("cublasLtMatrixLayoutDestroy", as: PFN_cublasLtMatrixLayoutDestroy.self)
            matmul = try library.function("cublasLtMatmul", as: PFN_cublasLtMatmul.self)
            preferenceCreate = try library.function("cublasLtMatmulPreferenceCreate", as: PFN_cublasLtMatmulPreferenceCreate.self)
            preferenceDestroy = try library.function("cublasLtMatmulPreferenceDestroy", as: PFN_cublasLtMatmulPreferenceDestroy.self)
            preferenceSetAttribute = try library.function("cublasLtMatmulPreferenceSetAttribute",
                                                          as: PFN_cublasLtMatmulPreferenceSetAttribute.self)
            getHeuristic = try library.function("cublasLtMatmulAlgoGetHeuristic", as: PFN_cublasLtMatmulAlgoGetHeuristic.self)
            capGetAttribute = try library.function("cublasLtMatmulAlgoCapGetAttribute", as: PFN_cublasLtMatmulAlgoCapGetAttribute.self)
            configGetAttribute = try library.function("cublasLtMatmulAlgoConfigGetAttribute",
                                                      as: PFN_cublasLtMatmulAlgoConfigGetAttribute.self)
            configSetAttribute = try library.function("cublasLtMatmulAlgoConfigSetAttribute",
                                                      as: PFN_cublasLtMatmulAlgoConfigSetAttribute.self)
            check = try library.function("cublasLtMatmulAlgoCheck", as: PFN_cublasLtMatmulAlgoCheck.self)
        }
    }

    /// One algorithm the heuristic offers for a product: the opaque value `cublasLtMatmul`
    /// takes, the workspace it needs, and the heuristic's estimate of its waves.
    public struct Candidate: @unchecked Sendable {
        public let algorithm: cublasLtMatmulAlgo_t
        public let workspaceBytes: Int
        public let waves: Float

        /// The algorithm value's eight words (what identifies it across calls to the heuristic).
        public var words: [UInt64] {
            withUnsafeBytes(of: algorithm) { Array($0.bindMemory(to: UInt64.self)) }
        }
    }

    public let handle: CuBLASLtHandle
    public let m: Int, n: Int, k: Int
    /// The algorithm `run` uses; nil lets cuBLASLt choose at each call by its heuristic.
    /// Set it only while no other thread runs this product.
    public var chosen: Candidate?
    let api: API
    let desc: cublasLtMatmulDesc_t
    let layouts: (a: cublasLtMatrixLayout_t, b: cublasLtMatrixLayout_t, d: cublasLtMatrixLayout_t)

    /// Whether D is fp32 (else the input type).
    public let floatOutput: Bool

    /// - Parameters:
    ///   - fp16: fp16 inputs (else bf16).
    ///   - floatOutput: D in fp32 (e.g. a residual stream) instead of the input type.
    ///   - handle: a handle to share (creating one is a costly call: a model making a product per
    ///     step shape shares one); nil creates one for this product.
    public init(context: CUDAContext, m: Int, n: Int, k: Int, fp16: Bool = false, floatOutput: Bool = false,
                handle: CuBLASLtHandle? = nil) throws {
        self.floatOutput = floatOutput
        let library = try CuBLASLt.shared()
        self.handle = try handle ?? library.makeHandle(context: context)
        let api = try API(library.library)
        self.api = api
        self.m = m
        self.n = n
        self.k = k
        var desc: cublasLtMatmulDesc_t? = nil
        try checkCuBLAS(api.descCreate(&desc, Int32(CUBLAS_COMPUTE_32F), Int32(CUDA_R_32F)), "cublasLtMatmulDescCreate")
        guard let desc else { preconditionFailure("cublasLtMatmulDescCreate succeeded without a descriptor") }
        self.desc = desc
        var transA = Int32(CUBLAS_OP_T), transB = Int32(CUBLAS_OP_N)
        try checkCuBLAS(api.descSetAttribute(desc, Int32(CUBLASLT_MATMUL_DESC_TRANSA), &transA, 4), "cublasLtMatmulDescSetAttribute")
        try checkCuBLAS(api.descSetAttribute(desc, Int32(CUBLASLT_MATMUL_DESC_TRANSB), &transB, 4), "cublasLtMatmulDescSetAttribute")
        let type = Int32(fp16 ? CUDA_R_16F : CUDA_R_16BF)
        func layout(_ rows: Int, _ cols: Int, _ type: Int32) throws -> cublasLtMatrixLayout_t {
            var layout: cublasLtMatrixLayout_t? = nil
            try checkCuBLAS(api.layoutCreate(&layout, type, UInt64(rows), UInt64(cols), Int64(rows)), "cublasLtMatrixLayoutCreate")
            guard let layout else { preconditionFailure("cublasLtMatrixLayoutCreate succeeded without a layout") }
            return layout
        }
        layouts = (try layout(k, m, type), try layout(k, n, type), try layout(m, n, floatOutput ? Int32(CUDA_R_32F) : type))
    }

    deinit {
        _ = api.layoutDestroy(layouts.a)
        _ = api.layoutDestroy(layouts.b)
        _ = api.layoutDestroy(layouts.d)
        _ = api.descDestroy(desc)
    }

    /// FLOPs of one product.
    public var flops: Double { 2 * Double(m) * Double(n) * Double(k) }

    /// Queues D = A^T B (or D += A^T B with `accumulate`) on `stream` (the context current on this
    /// thread), with `algorithm` if given, else `chosen`, else cuBLASLt's own heuristic.
    public func run(a: UInt64, b: UInt64, d: UInt64, workspace: UInt64, workspaceBytes: Int, stream: CUDAStream,
                    accumulate: Bool = false, algorithm: Candidate? = nil) throws {
        var alpha: Float = 1, beta: Float = accumulate ? 1 : 0
        func call(_ algo: UnsafeRawPointer?) -> cublasStatus_t {
            api.matmul(
                handle.handle, desc, &alpha, UnsafeRawPointer(bitPattern: UInt(a)), layouts.a,
                UnsafeRawPointer(bitPattern: UInt(b)), layouts.b, &beta, UnsafeRawPointer(bitPattern: UInt(d)), layouts.d,
                UnsafeMutableRawPointer(bitPattern: UInt(d)), layouts.d, algo, UnsafeMutableRawPointer(bitPattern: UInt(workspace)),
                workspaceBytes, stream.handle)
        }
        let status: cublasStatus_t
        if var algo = (algorithm ?? chosen)?.algorithm {
            status = withUnsafePointer(to: &algo) { call(UnsafeRawPointer($0)) }
        } else {
            status = call(nil)
        }
        try checkCuBLAS(status, "cublasLtMatmul")
    }

    /// Up to `count` algorithms the heuristic offers for this product within `workspaceBytes`,
    /// in its order of preference. With a half-precision D, only algorithms that add split-K
    /// partial sums in fp32 (or do not split K) are offered: the others round every partial sum
    /// to bf16, and a timed choice must not cost accuracy.
    public func candidates(count: Int, workspaceBytes: Int) throws -> [Candidate] {
        precondition(count > 0, "ask for at least one candidate")
        var preference: cublasLtMatmulPreference_t? = nil
        try checkCuBLAS(api.preferenceCreate(&preference), "cublasLtMatmulPreferenceCreate")
        guard let preference else { preconditionFailure("cublasLtMatmulPreferenceCreate succeeded without a preference") }
        defer { _ = api.preferenceDestroy(preference) }
        var limit = UInt64(workspaceBytes)
        try checkCuBLAS(api.preferenceSetAttribute(preference, Int32(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES), &limit, 8),
                        "cublasLtMatmulPreferenceSetAttribute")
        var schemes = UInt32(floatOutput ? CUBLASLT_REDUCTION_SCHEME_MASK : CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
        try checkCuBLAS(api.preferenceSetAttribute(preference, Int32(CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK), &schemes, 4),
                        "cublasLtMatmulPreferenceSetAttribute")
        var results = [cublasLtMatmulHeuristicResult_t](repeating: cublasLtMatmulHeuristicResult_t(), count: count)
        var returned: Int32 = 0
        try checkCuBLAS(api.getHeuristic(handle.handle, desc, layouts.a, layouts.b, layouts.d, layouts.d, preference, Int32(count),
                                            &results, &returned), "cublasLtMatmulAlgoGetHeuristic")
        return results.prefix(Int(max(0, returned))).filter { $0.state == CUBLAS_STATUS_SUCCESS }.map {
            Candidate(algorithm: $0.algo, workspaceBytes: $0.workspaceSize, waves: $0.wavesCount)
        }
    }
}

extension CuBLASLtMatmul {
    /// What an algorithm value is, read from its configuration: cuBLASLt's algorithm id, tile and
    /// stages ids (cuBLASLt's enums; 0 where the family does not use them), and how many parts K
    /// is split into (1: none).
    public struct Configuration: Sendable, Equatable, CustomStringConvertible {
        public var algorithmID: Int32
        public var tile: UInt32
        public var stages: UInt32
        public var splits: UInt32
        public var description: String { "algo \(algorithmID) tile \(tile) stages \(stages) split-K \(splits)" }
    }

    /// The configuration of `candidate`; nil where cuBLASLt will not say.
    public func configuration(of candidate: Candidate) -> Configuration? {
        var algo = candidate.algorithm
        func read<T: FixedWidthInteger>(_ attribute: Int32, as _: T.Type) -> T? {
            var value: T = 0
            var written = 0
            let status = api.configGetAttribute(&algo, attribute, &value, MemoryLayout<T>.size, &written)
            return status == CUBLAS_STATUS_SUCCESS ? value : nil
        }
        guard let id = read(Int32(CUBLASLT_ALGO_CONFIG_ID), as: Int32.self) else { return nil }
        return Configuration(algorithmID: id, tile: read(Int32(CUBLASLT_ALGO_CONFIG_TILE_ID), as: UInt32.self) ?? 0,
                             stages: read(Int32(CUBLASLT_ALGO_CONFIG_STAGES_ID), as: UInt32.self) ?? 0,
                             splits: read(Int32(CUBLASLT_ALGO_CONFIG_SPLITK_NUM), as: UInt32.self) ?? 1)
    }

    /// `candidate` with K split into each of `splits` parts, where the algorithm can split K and
    /// cuBLASLt accepts the result for this product within `workspaceBytes`: the heuristic offers
    /// a product that launches too few tiles to fill the device (a decode step's 4096-wide
    /// projections at 128 rows: 32 tiles of 128 x 128 on 132 SMs) mostly unsplit, and splitting K
    /// gives every SM a part of the weights to stream. Partial sums add up in fp32 (reduction
    /// scheme COMPUTE_TYPE) when the algorithm can; in D's own type otherwise, only when D is fp32,
    /// so a bf16 D never rounds a partial sum (see `candidates`).
    public func splitVariants(of candidate: Candidate, splits: [Int], workspaceBytes: Int) -> [Candidate] {
        var base = candidate.algorithm
        var support: Int32 = 0, schemes: UInt32 = 0, written = 0
        guard api.capGetAttribute(&base, Int32(CUBLASLT_ALGO_CAP_SPLITK_SUPPORT), &support, 4, &written) == CUBLAS_STATUS_SUCCESS,
              support != 0,
              api.capGetAttribute(&base, Int32(CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK), &schemes, 4, &written) == CUBLAS_STATUS_SUCCESS
        else { return [] }
        let scheme: UInt32
        if schemes & UInt32(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE) != 0 {
            scheme = UInt32(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE)
        } else if floatOutput && schemes & UInt32(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE) != 0 {
            scheme = UInt32(CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE)
        } else if floatOutput && schemes & UInt32(CUBLASLT_REDUCTION_SCHEME_INPLACE) != 0 {
            scheme = UInt32(CUBLASLT_REDUCTION_SCHEME_INPLACE)
        } else {
            return []
        }
        let current = configuration(of: candidate)?.splits ?? 1
        var variants: [Candidate] = []
        for parts in splits where parts > 1 && UInt32(parts) != current && k / parts >= 128 {
            var algo = candidate.algorithm
            var count = UInt32(parts), reduction = scheme
            guard api.configSetAttribute(&algo, Int32(CUBLASLT_ALGO_CONFIG_SPLITK_NUM), &count, 4) == CUBLAS_STATUS_SUCCESS,
                  api.configSetAttribute(&algo, Int32(CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME), &reduction, 4) == CUBLAS_STATUS_SUCCESS
            else { continue }
            var result = cublasLtMatmulHeuristicResult_t()
            guard api.check(handle.handle, desc, layouts.a, layouts.b, layouts.d, layouts.d, &algo, &result) == CUBLAS_STATUS_SUCCESS,
                  result.workspaceSize <= workspaceBytes
            else { continue }
            variants.append(Candidate(algorithm: algo, workspaceBytes: result.workspaceSize, waves: result.wavesCount))
        }
        return variants
    }
}

private func checkCuBLAS(_ status: cublasStatus_t, _ function: String) throws {
    guard status == CUBLAS_STATUS_SUCCESS else { throw GPUError.cublasCall(function: function, status: status) }
}
