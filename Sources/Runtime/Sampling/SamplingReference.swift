#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The float64 oracle of the GPU sampler's semantics (see `SamplingKernelSource`): the whole
/// vocabulary sorted (value descending, id ascending), thresholds and the draw walked in that
/// order, sums in Double. Slow and simple on purpose; `vtensor dev sample` checks the kernel
/// against it, and the tests check it against ``Sampler``.
public enum SamplingReference {
    public struct Result: Sendable {
        public var token: SampledToken
        /// The ids a draw could pick (empty when greedy), most likely first.
        public var candidates: [Int]
        /// True when a float computation could decide differently: the draw's target, the top-p
        /// cut or a min-p weight within `tolerance` (relative) of its boundary.
        public var ambiguous: Bool
    }

    /// Applies the mask (`draw.allowed`), biases and penalties as the kernels do (in Float), then samples `draw` from `logits`
    /// (ids below `vocabularyLimit`).
    public static func sample(logits: [Float], vocabularyLimit: Int, draw: DeviceDraw, tolerance: Double = 1e-4) -> Result {
        let n = min(vocabularyLimit, logits.count)
        let p = draw.parameters
        var x = logits[0..<n].map { v -> Float in v.isNaN ? -.infinity : (v == .infinity ? .greatestFiniteMagnitude : v) }
        if let allowed = draw.allowed { for id in 0..<n where !DeviceDraw.allows(allowed, id) { x[id] = -.infinity } }
        for bias in draw.biases where bias.id >= 0 && bias.id < n { x[bias.id] += bias.value }
        let repetition = Float(p.repetitionPenalty), presence = Float(p.presencePenalty), frequency = Float(p.frequencyPenalty)
        for pair in draw.penalties where pair.x >= 0 && Int(pair.x) < n {
            var v = x[Int(pair.x)]
            if repetition != 1 { v = v < 0 ? v * repetition : v / repetition }
            if pair.y > 0 { v -= presence + frequency * Float(pair.y) }
            x[Int(pair.x)] = v
        }
        let order = (0..<n).sorted { x[$0] > x[$1] || (x[$0] == x[$1] && $0 < $1) }
        let mx = Double(x[order[0]])
        guard mx > -.infinity else {
            return Result(token: SampledToken(id: 0, logprob: p.logprobs != nil ? -.infinity : nil), candidates: [], ambiguous: false)
        }
        var logZ = 0.0
        var alternatives: [TokenLogprob] = []
        if let want = p.logprobs {
            logZ = mx + log(order.reduce(0.0) { $0 + exp(Double(x[$1]) - mx) })
            alternatives = order.prefix(min(want, SamplingParameters.maxLogprobs)).map { TokenLogprob(id: $0, logprob: Float(Double(x[$0]) - logZ)) }
        }
        func finish(_ id: Int, _ candidates: [Int], _ ambiguous: Bool) -> Result {
            Result(token: SampledToken(id: id, logprob: p.logprobs != nil ? Float(Double(x[id]) - logZ) : nil, alternatives: alternatives),
                   candidates: candidates, ambiguous: ambiguous)
        }
        if p.isGreedy { return finish(order[0], [], false) }

        let invT = Double(Float(1 / p.temperature))
        func weight(_ i: Int) -> Double { exp((Double(x[i]) - mx) * invT) }
        var kept = order
        var ambiguous = false
        if p.topK > 0 && p.topK < n {
            let threshold = x[order[p.topK - 1]]
            kept = order.filter { x[$0] >= threshold }
        }
        if p.topP < 1 {
            let mass = kept.reduce(0.0) { $0 + weight($1) }
            let target = Double(Float(p.topP)) * mass
            var cumulative = 0.0
            var cut = kept.count - 1
            for (j, i) in kept.enumerated() {
                cumulative += weight(i)
                if abs(cumulative - target) <= tolerance * mass { ambiguous = true }
                if cumulative >= target { cut = j; break }
            }
            let threshold = x[kept[cut]]
            kept = kept.filter { x[$0] >= threshold }
        }
        if p.minP > 0 {
            let minP = Double(Float(p.minP))
            if kept.contains(where: { abs(weight($0) - minP) <= tolerance * minP }) { ambiguous = true }
            kept = kept.filter { weight($0) >= minP }
        }
        let mass = kept.reduce(0.0) { $0 + weight($1) }
        let target = Double(draw.u) * mass
        var cumulative = 0.0
        for i in kept {
            cumulative += weight(i)
            if abs(cumulative - target) <= tolerance * mass { ambiguous = true }
            if cumulative > target { return finish(i, kept, ambiguous) }
        }
        return finish(kept.last!, kept, true)
    }
}
