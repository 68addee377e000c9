import Engine
import Foundation
import Hummingbird
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
