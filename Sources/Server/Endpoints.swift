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

    /// /v1/completions (`chat` false) and /v1/chat/completions: every choice is an engine
    /// request; the response is streamed as they produce, or sent whole once all have finished.
    func completions(_ request: Request, context: ServerRequestContext, chat: Bool) async throws -> Response {
        let log = CompletionLog()
        let (data, object) = try await jsonBody(request)
        let parsed = try completionRequest(object, body: data, chat: chat)
        try checkEngineSupport(parsed)
        let requests = (0..<parsed.choiceCount).map { parsed.engineRequest(choice: $0, maxSequenceLength: loop.engine.maxSequenceLength) }
        let choices: ChoiceStream
        do {
            choices = try ChoiceStream(loop: loop, requests: requests)
        } catch EngineError.invalidRequest(let message) {
            throw APIError(message, param: chat ? "messages" : "prompt")
        } catch EngineError.stopped {
            throw APIError("the server is shutting down", status: .serviceUnavailable, type: "server_error")
        }
        log.received(promptTokens: parsed.promptTokenCount, maxTokens: parsed.parameters.maxTokens,
                     choices: parsed.choiceCount, stream: parsed.stream)
        let watch = await context.abortWhenClientLeaves(choices, log: log)
        // vLLM's ids: "cmpl-" + the request id (the client's X-Request-Id when it sent one).
        let id = (chat ? "chatcmpl-" : "cmpl-") + context.id
        let shape = ResponseShape(id: id, created: created(), model: configuration.servedModelName, chat: chat)
        if parsed.stream { return streamingResponse(choices, request: parsed, shape: shape, log: log, watch: watch) }
        var states = Array(repeating: ChoiceState(), count: parsed.choiceCount)
        await withTaskCancellationHandler {
            for await item in choices.outputs { states[item.choice].record(item.output) }
        } onCancel: {
            if choices.abortAll() { log.clientWentAway() }
        }
        watch.end()
        log.finished(states, promptTokens: parsed.promptTokenCount)
        return json(.ok, try wholeResponse(states, request: parsed, shape: shape))
    }

    /// What the engine's model would refuse, said before anything is submitted.
    func checkEngineSupport(_ parsed: CompletionRequest) throws {
        let vocabulary = loop.engine.model.config.vocabSize
        if let id = parsed.parameters.logitBias.keys.sorted().first(where: { $0 >= vocabulary }) {
            throw APIError("'logit_bias' token id \(id) is outside the vocabulary (0..<\(vocabulary))", param: "logit_bias")
        }
    }
}
