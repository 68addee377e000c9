import Runtime

/// A request's prompt log-probabilities (`GenerationRequest.promptLogprobs`), filled in as its
/// prompt chunks run with logits for every position: position p's logits score token p + 1.
/// Position 0 has nothing before it and stays nil, as in vLLM.
///
/// A chunk recomputed after a preemption scores its positions again; only positions not yet
/// scored are kept. The request reads no cached prefix until every position is scored, since a
/// cached prefix skips the very rows whose logits are wanted (vLLM does the same).
struct PromptScores {
    let alternatives: Int
    private(set) var scores: [SampledToken?]
    /// The first prompt position whose score is not known yet.
    private(set) var next = 1
    /// Whether the scores went out with an output already.
    var delivered = false

    init(promptCount: Int, alternatives: Int) {
        self.alternatives = alternatives
        scores = Array(repeating: nil, count: promptCount)
    }

    var isComplete: Bool { next >= scores.count }

    /// Whether a row of `count` tokens from `start` computes logits that score a prompt token still unknown.
    func wants(start: Int, count: Int) -> Bool {
        !isComplete && start + count >= next && start + 1 < scores.count
    }

    /// Scores the prompt tokens that the rows of `logits` (one row of `stride` per position
    /// from `start`, in order) predict.
    mutating func record(_ logits: [Float], start: Int, stride: Int, prompt: ArraySlice<Int>, vocabularyLimit: Int) {
        let rows = logits.count / stride
        logits.withUnsafeBufferPointer { all in
            for j in 0..<rows {
                let target = start + j + 1
                guard target >= next, target < scores.count else { continue }
                let row = UnsafeBufferPointer(rebasing: all[(j * stride)..<((j + 1) * stride)])
                scores[target] = TokenScore.score(prompt[prompt.startIndex + target], logits: row, vocabularyLimit: vocabularyLimit,
                                                  alternatives: alternatives)
                next = target + 1
            }
        }
    }
}
