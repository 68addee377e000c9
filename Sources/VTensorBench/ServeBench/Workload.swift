import Tokenizers
import VTensor

/// A unit of work of a serving run: one request, or a conversation whose rounds go out one
/// after another (each after the answer to the one before).
enum WorkUnit: Sendable {
    case single(BenchRequest)
    case conversation(Conversation)

    var requestCount: Int {
        switch self {
        case .single: 1
        case .conversation(let c): c.turns.count
        }
    }
}

/// What a run sends, and how it was made (for the report).
struct Workload: Sendable {
    var units: [WorkUnit]
    /// e.g. "random: 1000 prompts, input 1024 tokens (range ratio 0), output 128".
    var summary: String
    /// How prompts go over the wire and whether their lengths are exact.
    var promptNote: String

    var requestCount: Int { units.reduce(0) { $0 + $1.requestCount } }
}

/// A multi-turn conversation: each round resends the conversation so far (user turns and the
/// server's answers) plus a new user turn, and asks for `answerTokens` tokens.
struct Conversation: Sendable {
    var turns: [PromptPiece]
    var answerTokens: Int

    /// An answer that has come back: its text, its length in tokens as counted, and its ids when
    /// the server sent them.
    struct Answer: Sendable { var text: String; var tokens: Int; var ids: [Int]? = nil }

    /// The request of round `answers.count` (0-based), after the answers to the rounds before.
    /// Token-id form: the ids of the turns with each answer's ids between them (asked for with
    /// `return_token_ids`: re-encoding an answer's text often gives other ids, which no prefix
    /// cache holds; a server that does not send them gets the text encoded); text form: the
    /// texts concatenated; chat: alternating user and assistant messages.
    func request(after answers: [Answer], form: PromptForm, tokenizer: Tokenizer?) -> BenchRequest {
        let round = answers.count
        let answered = answers.reduce(0) { $0 + $1.tokens }
        let asked = turns[0...round].reduce(0) { $0 + $1.count }
        switch form {
        case .tokenIds:
            var ids: [Int] = []
            for r in 0..<round {
                ids += turns[r].tokens
                ids += answers[r].ids ?? tokenizer?.encode(answers[r].text, addSpecialTokens: false) ?? []
            }
            ids += turns[round].tokens
            return BenchRequest(prompt: .tokens(ids), promptTokens: ids.count, maxTokens: answerTokens, returnTokenIds: true)
        case .text:
            var text = ""
            for r in 0..<round { text += turns[r].text + answers[r].text }
            text += turns[round].text
            return BenchRequest(prompt: .text(text), promptTokens: asked + answered, maxTokens: answerTokens)
        case .chat:
            var messages: [BenchMessage] = []
            for r in 0..<round {
                messages.append(BenchMessage(role: "user", content: turns[r].text))
                messages.append(BenchMessage(role: "assistant", content: answers[r].text))
            }
            messages.append(BenchMessage(role: "user", content: turns[round].text))
            return BenchRequest(prompt: .messages(messages), promptTokens: asked + answered, maxTokens: answerTokens)
        }
    }
}

extension Workload {
    /// vLLM's `random`: input lengths uniform over [floor(L(1-r)), ceil(L(1+r))] and output
    /// lengths over [max(1, floor(O(1-r))), max(1, ceil(O(1+r)))] with r = `rangeRatio` in [0, 1),
    /// or `outputRangeRatio` for the outputs when given (so 128-1024 in and 128-512 out is one run).
    /// Text prompts leave room for the BOS the server adds, as vLLM does.
    static func random(count: Int, inputLength: Int, outputLength: Int, rangeRatio: Double, outputRangeRatio: Double? = nil,
                       maker: inout PromptMaker, seed: UInt64) -> Workload {
        let input = randomRange(inputLength - maker.specialsAddedByServer, ratio: rangeRatio, atLeast: 1)
        let output = randomRange(outputLength, ratio: outputRangeRatio ?? rangeRatio, atLeast: 1)
        var rng = SplitMix64(seed: seed)
        let units = (0..<count).map { _ -> WorkUnit in
            let piece = maker.piece(tokens: Int.random(in: input, using: &rng))
            let out = Int.random(in: output, using: &rng)
            return .single(BenchRequest(prompt: piece.prompt(maker.form), promptTokens: piece.count + maker.specialsAddedByServer, maxTokens: out))
        }
        let ranges = rangeRatio == 0 && (outputRangeRatio ?? 0) == 0 ? "input \(inputLength), output \(outputLength) tokens"
            : "input \(input.lowerBound)-\(input.upperBound), output \(output.lowerBound)-\(output.upperBound) tokens"
        return Workload(units: units, summary: "random: \(count) prompts, \(ranges)", promptNote: maker.note)
    }

    static func randomRange(_ length: Int, ratio: Double, atLeast minimum: Int) -> ClosedRange<Int> {
        let low = max(minimum, Int((Double(length) * (1 - ratio)).rounded(.down)))
        let high = max(low, Int((Double(length) * (1 + ratio)).rounded(.up)))
        return low...high
    }

    /// SGLang's generated shared prefix (the shape of `bench throughput --dataset shared-prefix`):
    /// `groups` system prompts, each followed by `perGroup` questions; shuffled.
    static func sharedPrefix(_ shape: SharedPrefixWorkload, maker: inout PromptMaker, seed: UInt64) -> Workload {
        var units: [WorkUnit] = []
        for _ in 0..<shape.groups {
            let system = maker.piece(tokens: shape.systemLength)
            for _ in 0..<shape.perGroup {
                let question = maker.piece(tokens: shape.questionLength)
                let prompt: BenchPrompt = switch maker.form {
                case .tokenIds: .tokens(system.tokens + question.tokens)
                case .text: .text(system.text + question.text)
                case .chat: .messages([BenchMessage(role: "system", content: system.text), BenchMessage(role: "user", content: question.text)])
                }
                units.append(.single(BenchRequest(prompt: prompt, promptTokens: system.count + question.count, maxTokens: shape.outputLength)))
            }
        }
        var rng = SplitMix64(seed: seed &+ 7)
        units.shuffle(using: &rng)
        return Workload(units: units, summary: "shared-prefix: \(shape.groups) groups of \(shape.perGroup) prompts, system \(shape.systemLength) "
                        + "+ question \(shape.questionLength) tokens, output \(shape.outputLength)", promptNote: maker.note)
    }

    /// Issue 12's multi-turn chat: `conversations` of `rounds` rounds, user turns of
    /// `userLength` tokens, answers of `answerLength`.
    static func multiTurn(conversations: Int, rounds: Int, userLength: Int, answerLength: Int, maker: inout PromptMaker) -> Workload {
        let units = (0..<conversations).map { _ in
            WorkUnit.conversation(Conversation(turns: (0..<rounds).map { _ in maker.piece(tokens: userLength) }, answerTokens: answerLength))
        }
        return Workload(units: units, summary: "multi-turn: \(conversations) conversations of \(rounds) rounds, user turns \(userLength) tokens, "
                        + "answers \(answerLength)", promptNote: maker.note)
    }
}

extension PromptPiece {
    func prompt(_ form: PromptForm) -> BenchPrompt {
        form == .tokenIds ? .tokens(tokens) : .text(text)
    }
}

extension PromptMaker {
    /// How prompts go over the wire, for the report.
    var note: String {
        switch (form, tokenizer != nil) {
        case (.tokenIds, _): "token ids (exact lengths, client-side tokenizer)"
        case (_, true): "text of random words, cut to exact lengths with the client-side tokenizer"
        case (_, false): "text of random words (no tokenizer: lengths approximate, a word is about one token)"
        }
    }
}
