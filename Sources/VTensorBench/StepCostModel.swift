/// An estimate of a model step's GPU time from its rows, for scheduling studies without a GPU
/// (`bench engine --step-cost`): a step reads the weights once, each decode row reads its K/V,
/// and prompt tokens cost their matmul and attention FLOPs. Constants for Llama-3-8B in bf16 on
/// an H200, from docs/perf.md: a decode step of 128 rows at ShareGPT lengths took about 7.4 ms,
/// a step of 8,192 prompt tokens 150-250 ms. A model, not a measurement: what it is good for is
/// comparing schedules, where every arm pays the same prices.
struct StepCostModel: Sendable {
    /// Fixed cost of a step: the weights read once (16 GB at ~4.3 TB/s) and launch overheads.
    var baseMs = 4.0
    /// Per row: its share of the activations, sampling and the row's small matmul work.
    var rowMs = 0.012
    /// K/V bytes a token holds (all layers), read by a decode row for each token of its context.
    var kvBytesPerToken = 131_072.0
    var readBytesPerSecond = 4.0e12
    /// Matmul FLOPs a prompt token costs (2 x 8e9 parameters) and the attention FLOPs per token
    /// per token of context (4 x 4096 x 32 layers), at the tensor cores' sustained rate.
    var flopsPerToken = 16.0e9
    var attentionFlopsPerContextToken = 524_288.0
    var flopsPerSecond = 650e12

    static let h200Llama3_8B = StepCostModel()

    /// Milliseconds for a step whose rows each bring `tokens` new tokens after `start` cached ones.
    /// `sparedKeys`: decode keys not read again (shared-prefix decode tiles read a shared prefix
    /// once a tile).
    func milliseconds(rows: [(start: Int, tokens: Int)], sparedKeys: Int = 0) -> Double {
        var ms = baseMs + rowMs * Double(rows.count)
        var flops = 0.0
        var bytes = 0.0
        for row in rows {
            if row.tokens == 1 {
                bytes += kvBytesPerToken * Double(row.start + 1)
            } else {
                let n = Double(row.tokens)
                flops += n * flopsPerToken + n * (Double(row.start) + n / 2) * attentionFlopsPerContextToken
            }
        }
        bytes -= kvBytesPerToken * Double(sparedKeys)
        ms += bytes / readBytesPerSecond * 1000 + flops / flopsPerSecond * 1000
        return ms
    }
}
