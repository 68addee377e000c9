import Engine
import Foundation
import Hummingbird
import Runtime
import Tokenizers

extension OpenAIServer {
    // MARK: Handlers

    func models() -> Response {
        json(.ok, [
            "object": "list",
            "data": [["id": configuration.servedModelName, "object": "model", "created": created(), "owned_by": "vtensor",
                      "max_model_len": loop.engine.maxSequenceLength]],
        ])
    }

    /// /v1/completions (`chat` false) and /v1/chat/completions.
    func completions(_ request: Request, context: some RequestContext, chat: Bool) async throws -> Response {
        let (data, object) = try await jsonBody(request)
        try checkModel(object)
        try checkIntegerFields(object, ["max_tokens", "max_completion_tokens", "n", "seed", "top_k", "logprobs", "top_logprobs", "stop_token_ids"])
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
        let completionTokensGiven = chat && Self.isGiven(object, "max_completion_tokens")
        try checkContext(promptTokens: prompt.count, maxTokens: parameters.maxTokens, promptField: chat ? "messages" : "prompt",
                         maxTokensField: completionTokensGiven ? "max_completion_tokens" : "max_tokens")
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

    func streamingResponse(_ submitted: (id: Int, outputs: AsyncStream<RequestOutput>), shape: ResponseShape,
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

}
