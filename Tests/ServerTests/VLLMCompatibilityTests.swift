import Foundation
import Testing

/// vLLM's request fields and flags that vtensor takes as vLLM does: `priority` under
/// `--schedule-policy priority` (the order itself is checked in the engine's tests), and
/// `--gpu-memory-utilization`.
@Suite struct VLLMCompatibilityTests {
    @Test func aPriorityServerTakesThePriorityField() throws {
        let server = try ServerProcess(arguments: ["--served-model-name", "smol", "--schedule-policy", "priority"])
        for (path, body) in [("/v1/completions", #"{"prompt": "Hello", "max_tokens": 2, "priority": -3, "ignore_eos": true}"#),
                             ("/v1/chat/completions", #"{"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "priority": 7, "ignore_eos": true}"#)] {
            let answer = try server.post(path, body)
            #expect(answer.status == 200, "\(path): \(answer.body)")
            let usage = (try ServerProcess.object(answer.body))["usage"] as? [String: Any]
            #expect(usage?["completion_tokens"] as? Int == 2, "\(answer.body)")
        }
    }

    /// vLLM's `--gpu-memory-utilization` is the GPU's: on the CPU the engine says so and names
    /// the flag that applies, instead of guessing at a share of host memory.
    @Test func gpuMemoryUtilizationOnTheCPUIsRefusedByName() throws {
        let (output, status) = try ServerProcess.vtensor(["generate", "--backend", "cpu", "--gpu-memory-utilization", "0.5", "--max-tokens", "2", "Hi"])
        #expect(status != 0)
        #expect(output.contains("--gpu-memory-utilization") && output.contains("--kv-budget-mib"), "\(output)")
    }
}
