import ArgumentParser
import Foundation
import Tokenizers

/// One chat message of a benchmark request.
struct BenchMessage: Sendable, Equatable {
    var role: String
    var content: String
}

/// What a request sends as its prompt: token ids (/v1/completions accepts a list of ints),
/// text, or chat messages (/v1/chat/completions).
enum BenchPrompt: Sendable, Equatable {
    case tokens([Int])
    case text(String)
    case messages([BenchMessage])
}

/// One request of a serving run.
struct BenchRequest: Sendable, Equatable {
    var prompt: BenchPrompt
    /// Prompt tokens as the client knows them: exact with a tokenizer, estimated without. The
    /// server's usage replaces it when the stream reports one.
    var promptTokens: Int
    /// `max_tokens` (completions) or `max_completion_tokens` (chat).
    var maxTokens: Int
    /// Ask for the generated ids (`return_token_ids`, vLLM's): a conversation in token-id form
    /// sends its answers on as the ids the model produced.
    var returnTokenIds = false
}

/// The HTTP endpoint a run drives.
enum ServeEndpoint: String, Sendable, CaseIterable {
    case completions = "/v1/completions"
    case chat = "/v1/chat/completions"
}

/// The JSON body of a streaming request, written by hand: the client encodes thousands of
/// bodies a second, and this is a few string appends.
enum RequestBody {
    /// `temperature` nil leaves the server's default. Chat carries the limit as both
    /// `max_completion_tokens` (vLLM's client) and `max_tokens` (what `transformers serve` reads).
    /// `extra`: more members (JSON text, no braces) put in as they are.
    static func encode(_ request: BenchRequest, endpoint: ServeEndpoint, model: String?, ignoreEOS: Bool,
                       temperature: Double? = nil, extra: String? = nil) -> [UInt8] {
        var out = "{"
        if let model { out += "\"model\":\(quoted(model))," }
        switch request.prompt {
        case .tokens(let ids):
            out += "\"prompt\":[" + ids.map(String.init).joined(separator: ",") + "],"
        case .text(let text):
            if endpoint == .chat {
                out += "\"messages\":[{\"role\":\"user\",\"content\":\(quoted(text))}],"
            } else {
                out += "\"prompt\":\(quoted(text)),"
            }
        case .messages(let messages):
            out += "\"messages\":[" + messages.map { "{\"role\":\(quoted($0.role)),\"content\":\(quoted($0.content))}" }.joined(separator: ",") + "],"
        }
        if endpoint == .chat { out += "\"max_completion_tokens\":\(request.maxTokens)," }
        out += "\"max_tokens\":\(request.maxTokens),"
        if let temperature { out += "\"temperature\":\(temperature)," }
        if ignoreEOS { out += "\"ignore_eos\":true," }
        if request.returnTokenIds { out += "\"return_token_ids\":true," }
        if let extra, !extra.isEmpty { out += extra + "," }
        out += "\"stream\":true,\"stream_options\":{\"include_usage\":true}}"
        return Array(out.utf8)
    }

    /// The members of a JSON object given as text (`--extra-body`), as they were written.
    static func members(ofObject text: String) throws -> String {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (try? JSONSerialization.jsonObject(with: Data(trimmed.utf8))) is [String: Any], trimmed.hasPrefix("{"), trimmed.hasSuffix("}") else {
            throw ValidationError("--extra-body must be a JSON object, got: \(text)")
        }
        return String(trimmed.dropFirst().dropLast()).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Whether `request` is among the `share` that send the extra fields: a hash of its prompt
    /// below the share, so every server gets the same requests with them.
    static func takesExtra(_ request: BenchRequest, share: Double) -> Bool {
        guard share < 1 else { return true }
        var h: UInt64 = 0xcbf29ce484222325
        func mix(_ bytes: some Sequence<UInt8>) { for b in bytes { h = (h ^ UInt64(b)) &* 0x100000001b3 } }
        switch request.prompt {
        case .tokens(let ids): for id in ids { mix(withUnsafeBytes(of: UInt32(truncatingIfNeeded: id).littleEndian) { Array($0) }) }
        case .text(let text): mix(text.utf8)
        case .messages(let messages): for m in messages { mix(m.role.utf8); mix(m.content.utf8) }
        }
        return Double(h % 1_000_000) / 1_000_000 < share
    }

    /// A JSON string literal.
    static func quoted(_ text: String) -> String { JSON.quoted(text) }
}
