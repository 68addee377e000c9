import Foundation

/// Why a request failed: `reason` groups failures in the report ("connection closed
/// mid-stream", "HTTP 500", ...); `detail` is the message of one of them.
struct RequestFailure: Error, Sendable, Equatable {
    var reason: String
    var detail: String

    static func closedMidStream(_ detail: String) -> RequestFailure { RequestFailure(reason: "connection closed mid-stream", detail: detail) }
    static func malformed(_ detail: String) -> RequestFailure { RequestFailure(reason: "malformed SSE line", detail: detail) }
}

/// One streamed chunk of /v1/completions (`choices[0].text`) or /v1/chat/completions
/// (`choices[0].delta.content`), the usage chunk, or an error event.
struct StreamChunk: Decodable {
    struct Choice: Decodable {
        var text: String?
        var delta: Delta?
        var finish_reason: String?
        /// With `return_token_ids`: the ids this chunk generated.
        var token_ids: [Int]?
    }
    struct Delta: Decodable {
        var content: String?
        // Reasoning models stream their thinking here; those are generated tokens too.
        var reasoning_content: String?
        var reasoning: String?
    }
    struct Usage: Decodable {
        var prompt_tokens: Int?
        var completion_tokens: Int?
    }
    /// `{"error": {"message": ...}}` or `{"error": "..."}`.
    struct ErrorField: Decodable {
        var message: String
        init(from decoder: any Decoder) throws {
            if let text = try? decoder.singleValueContainer().decode(String.self) {
                message = text
                return
            }
            struct Body: Decodable { var message: String? }
            message = try Body(from: decoder).message ?? "(no message)"
        }
    }
    var choices: [Choice]?
    var usage: Usage?
    var error: ErrorField?

    /// The generated text this chunk carries ("" for a role-only or finish-only chunk).
    var content: String {
        guard let choice = choices?.first else { return "" }
        if let text = choice.text { return text }
        guard let delta = choice.delta else { return "" }
        return (delta.reasoning_content ?? "") + (delta.reasoning ?? "") + (delta.content ?? "")
    }
}

/// What a response stream has said so far, event by event. Time to first token is measured
/// to the first chunk that carries generated text (a chat stream's opening role chunk does
/// not count), and each later such chunk adds one inter-token gap: a chunk is one "token"
/// for ITL, as in vLLM, even if a server bundles several. An answer with no text at all (an
/// end-of-sequence token first) has its first token at the chunk that says it finished.
struct StreamState {
    /// When the request was sent (monotonic nanoseconds).
    let start: UInt64
    private(set) var firstToken: UInt64?
    private(set) var lastToken: UInt64 = 0
    /// Gaps between content chunks, in seconds.
    private(set) var gaps: [Double] = []
    private(set) var contentChunks = 0
    private(set) var text = ""
    /// The generated ids, when the server sent them (`return_token_ids`).
    private(set) var tokenIds: [Int]?
    private(set) var usagePromptTokens: Int?
    private(set) var usageCompletionTokens: Int?
    private(set) var done = false
    /// A chunk said why the answer ended (`finish_reason`).
    private(set) var finished = false
    /// It ended after its finish chunk but without `[DONE]` (transformers serve's completions do).
    private(set) var endedWithoutDone = false
    var failure: RequestFailure?

    init(start: UInt64) { self.start = start }

    /// Handles one event's data received at `now`.
    mutating func event(_ data: [UInt8], at now: UInt64, decoder: JSONDecoder) {
        guard failure == nil, !done else { return }
        if data.count == 6, data.elementsEqual("[DONE]".utf8) {
            done = true
            return
        }
        let chunk: StreamChunk
        do {
            chunk = try decoder.decode(StreamChunk.self, from: Data(data))
        } catch {
            let shown = String(decoding: data.prefix(80), as: UTF8.self)
            failure = .malformed("data is not a JSON chunk: \"\(shown)\(data.count > 80 ? "..." : "")\"")
            return
        }
        if let error = chunk.error {
            failure = RequestFailure(reason: "error event in the stream", detail: error.message)
            return
        }
        if let usage = chunk.usage {
            usagePromptTokens = usage.prompt_tokens ?? usagePromptTokens
            usageCompletionTokens = usage.completion_tokens ?? usageCompletionTokens
        }
        if let ids = chunk.choices?.first?.token_ids { tokenIds = (tokenIds ?? []) + ids }
        let content = chunk.content
        if chunk.choices?.first?.finish_reason != nil { finished = true }
        if content.isEmpty, firstToken == nil, chunk.choices?.first?.finish_reason != nil {
            firstToken = now
            lastToken = now
        }
        guard !content.isEmpty else { return }
        if firstToken == nil {
            firstToken = now
        } else if contentChunks > 0 {
            gaps.append(Double(now - lastToken) / 1e9)
        }
        lastToken = now
        contentChunks += 1
        text += content
    }

    /// The stream's HTTP response ended: a stream must have carried content, then `[DONE]` or at
    /// least a finish chunk. vLLM's client takes any stream with a chunk in it; this one still
    /// fails a stream cut off before its answer said it finished.
    mutating func ended() {
        guard failure == nil else { return }
        if !done && finished && firstToken != nil {
            endedWithoutDone = true
        } else if !done {
            failure = RequestFailure(reason: "stream ended without data: [DONE]",
                                     detail: "the response ended after \(contentChunks) content chunks, with no finish chunk and no [DONE]")
        } else if firstToken == nil {
            failure = RequestFailure(reason: "no token in the stream", detail: "the stream ended with [DONE] before any content or finish chunk")
        }
    }
}
