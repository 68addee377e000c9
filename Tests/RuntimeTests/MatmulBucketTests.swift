import Testing
@testable import Runtime

/// The token counts cuBLASLt products run at (`GPUModel.matmulTokens`), all of them set up
/// when the model is built: every count a step can ask for must land on a listed bucket.
@Suite struct MatmulBucketTests {
    @Test func everyTokenCountLandsOnAListedBucketThatHoldsIt() {
        for capacity in [17, 100, 256, 300, 1000, 4096, 8192, 8000, 20000] {
            let list = GPUModel.matmulBucketList(from: 17, capacity: capacity)
            #expect(list == list.sorted() && Set(list).count == list.count, "capacity \(capacity): \(list)")
            #expect(list.last == capacity, "the capacity is a bucket: \(capacity)")
            let listed = Set(list)
            for tokens in 17...capacity {
                let bucket = GPUModel.matmulTokens(tokens, capacity: capacity)
                #expect(bucket >= tokens && bucket <= capacity, "\(tokens) of \(capacity) -> \(bucket)")
                #expect(listed.contains(bucket), "\(tokens) of \(capacity) -> \(bucket), not set up")
                // The smallest listed bucket that holds the count: no smaller one would do.
                #expect(!list.contains { $0 >= tokens && $0 < bucket }, "\(tokens) of \(capacity) -> \(bucket)")
            }
        }
    }

    @Test func paddingStaysSmallAndTheListShort() {
        for tokens in 17...8192 {
            let padding = GPUModel.matmulTokens(tokens, capacity: 8192) - tokens
            // At most 15 rows up to 256, then under a quarter of the rows.
            #expect(tokens <= 256 ? padding <= 15 : padding * 4 < tokens, "\(tokens) -> +\(padding)")
        }
        #expect(GPUModel.matmulBucketList(from: 17, capacity: 8192).count == 67)
        // A count past the buffers' rows is the caller's error, not rounded down below it.
        #expect(GPUModel.matmulTokens(300, capacity: 200) == 300)
    }
}
