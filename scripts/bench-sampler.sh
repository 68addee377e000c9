#!/usr/bin/env bash
# Times Sampler.sample at a 151,936-entry vocabulary (Qwen2.5's logits), optimized like a
# release build, without building the whole package: compiles the sampling sources with a
# small driver. Usage: scripts/bench-sampler.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cat > "$work/main.swift" <<'SWIFT'
#if canImport(Glibc)
import Glibc
#endif
let vocabulary = 151_936, limit = 151_665
var g = Xoshiro256StarStar(seed: 42)
func gaussian() -> Float {
    let u1 = max(g.nextUnit(), 1e-12), u2 = g.nextUnit()
    return Float((-2 * log(u1)).squareRoot() * cos(2 * Double.pi * u2))
}
// Flat: a wide spread with no clear winner (worst case for top-p). Peaked: a few ids far above
// the rest, as in most decoding steps of a trained model.
let flat = (0..<vocabulary).map { _ in gaussian() * 2.5 }
var peaked = (0..<vocabulary).map { _ in gaussian() * 2 }
for (i, boost) in [(17, 16), (4242, 15), (99_000, 14), (123, 12)] { peaked[i] += Float(boost) }
func now() -> Double {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return Double(t.tv_sec) + Double(t.tv_nsec) * 1e-9
}
func bench(_ name: String, _ p: SamplingParameters) {
    for (shape, logits) in [("flat", flat), ("peaked", peaked)] {
        var s = try! Sampler(parameters: p)
        for t in 0..<64 { s.accept(t * 31) }
        var sink = 0
        for _ in 0..<20 { sink &+= s.sample(logits: logits, vocabularyLimit: limit).id }
        let n = 300
        let start = now()
        for _ in 0..<n { sink &+= s.sample(logits: logits, vocabularyLimit: limit).id }
        let micros = (now() - start) / Double(n) * 1e6
        let padded = name + String(repeating: " ", count: max(0, 44 - name.count))
        print("\(padded) \(shape == "flat" ? "flat  " : "peaked") \(Int(micros.rounded())) us  (\(sink % 10))")
    }
}
bench("greedy", SamplingParameters(temperature: 0))
bench("greedy, logprobs 5", SamplingParameters(temperature: 0, logprobs: 5))
bench("T 1", SamplingParameters(temperature: 1))
bench("T 0.7", SamplingParameters(temperature: 0.7))
bench("T 0.7, top-k 50", SamplingParameters(temperature: 0.7, topK: 50))
bench("T 0.7, top-p 0.9", SamplingParameters(temperature: 0.7, topP: 0.9))
bench("T 0.7, top-k 20, top-p 0.8 (Qwen default)", SamplingParameters(temperature: 0.7, topK: 20, topP: 0.8, repetitionPenalty: 1.05))
bench("T 0.7, min-p 0.05", SamplingParameters(temperature: 0.7, minP: 0.05))
bench("T 0.7, top-p 0.95, penalties, logprobs 5", SamplingParameters(temperature: 0.7, topP: 0.95, repetitionPenalty: 1.1, presencePenalty: 0.5, logprobs: 5))
SWIFT
s="$root/Sources/Runtime/Sampling"
swiftc -O -wmo "$s/Sampler.swift" "$s/SamplingParameters.swift" "$s/RandomSource.swift" "$s/VectorMath.swift" \
    "$work/main.swift" -o "$work/bench"
"$work/bench"
