import Engine
import Foundation
import Hummingbird
import Logging
import Runtime
import Tokenizers

extension OpenAIServer {
    // MARK: Responses

    func unauthorized(_ request: Request) -> Response? {
        guard let key = configuration.apiKey else { return nil }
        if request.headers[.authorization] == "Bearer \(key)" { return nil }
        return errorResponse(APIError("missing or wrong API key: send 'Authorization: Bearer <key>'", status: .unauthorized,
                                      code: "invalid_api_key"))
    }

    func errorResponse(_ error: any Error) -> Response {
        let api: APIError
        if let error = error as? APIError {
            api = error
        } else if let error = error as? HTTPResponseError {
            api = APIError("\(error)", status: error.status)
        } else {
            api = APIError("\(error)", status: .internalServerError, type: "server_error")
        }
        // Logger.current: the request's logger (RequestLoggingMiddleware), so the line carries its id.
        Logger.current.log(level: api.status.code >= 500 ? .error : .info, "error: \(api.status.code) \(api.type): \(api.message)")
        return json(api.status, ["error": ["message": api.message, "type": api.type, "param": api.param.map { $0 as Any } ?? NSNull(),
                                           "code": api.code.map { $0 as Any } ?? NSNull()]])
    }

    func json(_ status: HTTPResponse.Status, _ object: Any) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: Self.encode(object))))
    }

    static func encode(_ object: Any) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("{}".utf8)
        return String(decoding: data, as: UTF8.self)
    }

    func created() -> Int { Int(Date().timeIntervalSince1970) }
}

/// The parts of one response that every chunk repeats, and the response's JSON objects.
struct ResponseShape: Sendable {
    let id: String
    let created: Int
    let model: String
    let chat: Bool

    private func object(chunk: Bool) -> [String: Any] {
        ["id": id, "created": created, "model": model,
         "object": chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"]
    }

    /// A whole (non-streamed) response.
    func complete(choices: [[String: Any]], promptTokens: Int, completionTokens: Int) -> [String: Any] {
        var object = object(chunk: false)
        object["choices"] = choices
        object["usage"] = usage(promptTokens, completionTokens)
        return object
    }

    /// One choice of a whole response; `logprobs` is NSNull when none were asked for. A chat
    /// answer with tool calls has them, its other text as content (null when none), and
    /// finish_reason "tool_calls".
    func choice(index: Int, text: String, logprobs: Any, finish: FinishReason, toolCalls: ParsedToolCalls? = nil) -> [String: Any] {
        var choice: [String: Any] = ["index": index, "finish_reason": finish.rawValue, "logprobs": logprobs]
        if chat {
            var message: [String: Any] = ["role": "assistant", "content": text]
            if let toolCalls {
                message["content"] = toolCalls.content.map { $0 as Any } ?? NSNull()
                message["tool_calls"] = ToolCall.objects(toolCalls.calls)
                choice["finish_reason"] = "tool_calls"
            }
            choice["message"] = message
        } else {
            choice["text"] = text
        }
        return choice
    }

    /// A streamed chunk of one choice: chat's first chunk of a choice carries the role.
    /// - Parameters:
    ///   - toolCallDeltas: pieces of tool calls, streamed as they are written.
    ///   - calledTools: the choice made calls: its finish chunk says "tool_calls".
    func chunk(index: Int, role: Bool = false, text: String, logprobs: Any = NSNull(), finish: FinishReason? = nil,
               toolCallDeltas: [ToolCallDelta] = [], calledTools: Bool = false) -> [String: Any] {
        var object = object(chunk: true)
        var choice: [String: Any] = ["index": index, "finish_reason": finish.map { $0.rawValue as Any } ?? NSNull(), "logprobs": logprobs]
        if chat {
            var delta: [String: Any] = [:]
            if role { delta["role"] = "assistant" }
            if role || !text.isEmpty || (finish == nil && toolCallDeltas.isEmpty) { delta["content"] = text }
            if !toolCallDeltas.isEmpty { delta["tool_calls"] = toolCallDeltas.map(\.object) }
            if calledTools && finish != nil { choice["finish_reason"] = "tool_calls" }
            choice["delta"] = delta
        } else {
            choice["text"] = text
        }
        object["choices"] = [choice]
        return object
    }

    /// The last chunk before `[DONE]` when the client asked for usage (`stream_options.include_usage`).
    func usageChunk(promptTokens: Int, completionTokens: Int) -> [String: Any] {
        var object = object(chunk: true)
        object["choices"] = [Any]()
        object["usage"] = usage(promptTokens, completionTokens)
        return object
    }

    func usage(_ prompt: Int, _ completion: Int) -> [String: Any] {
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
