import Foundation
import Testing

/// `--schedule-policy priority`: the server takes vLLM's `priority` field on both endpoints and
/// the engine schedules by it (the order itself is checked in the engine's tests).
@Suite struct PriorityTests {
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
}
