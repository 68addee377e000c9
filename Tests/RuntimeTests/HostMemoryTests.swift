import Foundation
import Models
import Runtime
import Support
import Testing

/// A model that cannot fit in host memory is refused before anything is allocated, with the
/// numbers; the estimate is exactly what building the weights allocates.
@Suite struct HostMemoryTests {
    static func config(_ extra: String) throws -> ModelConfig {
        let json = """
            {"model_type":"llama","hidden_size":64,"intermediate_size":96,"num_hidden_layers":3,"num_attention_heads":4,
             "num_key_value_heads":2,"vocab_size":100,"max_position_embeddings":64,"rms_norm_eps":1e-5\(extra)}
            """
        return try ModelConfig.decode(Data(json.utf8))
    }

    @Test(arguments: ["", ",\"tie_word_embeddings\":true", ",\"attention_bias\":true,\"mlp_bias\":true"])
    func estimateMatchesTheWeights(_ extra: String) throws {
        let config = try Self.config(extra)
        #expect(ModelWeights.parameterCount(config: config) == ModelWeights.dummy(config: config).parameterCount)
    }

    @Test func presetsTooBigForThisHostAreRefused() throws {
        let available = try #require(HostMemory.available())
        #expect(available.bytes > 0)
        let llama = try #require(ModelPresets.config(named: "llama-3-8b"))
        let bytes = ModelWeights.parameterCount(config: llama) * 4
        if Double(bytes) > Double(available.bytes) * 0.9 {
            #expect(throws: RuntimeError.self) { try LoadedModel.open("llama-3-8b", format: .dummy) }
        } else {
            // A host this large can hold it: the check must let it through.
            #expect(throws: Never.self) { try ModelWeights.checkFitsInHostMemory(config: llama, label: "llama-3-8b") }
        }
        let small = try Self.config("")
        #expect(throws: Never.self) { try ModelWeights.checkFitsInHostMemory(config: small, label: "tiny") }
    }
}
