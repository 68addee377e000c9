import Testing
@testable import Engine

/// The statistics keep the longest blocked mapping waits of a run, longest first, whichever
/// steps they came from and in whatever order steps merge.
@Suite struct MappingWaitTests {
    private func wait(step: Int, ms: Double) -> MappingWait {
        MappingWait(step: step, seconds: ms / 1000, rows: 1, promptTokens: 0, promptTokensInFlight: nil,
                    aheadUnfinished: false, ownChunks: 0, freeChunks: 0)
    }

    @Test func mergingStepsKeepsTheLongestWaitsLongestFirst() {
        var generator = SystemRandomNumberGenerator()
        let waits = (0..<40).map { wait(step: $0, ms: Double(Int.random(in: 1...30, using: &generator))) }
        var total = EngineStatistics()
        for w in waits.shuffled(using: &generator) {
            var step = EngineStatistics()
            step.longestMappingWaits = [w]
            total.merge(step)
        }
        let expected = waits.sorted { ($0.seconds, $1.step) > ($1.seconds, $0.step) }.prefix(MappingWait.kept)
        #expect(total.longestMappingWaits == Array(expected))
        #expect(total.longestMappingWaits.count == MappingWait.kept)
        // Among equal waits the earlier step comes first.
        let tied = MappingWait.longest([wait(step: 9, ms: 5)], [wait(step: 3, ms: 5), wait(step: 7, ms: 6)])
        #expect(tied.map(\.step) == [7, 3, 9])
    }
}
