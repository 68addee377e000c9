import Foundation
import VTensor

/// When each request (or conversation) of a serving run arrives, in seconds from the start.
///
/// `vllm bench serve`'s arrival process: at rate `inf` everything arrives at once; otherwise
/// the gaps are gamma-distributed with shape `burstiness` and mean `1 / rate` (burstiness 1 is
/// a Poisson process; below 1 burstier, above 1 more even). As vLLM does, the cumulative times
/// are then scaled so the last arrival is at exactly `count / rate`: without that, the sum of
/// random gaps misses the target by a percent or two and throughput would move with the seed.
enum Arrivals {
    static func times(count: Int, rate: Double, burstiness: Double, seed: UInt64) -> [Double] {
        guard count > 0 else { return [] }
        guard rate.isFinite else { return Array(repeating: 0, count: count) }
        var rng = SplitMix64(seed: seed &+ 0x5EED)
        var times: [Double] = []
        times.reserveCapacity(count)
        var clock = 0.0
        for _ in 0..<count {
            clock += burstiness.isFinite ? gamma(shape: burstiness, scale: 1 / (rate * burstiness), using: &rng) : 1 / rate
            times.append(clock)
        }
        let scale = Double(count) / rate / clock
        return times.map { $0 * scale }
    }

    /// A gamma variate (Marsaglia and Tsang's method; shapes below 1 boosted by U^(1/shape)).
    static func gamma(shape: Double, scale: Double, using rng: inout SplitMix64) -> Double {
        if shape < 1 {
            let u = max(rng.nextDouble(), .leastNonzeroMagnitude)
            return gamma(shape: shape + 1, scale: scale, using: &rng) * pow(u, 1 / shape)
        }
        let d = shape - 1.0 / 3.0, c = 1 / (9 * d).squareRoot()
        while true {
            var x = 0.0, v = 0.0
            repeat {
                x = normal(using: &rng)
                v = 1 + c * x
            } while v <= 0
            v = v * v * v
            let u = rng.nextDouble()
            if u < 1 - 0.0331 * x * x * x * x || log(max(u, .leastNonzeroMagnitude)) < 0.5 * x * x + d * (1 - v + log(v)) {
                return d * v * scale
            }
        }
    }

    /// A standard normal variate (Box-Muller).
    static func normal(using rng: inout SplitMix64) -> Double {
        let u1 = max(rng.nextDouble(), .leastNonzeroMagnitude), u2 = rng.nextDouble()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }
}
