import Foundation
import Support
import Testing

@Suite struct ProcessorsTests {
    /// At least one, and never more than the host has online (the affinity mask and the
    /// cgroup quota only take away).
    @Test func withinTheHost() {
        #expect(Processors.available >= 1)
        #expect(Processors.available <= ProcessInfo.processInfo.activeProcessorCount)
    }
}
