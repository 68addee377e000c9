import Engine
import Foundation
import Hummingbird
import Runtime
import Tokenizers

/// Where and how `vtensor serve` listens.
public struct ServerConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// The name clients use in `model` (and that `/v1/models` lists).
    public var servedModelName: String
    /// When set, every /v1 request needs `Authorization: Bearer <apiKey>`.
    public var apiKey: String?

    public init(host: String = "127.0.0.1", port: Int = 8000, servedModelName: String, apiKey: String? = nil) {
        self.host = host
        self.port = port
        self.servedModelName = servedModelName
        self.apiKey = apiKey
    }
}

/// The OpenAI-compatible HTTP API over an `EngineLoop`: handlers turn JSON into token ids,
/// submit them, and await the request's `AsyncStream`; they never wait on a step.
public final class OpenAIServer: Sendable {
    public let configuration: ServerConfiguration
    let loop: EngineLoop
    let tokenizer: Tokenizer
    let chatTemplate: ChatTemplate?
    let chatTemplateProblem: String?
    /// Sampling for the fields a request leaves out (the model's generation defaults).
    let defaults: SamplingParameters

    public init(configuration: ServerConfiguration, loop: EngineLoop, tokenizer: Tokenizer,
                chatTemplate: Result<ChatTemplate, any Error>, defaults: SamplingParameters) {
        self.configuration = configuration
        self.loop = loop
        self.tokenizer = tokenizer
        switch chatTemplate {
        case .success(let template): self.chatTemplate = template; chatTemplateProblem = nil
        case .failure(let error): self.chatTemplate = nil; chatTemplateProblem = "\(error)"
        }
        var defaults = defaults
        defaults.maxTokens = nil
        self.defaults = defaults
    }

    /// Serves until SIGTERM or SIGINT; `onRunning` is called once the socket listens.
    public func run(onRunning: @escaping @Sendable () -> Void = {}) async throws {
        let router = Router()
        router.get("/health") { _, _ in Response(status: .ok) }
        router.get("/v1/models") { request, _ in self.guarded(request) { self.models() } }
        router.post("/v1/completions") { request, context in
            await self.guardedAsync(request) { try await self.completions(request, context: context, chat: false) }
        }
        router.post("/v1/chat/completions") { request, context in
            await self.guardedAsync(request) { try await self.completions(request, context: context, chat: true) }
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "vtensor"),
            onServerRunning: { _ in onRunning() })
        try await app.runService()
    }

    // MARK: Handlers

    private func models() -> Response {
        json(.ok, [
            "object": "list",
            "data": [["id": configuration.servedModelName, "object": "model", "created": created(), "owned_by": "vtensor",
                      "max_model_len": loop.engine.maxSequenceLength]],
        ])
    }

    /// /v1/completions (`chat` false) and /v1/chat/completions.
    private func completions(_ request: Request, context: some RequestContext, chat: Bool) async throws -> Response {
        var request = request
        let body = try await request.collectBody(upTo: 32 << 20)
        let data = Data(buffer: body)
        let object: [String: Any]
        do {
            guard let parsed = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw APIError("the request body must be a JSON object")
            }
            object = parsed
        } catch let error as APIError {
            throw error
        } catch {
            throw APIError("malformed JSON in the request body: \((error as NSError).localizedDescription)")
        }
        if let model = object["model"], !(model is NSNull) {
            guard let name = model as? String else { throw APIError("'model' must be a string", param: "model") }
            guard name == configuration.servedModelName else {
                throw APIError("The model `\(name)` does not exist.", status: .notFound, param: "model", code: "model_not_found")
            }
        }
        let stream = try optionalBool(object, "stream") ?? false
        let includeUsage = try streamIncludesUsage(object)
        if let n = object["n"], !(n is NSNull) {
            guard let count = jsonInt(n), count >= 1 else { throw APIError("'n' must be an integer >= 1", param: "n") }
            if count != 1 { throw APIError("'n' > 1 is not supported yet", param: "n") }
        }
        var parameters = try samplingParameters(data)
        if chat, let value = object["max_completion_tokens"], !(value is NSNull) {
            guard let count = jsonInt(value) else {
                throw APIError("'max_completion_tokens' must be an integer", param: "max_completion_tokens")
            }
            parameters.maxTokens = count
        }
        do { try parameters.validate() } catch let error as SamplingParameterError {
            throw APIError("'\(error.field)' \(error.problem)", param: error.field)
        }
        if parameters.logprobs != nil { throw APIError("logprobs are not supported yet", param: "logprobs") }
        let prompt = chat ? try chatPrompt(object) : try completionPrompt(object)
        if parameters.maxTokens == nil {
            // vLLM's default: up to the context.
            parameters.maxTokens = max(1, loop.engine.maxSequenceLength - prompt.count)
        }

        let submitted: (id: Int, outputs: AsyncStream<RequestOutput>)
        do {
            submitted = try loop.stream(GenerationRequest(prompt: prompt, parameters: parameters))
        } catch EngineError.invalidRequest(let message) {
            throw APIError(message, param: chat ? "messages" : "prompt")
        } catch EngineError.stopped {
            throw APIError("the server is shutting down", status: .serviceUnavailable, type: "server_error")
        }
        let id = (chat ? "chatcmpl-" : "cmpl-") + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        let response = ResponseShape(id: id, created: created(), model: configuration.servedModelName, chat: chat)
        if stream {
            return streamingResponse(submitted, shape: response, includeUsage: includeUsage)
        }
        var text = "", last: RequestOutput?
        await withTaskCancellationHandler {
            for await output in submitted.outputs {
                text += output.text
                last = output
            }
        } onCancel: { [loop] in
            loop.abort(submitted.id)
        }
        guard let last, let finish = last.finish else {
            throw APIError("the request ended without a result", status: .internalServerError, type: "server_error")
        }
        if let error = last.error { throw APIError(error, status: .internalServerError, type: "server_error") }
        return json(.ok, response.complete(text: text, finish: finish, promptTokens: last.promptTokens, completionTokens: last.outputTokens))
    }

    private func streamingResponse(_ submitted: (id: Int, outputs: AsyncStream<RequestOutput>), shape: ResponseShape,
                                   includeUsage: Bool) -> Response {
        let loop = self.loop
        let body = ResponseBody { writer in
            func send(_ object: Any) async throws {
                try await writer.write(ByteBuffer(string: "data: " + Self.encode(object) + "\n\n"))
            }
            do {
                if shape.chat { try await send(shape.chunk(role: true, text: "", finish: nil)) }
                for await output in submitted.outputs {
                    if let finish = output.finish {
                        if let error = output.error {
                            try await send(["error": ["message": error, "type": "server_error", "param": NSNull(), "code": NSNull()]])
                        }
                        try await send(shape.chunk(role: false, text: output.text, finish: finish.rawValue))
                        if includeUsage {
                            try await send(shape.usageChunk(promptTokens: output.promptTokens, completionTokens: output.outputTokens))
                        }
                    } else if !output.text.isEmpty {
                        try await send(shape.chunk(role: false, text: output.text, finish: nil))
                    }
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            } catch {
                // The client went away: the engine stops computing for it.
                if loop.abort(submitted.id) {
                    FileHandle.standardError.write(Data("vtensor: request \(shape.id) aborted: the client went away (\(error))\n".utf8))
                }
                throw error
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: body)
    }

    // MARK: Request fields

    private func samplingParameters(_ data: Data) throws -> SamplingParameters {
        let decoder = JSONDecoder()
        decoder.userInfo[SamplingParameters.defaultsKey] = defaults
        do {
            return try decoder.decode(SamplingParameters.self, from: data)
        } catch let DecodingError.typeMismatch(type, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)' has the wrong type (expected \(Self.typeName(type, field: field)))", param: field)
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)': \(context.debugDescription)", param: field.isEmpty ? nil : field)
        } catch {
            throw APIError("invalid sampling fields: \(error)")
        }
    }

    private static func typeName(_ type: Any.Type, field: String) -> String {
        if field == "stop" { return "a string or a list of strings" }
        if type == Double.self { return "a number" }
        if type == Int.self { return "an integer" }
        if type == Bool.self { return "a boolean" }
        if type == String.self { return "a string" }
        return "\(type)"
    }

    private func optionalBool(_ object: [String: Any], _ key: String) throws -> Bool? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        // JSONSerialization gives NSNumber for both numbers and booleans.
        guard isJSONBool(value), let flag = value as? Bool else { throw APIError("'\(key)' must be a boolean", param: key) }
        return flag
    }

    private func streamIncludesUsage(_ object: [String: Any]) throws -> Bool {
        guard let options = object["stream_options"], !(options is NSNull) else { return false }
        guard let dict = options as? [String: Any] else { throw APIError("'stream_options' must be an object", param: "stream_options") }
        return try optionalBool(dict, "include_usage") ?? false
    }

    private func completionPrompt(_ object: [String: Any]) throws -> [Int] {
        guard let value = object["prompt"], !(value is NSNull) else { throw APIError("'prompt' is required", param: "prompt") }
        if let text = value as? String { return tokenizer.encode(text, addSpecialTokens: true) }
        if let list = value as? [Any] {
            if list.count == 1, let text = list[0] as? String { return tokenizer.encode(text, addSpecialTokens: true) }
            if list.allSatisfy({ $0 is String }) {
                throw APIError("a list of several prompts is not supported yet; send one prompt a request", param: "prompt")
            }
            let ids = list.compactMap(jsonInt)
            if !list.isEmpty, ids.count == list.count { return ids }
        }
        throw APIError("'prompt' must be a string (or a list of token ids)", param: "prompt")
    }

    private func chatPrompt(_ object: [String: Any]) throws -> [Int] {
        guard let value = object["messages"], !(value is NSNull) else { throw APIError("'messages' is required", param: "messages") }
        guard let list = value as? [Any], !list.isEmpty else {
            throw APIError("'messages' must be a non-empty list of {role, content} objects", param: "messages")
        }
        var messages: [ChatMessage] = []
        for (index, item) in list.enumerated() {
            guard let message = item as? [String: Any], let role = message["role"] as? String else {
                throw APIError("messages[\(index)] must be an object with a string 'role'", param: "messages")
            }
            let content: String
            if let text = message["content"] as? String {
                content = text
            } else if let parts = message["content"] as? [Any] {
                // The list form: only text parts.
                content = try parts.map { part -> String in
                    guard let part = part as? [String: Any], part["type"] as? String == "text", let text = part["text"] as? String else {
                        throw APIError("messages[\(index)].content: only text parts are supported", param: "messages")
                    }
                    return text
                }.joined()
            } else {
                throw APIError("messages[\(index)].content must be a string", param: "messages")
            }
            messages.append(ChatMessage(role: role, content: content))
        }
        guard let chatTemplate else {
            throw APIError("this model has no usable chat template (\(chatTemplateProblem ?? "none")); use /v1/completions", param: "messages")
        }
        do {
            return tokenizer.encode(try chatTemplate.render(messages, addGenerationPrompt: true), addSpecialTokens: true)
        } catch {
            throw APIError("the chat template cannot render these messages: \(error)", param: "messages")
        }
    }

    // MARK: Responses

    private func guarded(_ request: Request, _ body: () throws -> Response) -> Response {
        if let refusal = unauthorized(request) { return refusal }
        do { return try body() } catch { return errorResponse(error) }
    }

    private func guardedAsync(_ request: Request, _ body: () async throws -> Response) async -> Response {
        if let refusal = unauthorized(request) { return refusal }
        do { return try await body() } catch { return errorResponse(error) }
    }

    private func unauthorized(_ request: Request) -> Response? {
        guard let key = configuration.apiKey else { return nil }
        if request.headers[.authorization] == "Bearer \(key)" { return nil }
        return errorResponse(APIError("missing or wrong API key: send 'Authorization: Bearer <key>'", status: .unauthorized,
                                      code: "invalid_api_key"))
    }

    private func errorResponse(_ error: any Error) -> Response {
        let api: APIError
        if let error = error as? APIError {
            api = error
        } else if let error = error as? HTTPResponseError {
            api = APIError("\(error)", status: error.status)
        } else {
            api = APIError("\(error)", status: .internalServerError, type: "server_error")
        }
        return json(api.status, ["error": ["message": api.message, "type": api.type, "param": api.param.map { $0 as Any } ?? NSNull(),
                                           "code": api.code.map { $0 as Any } ?? NSNull()]])
    }

    private func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: Self.encode(object))))
    }

    static func encode(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    private func created() -> Int { Int(Date().timeIntervalSince1970) }
}

/// True when JSONSerialization decoded the value from `true` or `false` (an NSNumber of type "c").
func isJSONBool(_ value: Any) -> Bool {
    if let number = value as? NSNumber { return String(cString: number.objCType) == "c" }
    return value is Bool
}

/// An integer that was not written as a boolean.
func jsonInt(_ value: Any) -> Int? {
    isJSONBool(value) ? nil : value as? Int
}

/// The parts of one response that every chunk repeats.
struct ResponseShape: Sendable {
    let id: String
    let created: Int
    let model: String
    let chat: Bool

    private var header: [String: Any] {
        ["id": id, "created": created, "model": model]
    }

    func complete(text: String, finish: FinishReason, promptTokens: Int, completionTokens: Int) -> [String: Any] {
        var object = header
        object["object"] = chat ? "chat.completion" : "text_completion"
        var choice: [String: Any] = ["index": 0, "finish_reason": finish.rawValue, "logprobs": NSNull()]
        if chat { choice["message"] = ["role": "assistant", "content": text] } else { choice["text"] = text }
        object["choices"] = [choice]
        object["usage"] = usage(promptTokens, completionTokens)
        return object
    }

    func chunk(role: Bool, text: String, finish: String?) -> [String: Any] {
        var object = header
        object["object"] = chat ? "chat.completion.chunk" : "text_completion"
        var choice: [String: Any] = ["index": 0, "finish_reason": finish.map { $0 as Any } ?? NSNull(), "logprobs": NSNull()]
        if chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if role || !text.isEmpty || finish == nil { delta["content"] = text }
            choice["delta"] = delta
        } else {
            choice["text"] = text
        }
        object["choices"] = [choice]
        return object
    }

    func usageChunk(promptTokens: Int, completionTokens: Int) -> [String: Any] {
        var object = header
        object["object"] = chat ? "chat.completion.chunk" : "text_completion"
        object["choices"] = [Any]()
        object["usage"] = usage(promptTokens, completionTokens)
        return object
    }

    private func usage(_ prompt: Int, _ completion: Int) -> [String: Any] {
        ["prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion]
    }
}

/// An error a client caused, in OpenAI's shape.
struct APIError: Error {
    var message: String
    var status: HTTPResponse.Status
    var type: String
    var param: String?
    var code: String?

    init(_ message: String, status: HTTPResponse.Status = .badRequest, type: String = "invalid_request_error",
         param: String? = nil, code: String? = nil) {
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code
    }
}
