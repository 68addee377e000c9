import Hummingbird

extension OpenAIServer {
    /// POST /reset_prefix_cache (vLLM's): drops every cached prefix no running request uses, at
    /// the engine's next step (at once when it is idle). 200 with an empty body; 400 when the
    /// server runs without a prefix cache (`--no-prefix-cache`).
    func resetPrefixCache() throws -> Response {
        guard loop.resetPrefixCache() else {
            throw APIError("this server runs without a prefix cache (--no-prefix-cache): there is nothing to reset")
        }
        return Response(status: .ok)
    }
}
