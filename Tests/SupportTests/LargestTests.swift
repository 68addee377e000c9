import Testing
import Support

@Suite struct LargestTests {
    @Test func keepsTheLargestFirstUpToTheLimit() {
        var kept: [Int] = []
        for value in [5, 1, 9, 3, 9, 7, 2] { kept = kept.keepingLargest([value], limit: 3, by: >) }
        #expect(kept == [9, 9, 7])
        #expect([4, 2].keepingLargest([8, 6], limit: 10, by: >) == [8, 6, 4, 2])
        #expect([Int]().keepingLargest([], limit: 3, by: >).isEmpty)
    }
}
