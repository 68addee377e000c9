/// Why a generation ended (OpenAI's `finish_reason`).
public enum FinishReason: String, Sendable, Codable {
    /// An end-of-sequence or stop token, or a stop string.
    case stop
    /// `maxTokens`, or the sequence reached the model's context.
    case length
    /// Cancelled by the client (or ended by a failed step) before it finished.
    case abort
}
