import Foundation
import Models

/// Rotary position embedding in Hugging Face's rotate-half form: for each head, element i < d/2
/// pairs with i + d/2 and both rotate by position × invFrequency[i]. The same table serves the
/// CPU backend and (uploaded) the GPU kernels.
public struct RoPE: Sendable {
    public let headDim: Int
    /// d/2 inverse frequencies, after the config's scaling.
    public let inverseFrequencies: [Float]

    /// - Parameter frequencyFactors: per-frequency divisors (a GGUF's `rope_freqs.weight`), applied
    ///   instead of the config's scaling when given.
    public init(config: RoPEConfig, headDim: Int, frequencyFactors: [Float]? = nil) {
        self.headDim = headDim
        let half = headDim / 2
        var inv = [Float](repeating: 0, count: half)
        for i in 0..<half {
            // As transformers: base^(2i/d) in float32, then its reciprocal.
            let base = Float(pow(Double(Float(config.theta)), Double(Float(2 * i) / Float(headDim))))
            inv[i] = 1 / base
        }
        if let factors = frequencyFactors, factors.count == half {
            for i in 0..<half { inv[i] /= factors[i] }
        } else {
            switch config.scaling {
            case .none: break
            case .linear(let factor):
                for i in 0..<half { inv[i] /= Float(factor) }
            case .llama3(let factor, let low, let high, let original):
                let lowWavelength = Double(original) / low, highWavelength = Double(original) / high
                for i in 0..<half {
                    let f = Double(inv[i])
                    let wavelength = 2 * Double.pi / f
                    if wavelength < highWavelength { continue }
                    if wavelength > lowWavelength { inv[i] = Float(f / factor); continue }
                    let smooth = (Double(original) / wavelength - low) / (high - low)
                    inv[i] = Float((1 - smooth) * f / factor + smooth * f)
                }
            }
        }
        inverseFrequencies = inv
    }

    /// Rotates `heads` consecutive head vectors of `x` in place at `position`.
    public func apply(_ x: UnsafeMutablePointer<Float>, heads: Int, position: Int) {
        let half = headDim / 2
        for i in 0..<half {
            let angle = Float(position) * inverseFrequencies[i]
            let c = cosf(angle), s = sinf(angle)
            for h in 0..<heads {
                let p = x + h * headDim
                let a = p[i], b = p[i + half]
                p[i] = a * c - b * s
                p[i + half] = b * c + a * s
            }
        }
    }
}

/// The element-wise pieces of the CPU forward pass.
public enum CPUOps {
    /// y = x / sqrt(mean(x²) + eps) * weight, per row of `n` rows of width `width`.
    public static func rmsNorm(_ x: UnsafePointer<Float>, weight: UnsafePointer<Float>, n: Int, width: Int, eps: Float,
                               into y: UnsafeMutablePointer<Float>) {
        for r in 0..<n {
            let row = x + r * width, out = y + r * width
            var sum: Float = 0
            for i in 0..<width { sum += row[i] * row[i] }
            let scale = 1 / (sum / Float(width) + eps).squareRoot()
            for i in 0..<width { out[i] = row[i] * scale * weight[i] }
        }
    }

    /// out[r][i] = silu(gateUp[r][i]) * gateUp[r][f + i] for rows of [gate | up] (width 2f).
    public static func siluAndMultiply(_ gateUp: UnsafePointer<Float>, n: Int, f: Int, into out: UnsafeMutablePointer<Float>) {
        for r in 0..<n {
            let g = gateUp + r * 2 * f, u = g + f, o = out + r * f
            for i in 0..<f { o[i] = g[i] / (1 + expf(-g[i])) * u[i] }
        }
    }
}
