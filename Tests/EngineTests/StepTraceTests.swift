import Runtime
import Testing
@testable import Engine

/// The engine keeps where its thread's time went for each step it queued, by step number.
@Suite struct StepTraceTests {
    @Test(arguments: [false, true])
    func everyQueuedStepHasItsTrace(queuesSteps: Bool) throws {
        let model = try FakeModel(context: 64, budgetChunks: 64, queuesSteps: queuesSteps)
        let engine = try Engine(model: model, tokenizer: nil, eosTokenIds: [], options: EngineOptions(maxNumSeqs: 3, maxNumBatchedTokens: 16))
        for k in 0..<5 {
            try engine.add(GenerationRequest(prompt: (0..<(10 + 7 * k)).map { 1 + ($0 * 7 + k) % 40 }, parameters: SamplingParameters(temperature: 0, maxTokens: 8)))
        }
        try engine.runUntilIdle()
        let steps = engine.statistics.steps
        #expect(steps > 10)
        for number in 1...steps {
            let trace = try #require(engine.stepTrace(number), "step \(number)")
            #expect(trace.step == number)
            let parts = [trace.beforePlanMs, trace.planMs, trace.queueMs, trace.collectMs]
            #expect(parts.allSatisfy { $0 >= 0 } && parts.reduce(0, +) <= trace.totalMs + 1e-6)
            #expect(trace.blockedMappingMs <= trace.queueMs + 1e-6 && trace.modelQueueMs <= trace.queueMs + 1e-6)
        }
        #expect(engine.stepTrace(0) == nil && engine.stepTrace(steps + 1) == nil)
    }
}
