import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization
import Tokenizers
import VTensor

/// Where a request's output token count comes from: the server's `usage` (asked for with
/// `stream_options.include_usage`), the client's tokenizer over the streamed text, or, with
/// neither, the number of content chunks (one token each on servers that stream per token).
enum OutputTokenSource: String, Sendable, CaseIterable {
    case usage, tokenizer, chunks
}

/// One request's measurements.
struct RequestRecord: Sendable {
    /// When it was sent, in monotonic nanoseconds.
    var start: UInt64
    /// Seconds from sending to the first content chunk (nil: none came).
    var ttft: Double?
    /// Seconds between content chunks.
    var itls: [Double]
    /// Seconds from sending to the last content chunk (vLLM's end-to-end latency).
    var latency: Double
    var promptTokens: Int
    var outputTokens: Int
    var outputSource: OutputTokenSource
    var failure: RequestFailure?
    var text: String
    /// Complete, but its stream had no `[DONE]` after the finish chunk.
    var endedWithoutDone = false
    /// The generated ids, when asked for and the server sent them.
    var tokenIds: [Int]? = nil
    /// A conversation's round (0: its first), nil for a request of its own.
    var round: Int? = nil

    var succeeded: Bool { failure == nil }
}

/// Idle keep-alive connections, reused by the next request: the run opens as many as it has
/// requests in flight at once (one per concurrency slot), and no more.
final class ConnectionPool: Sendable {
    let address: ServerAddress
    let group: any EventLoopGroup
    private let idle = Mutex<[StreamingConnection]>([])

    init(address: ServerAddress, group: any EventLoopGroup) {
        self.address = address
        self.group = group
    }

    func acquire() async throws -> StreamingConnection {
        while let connection = idle.withLock({ $0.popLast() }) {
            if connection.isActive { return connection }
        }
        return try await StreamingConnection.connect(to: address, group: group)
    }

    func release(_ connection: StreamingConnection, reusable: Bool) {
        if reusable { idle.withLock { $0.append(connection) } } else { connection.close() }
    }

    func closeAll() {
        for connection in idle.withLock({ pool in defer { pool.removeAll() }; return pool }) { connection.close() }
    }
}

/// Sends benchmark requests to one server and measures them.
struct ServeClient: Sendable {
    var address: ServerAddress
    var endpoint: ServeEndpoint
    /// The `model` field (nil: not sent).
    var model: String?
    var ignoreEOS: Bool
    /// Sent with every request (nil: the server's default).
    var temperature: Double? = nil
    /// Extra body fields (an object's members, as JSON text) and the share of requests that send them.
    var extraBody: String? = nil
    var extraBodyShare = 1.0
    var tokenizer: Tokenizer?
    var form: PromptForm
    var timeout: TimeAmount
    let pool: ConnectionPool

    init(address: ServerAddress, endpoint: ServeEndpoint, model: String?, ignoreEOS: Bool, tokenizer: Tokenizer?, form: PromptForm,
         timeoutSeconds: Double, group: any EventLoopGroup) {
        self.address = address
        self.endpoint = endpoint
        self.model = model
        self.ignoreEOS = ignoreEOS
        self.tokenizer = tokenizer
        self.form = form
        timeout = .nanoseconds(Int64(timeoutSeconds * 1e9))
        pool = ConnectionPool(address: address, group: group)
    }

    private var head: HTTPRequestHead {
        var head = requestHead(.POST, endpoint.rawValue)
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Accept", value: "text/event-stream")
        return head
    }

    /// A request to `path` with the host and, when `OPENAI_API_KEY` is set, the key (as the
    /// `openai` client sends it; a server under `--api-key` wants it on every /v1 route).
    private func requestHead(_ method: HTTPMethod, _ path: String) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: method, uri: address.pathPrefix + path)
        head.headers.add(name: "Host", value: address.hostHeader)
        if let key = ProcessInfo.processInfo.environment["OPENAI_API_KEY"], !key.isEmpty {
            head.headers.add(name: "Authorization", value: "Bearer \(key)")
        }
        return head
    }

    /// Sends one request and waits for its stream to end.
    func send(_ request: BenchRequest) async -> RequestRecord {
        let extra = extraBody.flatMap { RequestBody.takesExtra(request, share: extraBodyShare) ? $0 : nil }
        let body = RequestBody.encode(request, endpoint: endpoint, model: model, ignoreEOS: ignoreEOS, temperature: temperature, extra: extra)
        var head = self.head
        head.headers.add(name: "Content-Length", value: String(body.count))
        let start = monotonicNanos()
        let connection: StreamingConnection
        do {
            connection = try await pool.acquire()
        } catch {
            // NIO's connection error lists every address tried; the first one's error says why.
            let why = (error as? NIOConnectionError)?.connectionErrors.first.map { "\($0.error)" } ?? "\(error)"
            return record(request, state: StreamState(start: start),
                          failure: RequestFailure(reason: "cannot connect", detail: "\(address.hostHeader): \(why)"))
        }
        let outcome = await connection.send(head: head, body: body, start: start, timeout: timeout)
        pool.release(connection, reusable: outcome.reusable)
        return record(request, state: outcome.state, failure: outcome.state.failure)
    }

    private func record(_ request: BenchRequest, state: StreamState, failure: RequestFailure?) -> RequestRecord {
        let outputTokens: Int, source: OutputTokenSource
        if let usage = state.usageCompletionTokens {
            (outputTokens, source) = (usage, .usage)
        } else if let tokenizer {
            (outputTokens, source) = (tokenizer.encode(state.text, addSpecialTokens: false).count, .tokenizer)
        } else {
            (outputTokens, source) = (state.contentChunks, .chunks)
        }
        let first = state.firstToken.map { Double($0 - state.start) / 1e9 }
        return RequestRecord(start: state.start, ttft: first, itls: state.gaps,
                             latency: state.firstToken == nil ? 0 : Double(state.lastToken - state.start) / 1e9,
                             promptTokens: state.usagePromptTokens ?? request.promptTokens, outputTokens: outputTokens, outputSource: source,
                             failure: failure, text: state.text, endedWithoutDone: state.endedWithoutDone,
                             tokenIds: state.tokenIds)
    }

    /// Runs a unit of work: its one request, or its conversation round after round. When a
    /// round fails, the rounds after it (which need its answer) count as failed too.
    func run(_ unit: WorkUnit, onRecord: (RequestRecord) -> Void) async -> [RequestRecord] {
        switch unit {
        case .single(let request):
            let record = await send(request)
            onRecord(record)
            return [record]
        case .conversation(let conversation):
            var records: [RequestRecord] = [], answers: [Conversation.Answer] = []
            for _ in conversation.turns.indices {
                if let failed = records.last?.failure {
                    let skipped = RequestRecord(start: monotonicNanos(), ttft: nil, itls: [], latency: 0, promptTokens: 0, outputTokens: 0,
                                                outputSource: .chunks, failure: RequestFailure(reason: "not sent: an earlier round failed",
                                                                                               detail: "round \(records.count + 1): \(failed.reason)"),
                                                text: "")
                    records.append(skipped)
                    onRecord(skipped)
                    continue
                }
                var record = await send(conversation.request(after: answers, form: form, tokenizer: tokenizer))
                record.round = records.count
                records.append(record)
                onRecord(record)
                answers.append(Conversation.Answer(text: record.text, tokens: record.outputTokens, ids: record.tokenIds))
            }
            return records
        }
    }

    /// POST /reset_prefix_cache (vLLM's and vtensor's): the server drops its cached prefixes, so
    /// a run does not find the prompts of the run before cached. False when it did not answer 200.
    func resetPrefixCache() async -> Bool {
        guard let connection = try? await StreamingConnection.connect(to: address, group: pool.group) else { return false }
        defer { connection.close() }
        var head = requestHead(.POST, "/reset_prefix_cache")
        head.headers.add(name: "Content-Length", value: "0")
        return await connection.fetch(head: head, timeout: .seconds(30)) != nil
    }

    /// GET /metrics (Prometheus text), or nil when the server has none.
    func scrapeMetrics() async -> String? {
        guard let connection = try? await StreamingConnection.connect(to: address, group: pool.group) else { return nil }
        defer { connection.close() }
        return await connection.fetch(head: requestHead(.GET, "/metrics"), timeout: .seconds(30)).map { String(decoding: $0, as: UTF8.self) }
    }

    /// The first model id the server lists at /v1/models (as `vllm bench serve` does without
    /// --model), or nil when it cannot be asked.
    func firstModel() async -> String? {
        guard let connection = try? await StreamingConnection.connect(to: address, group: pool.group) else { return nil }
        defer { connection.close() }
        // (With the key: /v1/models is behind --api-key like the rest of /v1.)
        return await connection.fetch(head: requestHead(.GET, "/v1/models"), timeout: .seconds(30)).flatMap { body in
            guard let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any],
                  let data = object["data"] as? [[String: Any]] else { return nil }
            return data.first?["id"] as? String
        }
    }
}
