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

/// The one-line report of an autotune at load (`GPUModel.autotuneSummary`).
@Suite struct AutotuneSummaryTests {
    @Test func reportsTheLayerAt128RowsWithTheSwitchedTimes() throws {
        func product(_ name: String, _ tokens: Int, _ before: Double, _ after: Double, _ switched: Bool) -> GPUModel.AutotunedProduct {
            GPUModel.AutotunedProduct(name: name, tokens: tokens, heuristicMicroseconds: before, bestMicroseconds: after, candidates: 8,
                                      switched: switched)
        }
        #expect(GPUModel.autotuneSummary([]) == nil)
        let line = try #require(GPUModel.autotuneSummary([
            product("qkv", 112, 30, 20, true), product("qkv", 128, 26, 17, true), product("o proj", 128, 20, 19.9, false),
            product("qkv", 144, 28, 20, true),
        ]))
        // 128 rows: qkv switched (26 -> 17), o proj kept (20): 46 -> 37.
        #expect(line.hasPrefix("4 products timed, 3 switched; at 128 rows"), "\(line)")
        #expect(line.contains("46.0 -> 37.0 us") && line.contains("qkv 26.0 -> 17.0") && line.contains("o proj 20.0 -> 20.0"), "\(line)")
        // Without a bucket up to 128 rows, the smallest bucket is reported.
        let small = try #require(GPUModel.autotuneSummary([product("down", 256, 40, 30, true), product("down", 512, 70, 69, false)]))
        #expect(small.contains("at 256 rows") && small.contains("40.0 -> 30.0"), "\(small)")
    }
}
