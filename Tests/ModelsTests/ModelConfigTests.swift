#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Testing
@testable import Models

func decodeConfig(_ json: String) throws -> ModelConfig {
    try ModelConfig.decode(Data(json.utf8), path: "/m/config.json")
}

func configError(_ json: String) -> String? {
    do { _ = try decodeConfig(json); return nil } catch let e as ModelFileError {
        #expect(e.path == "/m/config.json")
        return e.problem
    } catch { Issue.record("unexpected \(error)"); return nil }
}

let llama31 = """
{"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
 "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-05,
 "vocab_size":128256,"max_position_embeddings":131072,"tie_word_embeddings":false,"torch_dtype":"bfloat16",
 "bos_token_id":128000,"eos_token_id":[128001,128009],"attention_bias":false,"mlp_bias":false,
 "rope_theta":500000.0,
 "rope_scaling":{"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}
"""

let llama3Scaling = RoPEConfig.Scaling.llama3(factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192)

@Test func llama31WithRopeScaling() throws {
    let c = try decodeConfig(llama31)
    #expect(c.architectures == ["LlamaForCausalLM"] && c.modelType == "llama")
    #expect(c.hiddenSize == 4096 && c.intermediateSize == 14336 && c.numHiddenLayers == 32)
    #expect(c.numAttentionHeads == 32 && c.numKeyValueHeads == 8 && c.headDim == 128)
    #expect(c.rmsNormEps == 1e-5 && c.vocabSize == 128256 && c.maxPositionEmbeddings == 131072)
    #expect(!c.tieWordEmbeddings && c.dtype == "bfloat16" && c.bosTokenId == 128000)
    #expect(c.eosTokenIds == [128001, 128009])
    #expect(!c.attentionBias && !c.attentionOutputBias && c.effectiveSlidingWindow == nil)
    #expect(c.rope == RoPEConfig(theta: 500000, scaling: llama3Scaling))
}

@Test func transformers5RopeParametersMatchOldStyle() throws {
    let json = """
    {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":4096,"intermediate_size":14336,
     "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-05,
     "vocab_size":128256,"max_position_embeddings":131072,"dtype":"bfloat16",
     "bos_token_id":128000,"eos_token_id":[128001,128009],
     "rope_parameters":{"rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3"}}
    """
    let c = try decodeConfig(json)
    #expect(c.rope == (try decodeConfig(llama31)).rope)
    #expect(c.dtype == "bfloat16")
    let plain = try decodeConfig(json.replacing(#""factor":8.0,"low_freq_factor":1.0,"high_freq_factor":4.0,"original_max_position_embeddings":8192,"rope_type":"llama3""#, with: #""rope_type":"default""#))
    #expect(plain.rope == RoPEConfig(theta: 500000, scaling: .none))
}

@Test func qwen2IgnoresDisabledWindowAndHasBiases() throws {
    let c = try decodeConfig("""
    {"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","hidden_size":896,"intermediate_size":4864,
     "num_hidden_layers":24,"num_attention_heads":14,"num_key_value_heads":2,"rms_norm_eps":1e-06,
     "vocab_size":151936,"max_position_embeddings":32768,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
     "bos_token_id":151643,"eos_token_id":151645,"rope_theta":1000000.0,"rope_scaling":null,
     "sliding_window":4096,"use_sliding_window":false,"max_window_layers":21}
    """)
    #expect(c.slidingWindow == 4096 && c.useSlidingWindow == false && c.effectiveSlidingWindow == nil)
    #expect(c.attentionBias && !c.attentionOutputBias)
    #expect(c.headDim == 64 && c.eosTokenIds == [151645] && c.tieWordEmbeddings)
    #expect(c.rope == RoPEConfig(theta: 1_000_000, scaling: .none))
}

@Test func mistralUsesSlidingWindow() throws {
    let c = try decodeConfig("""
    {"architectures":["MistralForCausalLM"],"model_type":"mistral","hidden_size":4096,"intermediate_size":14336,
     "num_hidden_layers":32,"num_attention_heads":32,"num_key_value_heads":8,"rms_norm_eps":1e-05,
     "vocab_size":32000,"max_position_embeddings":32768,"rope_theta":10000.0,"sliding_window":4096,
     "bos_token_id":1,"eos_token_id":2}
    """)
    #expect(c.effectiveSlidingWindow == 4096 && c.useSlidingWindow == nil)
    #expect(!c.attentionBias && c.eosTokenIds == [2])
}

@Test func smolLM2TiedWithoutHeadDim() throws {
    let c = try decodeConfig("""
    {"architectures":["LlamaForCausalLM"],"model_type":"llama","hidden_size":576,"intermediate_size":1536,
     "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-05,
     "vocab_size":49152,"max_position_embeddings":8192,"tie_word_embeddings":true,"rope_theta":100000,
     "rope_scaling":null,"bos_token_id":1,"eos_token_id":2}
    """)
    #expect(c.tieWordEmbeddings && c.headDim == 64 && c.numKeyValueHeads == 3)
    #expect(c.rope == RoPEConfig(theta: 100000, scaling: .none))
}

@Test func defaultsWhenKeysAbsent() throws {
    let c = try decodeConfig(#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}"#)
    #expect(c.numKeyValueHeads == 4 && c.headDim == 16 && !c.tieWordEmbeddings && c.eosTokenIds == [] && c.bosTokenId == nil)
    #expect(c.rope == RoPEConfig(theta: 10000, scaling: .none) && c.architectures == [])
}

@Test func linearRopeScaling() throws {
    let c = try decodeConfig(#"{"model_type":"llama","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100,"rope_scaling":{"type":"linear","factor":2.0}}"#)
    #expect(c.rope.scaling == .linear(factor: 2))
}

@Test func configErrorsAreNamed() {
    let base = #""hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":100"#
    #expect(configError(#"{"architectures":["GPT2LMHeadModel"],"model_type":"gpt2",\#(base),"num_attention_heads":4}"#)?
        .contains("unsupported architecture GPT2LMHeadModel (supported: LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM)") == true)
    #expect(configError(#"{"model_type":"gpt2",\#(base),"num_attention_heads":4}"#)?.contains("unsupported model_type gpt2") == true)
    #expect(configError(#"{"model_type":"llama","hidden_size":640,"intermediate_size":128,"num_hidden_layers":2,"vocab_size":100,"num_attention_heads":10,"num_key_value_heads":3}"#)?
        .contains("num_attention_heads 10 is not divisible by num_key_value_heads 3") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":4,"rope_scaling":{"rope_type":"dynamic","factor":2.0}}"#)?
        .contains("unsupported rope type dynamic") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":4,"rope_parameters":{"rope_type":"yarn","factor":4.0}}"#)?
        .contains("unsupported rope type yarn in rope_parameters") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":4,"rope_scaling":{"rope_type":"llama3","factor":8.0}}"#)?
        .contains("missing low_freq_factor") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":0}"#)?.contains("num_attention_heads must be positive") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":4,"num_key_value_heads":-2}"#)?.contains("num_key_value_heads must be positive") == true)
    #expect(configError(#"{"model_type":"llama","hidden_size":64,"num_hidden_layers":2,"vocab_size":100,"num_attention_heads":4}"#)?.contains("missing key 'intermediate_size'") == true)
    #expect(configError(#"{"model_type":"llama",\#(base),"num_attention_heads":"4"}"#)?.contains("wrong type at 'num_attention_heads'") == true)
    #expect(configError("[]")?.contains("not a JSON object") == true)
}

@Test func loadReadsFile() throws {
    let path = stTempDir() + "/config.json"
    stWrite(Array(llama31.utf8), to: path)
    #expect(try ModelConfig.load(path: path).numKeyValueHeads == 8)
    #expect(throws: ModelFileError.self) { try ModelConfig.load(path: path + ".missing") }
}
