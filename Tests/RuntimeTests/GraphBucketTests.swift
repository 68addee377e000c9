import Testing
@testable import Runtime

/// The padded batch sizes decode steps replay CUDA graphs at.
@Suite struct GraphBucketTests {
    @Test func everyBatchSizeGetsTheSmallestBucketThatHoldsIt() {
        for cap in [1, 3, 16, 48, 64, 100, 256, 512] {
            var buckets: Set<Int> = []
            for rows in 1...cap {
                let bucket = try! #require(GPUModel.graphBucket(rows: rows, cap: cap))
                #expect(bucket >= rows && bucket <= cap, "rows \(rows) cap \(cap) -> \(bucket)")
                buckets.insert(bucket)
            }
            // Each bucket is the smallest holding every size that maps to it: no size maps past
            // a smaller bucket that would hold it.
            for rows in 1...cap {
                let bucket = GPUModel.graphBucket(rows: rows, cap: cap)!
                #expect(!buckets.contains { $0 >= rows && $0 < bucket }, "rows \(rows) cap \(cap) -> \(bucket)")
            }
            #expect(GPUModel.graphBucket(rows: cap + 1, cap: cap) == nil && GPUModel.graphBucket(rows: 0, cap: cap) == nil)
        }
        // The fused kernels' sizes stay within 16; padding adds at most 3 rows up to 16, 7 up to 64, 15 above.
        for rows in 1...256 {
            let padding = GPUModel.graphBucket(rows: rows, cap: 256)! - rows
            let limit = rows <= 4 ? 0 : rows <= 16 ? 3 : rows <= 64 ? 7 : 15
            #expect(padding <= limit, "rows \(rows): \(padding) padded")
        }
        let distinct = Set((1...256).map { GPUModel.graphBucket(rows: $0, cap: 256)! })
        #expect(distinct.count == 4 + 3 + 6 + 12)
    }
}
