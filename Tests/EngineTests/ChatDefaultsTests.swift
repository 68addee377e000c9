import Runtime
import Testing
@testable import Engine

/// The embedded model's chat defaults: its GGUF has no generation_config.json, so its sampling
/// defaults come from the known table. (Five chats with them are checked for loops in
/// `FirstChatTests`.)
@Suite struct ChatDefaultsTests {
    @Test func knownModelsOnly() {
        let smol = KnownGenerationDefaults.entry(forModelNamed: "SmolLM2 135M Instruct")
        #expect(smol?.config.temperature == 0.2)
        #expect(smol?.config.topP == 0.9)
        #expect(smol?.config.repetitionPenalty == 1.1)
        #expect(KnownGenerationDefaults.entry(forModelNamed: "SmolLM2-135M") == nil, "a base model keeps greedy")
        #expect(KnownGenerationDefaults.entry(forModelNamed: "Meta-Llama-3-8B-Instruct") == nil)
    }

    /// The embedded model's file carries no sampling settings; its name finds the table's.
    @Test func embeddedModelTakesItsKnownDefaults() throws {
        let (config, source) = try smolLM2().generationDefaults()
        #expect(source != nil)
        #expect(config.temperature == 0.2 && config.topP == 0.9 && config.repetitionPenalty == 1.1)
    }
}
