/// Rotary position embedding settings after resolving both config styles
/// (top-level `rope_theta` + `rope_scaling`, and transformers-5 `rope_parameters`).
public struct RoPEConfig: Sendable, Equatable {
    public enum Scaling: Sendable, Equatable {
        case none
        /// Llama 3.1 frequency-dependent scaling.
        case llama3(factor: Double, lowFreqFactor: Double, highFreqFactor: Double, originalMaxPositionEmbeddings: Int)
        /// Position interpolation: positions divided by `factor`.
        case linear(factor: Double)
    }

    public var theta: Double
    public var scaling: Scaling

    public init(theta: Double, scaling: Scaling) {
        self.theta = theta
        self.scaling = scaling
    }
}

/// The JSON object of `rope_scaling` or `rope_parameters`; older files spell `rope_type` as `type`.
struct RawRoPE: Decodable {
    var ropeTheta: Double?
    var ropeType: String?
    var type: String?
    var factor: Double?
    var lowFreqFactor: Double?
    var highFreqFactor: Double?
    var originalMaxPositionEmbeddings: Int?

    enum CodingKeys: String, CodingKey {
        case type, factor
        case ropeTheta = "rope_theta"
        case ropeType = "rope_type"
        case lowFreqFactor = "low_freq_factor"
        case highFreqFactor = "high_freq_factor"
        case originalMaxPositionEmbeddings = "original_max_position_embeddings"
    }

    static let supported = ["default", "linear", "llama3"]

    func resolve(theta: Double, key: String) throws -> RoPEConfig {
        let kind = ropeType ?? type ?? "default"
        func need<T>(_ value: T?, _ name: String) throws -> T {
            guard let value else { throw ConfigProblem("\(key) of type \(kind) is missing \(name)") }
            return value
        }
        switch kind {
        case "default":
            return RoPEConfig(theta: theta, scaling: .none)
        case "linear":
            let f = try need(factor, "factor")
            guard f > 0 else { throw ConfigProblem("\(key) factor must be positive, got \(f)") }
            return RoPEConfig(theta: theta, scaling: .linear(factor: f))
        case "llama3":
            let f = try need(factor, "factor")
            let low = try need(lowFreqFactor, "low_freq_factor")
            let high = try need(highFreqFactor, "high_freq_factor")
            let original = try need(originalMaxPositionEmbeddings, "original_max_position_embeddings")
            guard f > 0, low > 0, high > low, original > 0 else {
                throw ConfigProblem("\(key) llama3 needs factor > 0, 0 < low_freq_factor < high_freq_factor and original_max_position_embeddings > 0")
            }
            return RoPEConfig(theta: theta, scaling: .llama3(factor: f, lowFreqFactor: low, highFreqFactor: high, originalMaxPositionEmbeddings: original))
        default:
            throw ConfigProblem("unsupported rope type \(kind) in \(key) (supported: \(Self.supported.joined(separator: ", ")))")
        }
    }
}
