import Engine
import Foundation
import Hummingbird
import Runtime
import Structured

extension OpenAIServer {
    /// Server-sent events in OpenAI's chunk format: (chat) a role chunk per choice, then each
    /// choice's text as it becomes final, tagged with its `index` and carrying its tokens'
    /// logprobs when asked for, a finish chunk per choice, the usage chunk when asked for, and
    /// `data: [DONE]`. A client that goes away aborts every choice still running.
    func streamingResponse(_ choices: ChoiceStream, request parsed: CompletionRequest, shape: ResponseShape,
                           log: CompletionLog, watch: Watch) -> Response {
        let format = LogprobFormat(tokenizer: tokenizer)
        let body = ResponseBody { writer in
            defer { watch.end() }
            func send(_ object: Any) async throws {
                try await writer.write(ByteBuffer(string: "data: " + Self.encode(object) + "\n\n"))
            }
            var states = Array(repeating: ChoiceState(), count: parsed.choiceCount)
            if let forced = parsed.forcedTool { for i in states.indices { states[i].forced = ForcedCallStreamer(forced) } }
            do {
                if shape.chat {
                    for index in 0..<parsed.choiceCount {
                        var chunk = shape.chunk(index: index, role: true, text: "")
                        if parsed.returnTokenIds { chunk["prompt_token_ids"] = parsed.prompts[0] }
                        try await send(chunk)
                    }
                }
                for await item in choices.outputs {
                    let index = item.choice, output = item.output
                    states[index].record(output)
                    var text = output.text
                    var entries = output.tokens.map { LogprobEntry(id: $0.id, score: $0) }
                    let firstChunk = !states[index].started
                    if !states[index].started {
                        // The choice's first chunk carries the echoed prompt (and its scores).
                        states[index].started = true
                        if let echoed = parsed.echoTexts?[index / parsed.n] { text = echoed + text }
                        let prompt = parsed.promptEntries(choice: index, scores: output.promptLogprobs)
                        if prompt.isEmpty { states[index].textOffset = parsed.offsetAfterEcho(choice: index) }
                        entries = prompt + entries
                    }
                    if let error = output.error {
                        try await send(["error": ["message": error, "type": "server_error", "param": NSNull(), "code": NSNull()]])
                    }
                    // Calls go out piece by piece as they are written, text around them as content.
                    var callDeltas: [ToolCallDelta] = []
                    // A forced call (tool_choice) and a tool-call parser never go together.
                    if states[index].forced != nil {
                        (text, callDeltas) = states[index].forced!.step(appending: output.text, final: output.isFinal)
                    } else {
                        switch parsed.toolCallFormat {
                        case .hermes?: (text, callDeltas) = states[index].hermes.step(appending: output.text, final: output.isFinal)
                        case .llama3JSON?: (text, callDeltas) = states[index].llama3.step(appending: output.text, final: output.isFinal)
                        case nil: break
                        }
                    }
                    let listsTokens = parsed.logprobs != nil && !entries.isEmpty
                    // Ids go out with the chunk that produced them, text or not (text held back
                    // for an unfinished character still has its ids).
                    let listsIds = parsed.returnTokenIds && (!output.tokens.isEmpty || (firstChunk && !parsed.chat))
                    guard output.isFinal || !text.isEmpty || listsTokens || listsIds || !callDeltas.isEmpty else { continue }
                    var logprobs: Any = NSNull()
                    if listsTokens {
                        logprobs = parsed.chat ? ["content": format.chat(output.tokens)] as Any
                            : format.completion(entries, offset: &states[index].textOffset)
                    }
                    var chunk = shape.chunk(index: index, text: text, logprobs: logprobs, finish: output.finish,
                                            toolCallDeltas: ToolCallDelta.merged(callDeltas), calledTools: states[index].calledTools)
                    if parsed.returnTokenIds, var choice = (chunk["choices"] as? [[String: Any]])?.first {
                        choice["token_ids"] = output.tokens.map(\.id)
                        if firstChunk && !parsed.chat { choice["prompt_token_ids"] = parsed.prompts[index / parsed.n] }
                        chunk["choices"] = [choice]
                    }
                    if parsed.continuousUsage {
                        chunk["usage"] = shape.usage(parsed.prompts[index / parsed.n].count, states[index].outputTokens)
                    }
                    try await send(chunk)
                }
                log.finished(states, promptTokens: parsed.promptTokenCount)
                if parsed.includeUsage {
                    try await send(shape.usageChunk(promptTokens: parsed.promptTokenCount,
                                                    completionTokens: states.reduce(0) { $0 + $1.outputTokens }))
                }
                try await writer.write(ByteBuffer(string: "data: [DONE]\n\n"))
                try await writer.finish(nil)
            } catch {
                // The client went away: the engine stops computing for it.
                if choices.abortAll() { log.clientWentAway(error) }
                throw error
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = "text/event-stream"
        headers[.cacheControl] = "no-cache"
        return Response(status: .ok, headers: headers, body: body)
    }
}
