import VTensor

/// xoshiro256** (Blackman and Vigna, 2018): a small, fast generator with 256 bits of state,
/// the same sequence on every platform and Swift version for a given seed (unlike
/// `SystemRandomNumberGenerator`, which cannot be seeded).
public struct Xoshiro256StarStar: RandomNumberGenerator, Sendable {
    public private(set) var state: (UInt64, UInt64, UInt64, UInt64)

    /// Fills the state from SplitMix64 started at `seed`; never all zero.
    public init(seed: UInt64) {
        var mix = SplitMix64(seed: seed)
        state = (mix.next(), mix.next(), mix.next(), mix.next())
        if state == (0, 0, 0, 0) { state.0 = 1 }  // SplitMix64 cannot give four zeros in a row; kept for safety.
    }

    /// Seeds from the system generator (for requests that give no seed).
    public init() {
        var system = SystemRandomNumberGenerator()
        self.init(seed: system.next())
    }

    public mutating func next() -> UInt64 {
        let result = rotateLeft(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotateLeft(state.3, 45)
        return result
    }

    /// A uniform double in [0, 1) from the top 53 bits of the next output.
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }

    @inline(__always)
    private func rotateLeft(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
}
