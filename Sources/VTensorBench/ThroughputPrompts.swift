import Engine
import Runtime
import VTensor

/// SGLang's generated-shared-prefix workload: `groups` system prompts of `systemLength` tokens,
/// each followed by `perGroup` different questions of `questionLength` tokens; every request
/// generates `outputLength` tokens. Requests come in a shuffled order (groups interleaved).
struct SharedPrefixWorkload {
    var groups = 64, perGroup = 16, systemLength = 2048, questionLength = 128, outputLength = 256

    func requests(vocabulary: Range<Int>, seed: UInt64) -> [GenerationRequest] {
        var rng = SplitMix64(seed: seed &+ 7)
        let systems = (0..<groups).map { _ in (0..<systemLength).map { _ in Int.random(in: vocabulary, using: &rng) } }
        var requests = systems.flatMap { system in
            (0..<perGroup).map { _ in
                GenerationRequest(prompt: system + (0..<questionLength).map { _ in Int.random(in: vocabulary, using: &rng) },
                                  parameters: SamplingParameters(temperature: 0, maxTokens: outputLength, ignoreEOS: true))
            }
        }
        requests.shuffle(using: &rng)
        return requests
    }
}

/// Multi-turn chat: `conversations` conversations of `rounds` rounds; each round sends the whole
/// conversation so far plus a new user turn of `userLength` tokens and asks for `answerLength`
/// tokens. A conversation's next round is sent when its previous answer is complete, and at
/// most `maxInFlight` conversations are under way at once.
final class ConversationDriver {
    let conversations: Int, rounds: Int, userLength: Int, answerLength: Int, maxInFlight: Int
    /// Tokens of a system prompt every conversation starts with (0: none).
    let systemLength: Int
    private let vocabulary: Range<Int>
    private var rng: SplitMix64
    private var histories: [[Int]]
    private var nextRound: [Int]
    private var started = 0
    private var conversationOf: [RequestID: Int] = [:]
    /// The round (0-based) of every request sent.
    private(set) var roundOf: [RequestID: Int] = [:]
    private(set) var sent: [GenerationRequest] = []
    /// Told of every request sent, with its round (0-based).
    var onSend: ((RequestID, Int) -> Void)?

    init(conversations: Int, rounds: Int, userLength: Int, answerLength: Int, maxInFlight: Int, vocabulary: Range<Int>, seed: UInt64,
         systemLength: Int = 0) {
        self.conversations = conversations
        self.systemLength = systemLength
        self.rounds = rounds
        self.userLength = userLength
        self.answerLength = answerLength
        self.maxInFlight = maxInFlight
        self.vocabulary = vocabulary
        rng = SplitMix64(seed: seed &+ 11)
        var system = SplitMix64(seed: seed &+ 29)
        let prompt = (0..<systemLength).map { _ in Int.random(in: vocabulary, using: &system) }
        histories = Array(repeating: prompt, count: conversations)
        nextRound = Array(repeating: 0, count: conversations)
    }

    /// The longest sequence a round reaches.
    var longest: Int { systemLength + rounds * (userLength + answerLength) }

    /// Sends the first round of the first `maxInFlight` conversations.
    func start(_ engine: Engine) throws {
        while started < min(maxInFlight, conversations) { try send(started, engine); started += 1 }
    }

    /// A request finished with `answer`: its conversation's next round goes out, or, after its
    /// last round, the next conversation starts.
    func finished(_ id: RequestID, answer: [Int], engine: Engine) throws {
        guard let c = conversationOf.removeValue(forKey: id) else { return }
        histories[c] += answer
        if nextRound[c] < rounds {
            try send(c, engine)
        } else if started < conversations {
            try send(started, engine)
            started += 1
        }
    }

    private func send(_ c: Int, _ engine: Engine) throws {
        histories[c] += (0..<userLength).map { _ in Int.random(in: vocabulary, using: &rng) }
        let request = GenerationRequest(prompt: histories[c], parameters: SamplingParameters(temperature: 0, maxTokens: answerLength, ignoreEOS: true))
        let id = try engine.add(request)
        conversationOf[id] = c
        roundOf[id] = nextRound[c]
        onSend?(id, nextRound[c])
        nextRound[c] += 1
        sent.append(request)
    }
}
