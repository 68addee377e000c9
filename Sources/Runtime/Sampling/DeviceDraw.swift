/// What one row's draw on the GPU needs from its sequence's ``Sampler``: the parameters, the
/// uniform the CPU sampler would draw for this step (one step of the same generator, so a
/// seed reproduces a GPU run), the penalty pairs and the logit biases. See `GPUSampler`.
public struct DeviceDraw: Sendable, Equatable {
    public var parameters: SamplingParameters
    /// In [0, 1), rounded down to a Float (the kernel draws in float).
    public var u: Float
    /// (id, times generated) for every id seen in the prompt or generated, when a penalty is on; else empty.
    public var penalties: [SIMD2<Int32>]
    /// Added to the logits before the penalties, one entry per id (``Sampler/biases``).
    public var biases: [LogitBias]
    /// The ids that may be drawn, one bit each (bit `id % 64` of word `id / 64`; ids past the
    /// words are refused), or nil for all: a grammar's mask (structured output). The others'
    /// logits become minus infinity before anything else, as a bias of minus infinity would.
    public var allowed: [UInt64]?

    public init(parameters: SamplingParameters, u: Float, penalties: [SIMD2<Int32>] = [], biases: [LogitBias] = [], allowed: [UInt64]? = nil) {
        self.parameters = parameters
        self.u = u
        self.penalties = penalties
        self.biases = biases
        self.allowed = allowed
    }

    /// Whether `allowed` lets `id` be drawn.
    @inline(__always)
    public static func allows(_ allowed: [UInt64], _ id: Int) -> Bool {
        id >= 0 && id >> 6 < allowed.count && allowed[id >> 6] & (UInt64(1) << UInt64(id & 63)) != 0
    }

    /// The masks of `draws` for the mask kernel (`GPUSampler`): per row the index of its mask or
    /// -1, and the masks back to back, `(limit + 63) / 64` words each (padded with refusals).
    public static func packMasks(_ draws: [DeviceDraw], limit: Int) -> (rows: [Int32], words: [UInt64]) {
        let perRow = (limit + 63) / 64
        var rows = [Int32](repeating: -1, count: draws.count)
        var words: [UInt64] = []
        for (r, draw) in draws.enumerated() {
            guard let allowed = draw.allowed else { continue }
            rows[r] = Int32(words.count / perRow)
            words += allowed.prefix(perRow)
            if allowed.count < perRow { words += repeatElement(0, count: perRow - allowed.count) }
            // Ids at or past the limit are never drawn: clear the last word's bits beyond it.
            if limit % 64 != 0 { words[words.count - 1] &= (UInt64(1) << UInt64(limit % 64)) - 1 }
        }
        return (rows, words)
    }

    /// Bytes of one row's record in the kernel's table (`SampleRow` in SamplingKernelSource).
    public static let rowBytes = 48
    /// Bytes of one row's result (`SampleOut`).
    public static let outBytes = 176

    /// `u` as the kernel gets it: the largest Float not above `unit`, so it stays below 1.
    public static func floatUnit(_ unit: Double) -> Float {
        let f = Float(unit)
        return Double(f) > unit ? f.nextDown : f
    }

    /// The kernel's tables for `draws`: one 48-byte record per row (little-endian:
    /// 1/temperature or 0 when greedy, top-k or 0, top-p, min-p, repetition, presence,
    /// frequency, u, logprobs or -1, first penalty pair, pair count, bias count) and the pairs of
    /// every row: its penalty pairs (id, times generated), then its biases (id, the bias's Float bits).
    public static func pack(_ draws: [DeviceDraw]) -> (rows: [UInt8], penalties: [Int32]) {
        var rows = [UInt8](repeating: 0, count: draws.count * rowBytes)
        var penalties: [Int32] = []
        rows.withUnsafeMutableBytes { raw in
            for (r, draw) in draws.enumerated() {
                let p = draw.parameters
                let at = r * rowBytes
                func put(_ value: Float, _ field: Int) { raw.storeBytes(of: value.bitPattern.littleEndian, toByteOffset: at + 4 * field, as: UInt32.self) }
                func put(_ value: Int32, _ field: Int) { raw.storeBytes(of: value.littleEndian, toByteOffset: at + 4 * field, as: Int32.self) }
                put(p.isGreedy ? Float(0) : Float(1 / p.temperature), 0)
                put(Int32(clamping: max(p.topK, 0)), 1)
                put(Float(p.topP), 2)
                put(Float(p.minP), 3)
                put(Float(p.repetitionPenalty), 4)
                put(Float(p.presencePenalty), 5)
                put(Float(p.frequencyPenalty), 6)
                put(draw.u, 7)
                put(Int32(p.logprobs.map { min($0, SamplingParameters.maxLogprobs) } ?? -1), 8)
                put(Int32(penalties.count / 2), 9)
                put(Int32(draw.penalties.count), 10)
                put(Int32(draw.biases.count), 11)
                for pair in draw.penalties { penalties.append(pair.x); penalties.append(pair.y) }
                for bias in draw.biases {
                    penalties.append(Int32(clamping: bias.id))
                    penalties.append(Int32(bitPattern: bias.value.bitPattern))
                }
            }
        }
        return (rows, penalties)
    }

    /// Reads one row's result record.
    public static func unpack(_ raw: UnsafeRawBufferPointer, row: Int, wantsLogprobs: Bool) -> SampledToken {
        let at = row * outBytes
        func int(_ field: Int) -> Int32 { Int32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 4 * field, as: Int32.self)) }
        func float(_ field: Int) -> Float { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: at + 4 * field, as: UInt32.self))) }
        let count = Int(max(0, min(int(2), Int32(SamplingParameters.maxLogprobs))))
        let alternatives = (0..<count).map { TokenLogprob(id: Int(int(4 + $0)), logprob: float(4 + SamplingParameters.maxLogprobs + $0)) }
        return SampledToken(id: Int(int(0)), logprob: wantsLogprobs ? float(1) : nil, alternatives: alternatives)
    }
}

extension Sampler {
    /// The inputs of this step's draw on the GPU, taking the same step of the random generator
    /// that ``sample(logits:vocabularyLimit:)`` would (none when greedy). Record the pick with
    /// ``accept(_:)`` as usual.
    public mutating func deviceDraw() -> DeviceDraw {
        let u = parameters.isGreedy ? 0 : DeviceDraw.floatUnit(nextUnit())
        let p = parameters
        var pairs: [SIMD2<Int32>] = []
        if p.hasPenalties {
            let ids = penalizedIds
            pairs.reserveCapacity(ids.count)
            for id in ids.sorted() { pairs.append(SIMD2(Int32(clamping: id), Int32(clamping: generatedCount(of: id)))) }
        }
        return DeviceDraw(parameters: p, u: u, penalties: pairs, biases: biases)
    }
}
