#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The log-probability of a known token under one row of raw logits: how a prompt token scores
/// given the tokens before it (vLLM's `prompt_logprobs`, what `echo` with `logprobs` reports).
///
/// Unlike ``Sampler``, nothing steers the row: no logit bias, no penalties (vLLM scores prompts
/// on the raw logits too). NaN counts as minus infinity and plus infinity as the largest float.
public enum TokenScore {
    /// `token`'s log-softmax over the ids below `vocabularyLimit` of `logits` (minus infinity for
    /// an id at or above it), with the `alternatives` most likely ids, most likely first.
    public static func score(_ token: Int, logits: UnsafeBufferPointer<Float>, vocabularyLimit: Int, alternatives: Int) -> SampledToken {
        let count = min(logits.count, vocabularyLimit)
        precondition(count > 0, "scoring needs at least one logit")
        var row = [Float](repeating: 0, count: count)
        return row.withUnsafeMutableBufferPointer { x in
            VectorMath.sanitizedCopy(UnsafeBufferPointer(rebasing: logits[0..<count]), into: x)
            let values = UnsafeBufferPointer(x)
            let (_, maxLogit) = VectorMath.argmax(values)
            guard maxLogit > -.infinity else { return SampledToken(id: token, logprob: -.infinity) }
            var blockSums: [Double] = []
            let logZ = maxLogit + Float(log(VectorMath.expSum(values, shift: maxLogit, scale: 1, into: nil, blockSums: &blockSums)))
            var top: [TokenLogprob] = []
            if alternatives > 0 {
                var selection: [Int32] = []
                Sampler.selectTop(min(alternatives, count), of: values, into: &selection)
                Sampler.sortDescending(&selection, by: values)
                top = selection.map { TokenLogprob(id: Int($0), logprob: values[Int($0)] - logZ) }
            }
            let logprob = token >= 0 && token < count ? values[token] - logZ : -.infinity
            return SampledToken(id: token, logprob: logprob, alternatives: top)
        }
    }
}
