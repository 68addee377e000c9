import Foundation
import Runtime
import Tokenizers

/// One token of a logprobs listing: its id and its score (nil for the first prompt token, which
/// nothing predicts).
struct LogprobEntry {
    var id: Int
    var score: SampledToken?
}

/// Token log-probabilities in the two shapes of OpenAI's APIs: the completions API's legacy
/// object and chat's `content` list.
struct LogprobFormat {
    let tokenizer: Tokenizer

    /// A token's text, decoded on its own as vLLM does. A byte-level token that is not valid
    /// UTF-8 by itself (a piece of a character) reads as U+FFFD, as in vLLM (which decodes with
    /// replacement); its chat `bytes` are then those of U+FFFD, again as in vLLM.
    func text(_ id: Int) -> String { tokenizer.decode([id]) }

    /// JSON has no infinities: a logprob below -9999 (minus infinity included) is written as
    /// -9999, vLLM's and OpenAI's floor.
    static func number(_ logprob: Float?) -> Any {
        guard let logprob else { return NSNull() }
        return logprob.isNaN ? -9999.0 : max(Double(logprob), -9999)
    }

    /// The completions object over `entries`: `tokens`, `token_logprobs`, `top_logprobs` (per
    /// token a map of token text to logprob holding the chosen token and its alternatives, as
    /// vLLM and OpenAI do) and `text_offset`. `offset` is where the first token's text starts
    /// (in Unicode scalars, as Python counts); it advances past each token's text.
    func completion(_ entries: [LogprobEntry], offset: inout Int) -> [String: Any] {
        var tokens: [String] = [], logprobs: [Any] = [], tops: [Any] = [], offsets: [Int] = []
        for entry in entries {
            let token = text(entry.id)
            tokens.append(token)
            offsets.append(offset)
            offset += token.unicodeScalars.count
            guard let score = entry.score else {
                logprobs.append(NSNull())
                tops.append(NSNull())
                continue
            }
            logprobs.append(Self.number(score.logprob))
            var top: [String: Any] = [:]
            for alternative in score.alternatives {
                // Two ids may read the same (partial characters): the likelier one stays.
                let key = text(alternative.id)
                if top[key] == nil { top[key] = Self.number(alternative.logprob) }
            }
            top[token] = Self.number(score.logprob)
            tops.append(top)
        }
        return ["tokens": tokens, "token_logprobs": logprobs, "top_logprobs": tops, "text_offset": offsets]
    }

    /// Chat's `content` list: per generated token its text, logprob, UTF-8 bytes and its
    /// alternatives, most likely first.
    func chat(_ tokens: [SampledToken]) -> [[String: Any]] {
        tokens.map { token in
            var entry = item(token.id, token.logprob)
            entry["top_logprobs"] = token.alternatives.map { item($0.id, $0.logprob) }
            return entry
        }
    }

    private func item(_ id: Int, _ logprob: Float?) -> [String: Any] {
        let token = text(id)
        return ["token": token, "logprob": Self.number(logprob ?? -.infinity), "bytes": token.utf8.map(Int.init)]
    }
}
