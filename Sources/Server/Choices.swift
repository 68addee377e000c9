import Engine
import Foundation
import Runtime
import Structured

/// What one choice's engine request has produced so far.
struct ChoiceState {
    var text = ""
    var tokens: [SampledToken] = []
    var promptScores: [SampledToken?]?
    var finish: FinishReason?
    var error: String?
    var outputTokens = 0
    /// Streaming: whether the choice's first chunk (with the echo) went out.
    var started = false
    /// Streaming: where the next token's text starts, for the completions logprobs' `text_offset`.
    var textOffset = 0
    /// Streaming under a tool-call parser: calls go out piece by piece as they are written.
    var hermes = HermesCallStreamer()
    var llama3 = Llama3CallStreamer()
    /// Streaming a forced call (`tool_choice` "required" or named).
    var forced: ForcedCallStreamer?
    var calledTools: Bool { hermes.callCount + llama3.callCount + (forced?.callCount ?? 0) > 0 }

    mutating func record(_ output: RequestOutput) {
        text += output.text
        tokens += output.tokens
        if let scores = output.promptLogprobs { promptScores = scores }
        outputTokens = output.outputTokens
        if let finish = output.finish { self.finish = finish }
        if let error = output.error { self.error = error }
    }
}

extension CompletionRequest {
    /// The logprobs entries `echo` puts first: each prompt token with its score (when the engine
    /// scored the prompt).
    func promptEntries(choice: Int, scores: [SampledToken?]?) -> [LogprobEntry] {
        guard echo, let scores else { return [] }
        return zip(prompts[choice / n], scores).map { LogprobEntry(id: $0, score: $1) }
    }

    /// Where the generated tokens' `text_offset` starts when the prompt's tokens are not listed:
    /// after the echoed text, or at 0.
    func offsetAfterEcho(choice: Int) -> Int {
        echoTexts.map { $0[choice / n].unicodeScalars.count } ?? 0
    }

    var promptTokenCount: Int { prompts.reduce(0) { $0 + $1.count } }
}

extension OpenAIServer {
    /// The `choices` and usage of a whole response, in choice order.
    func wholeResponse(_ states: [ChoiceState], request parsed: CompletionRequest, shape: ResponseShape) throws -> [String: Any] {
        let format = LogprobFormat(tokenizer: tokenizer)
        var choices: [[String: Any]] = []
        for (index, state) in states.enumerated() {
            if let error = state.error { throw APIError(error, status: .internalServerError, type: "server_error") }
            guard let finish = state.finish else {
                throw APIError("choice \(index) ended without a result", status: .internalServerError, type: "server_error")
            }
            var logprobs: Any = NSNull()
            if parsed.logprobs != nil {
                if parsed.chat {
                    logprobs = ["content": format.chat(state.tokens)]
                } else {
                    let prompt = parsed.promptEntries(choice: index, scores: state.promptScores)
                    var offset = prompt.isEmpty ? parsed.offsetAfterEcho(choice: index) : 0
                    logprobs = format.completion(prompt + state.tokens.map { LogprobEntry(id: $0.id, score: $0) }, offset: &offset)
                }
            }
            let echoed = parsed.echoTexts?[index / parsed.n] ?? ""
            let calls = parsed.forcedTool.map { $0.calls(in: state.text) } ?? parsed.toolCallFormat.flatMap { $0.parse(state.text) }
            var choice = shape.choice(index: index, text: echoed + state.text, logprobs: logprobs, finish: finish, toolCalls: calls)
            if parsed.returnTokenIds {
                choice["token_ids"] = state.tokens.map(\.id)
                // Completions list each choice's prompt; chat's one prompt goes on the response (vLLM's places).
                if !parsed.chat { choice["prompt_token_ids"] = parsed.prompts[index / parsed.n] }
            }
            choices.append(choice)
        }
        var response = shape.complete(choices: choices, promptTokens: parsed.promptTokenCount,
                                      completionTokens: states.reduce(0) { $0 + $1.outputTokens })
        if parsed.returnTokenIds && parsed.chat { response["prompt_token_ids"] = parsed.prompts[0] }
        return response
    }
}
