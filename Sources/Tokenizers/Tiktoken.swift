import Foundation

/// The pre-tokenizer regexes that ``Tokenizer/init(tiktoken:pattern:specialTokens:bosToken:eosTokens:)``
/// accepts (tokenizer.json files may use these and DeepSeek's).
public enum PreTokenizerRegex {
    public static let gpt2 = SplitPattern.gpt2Regex
    public static let llama3 = SplitPattern.llama3Regex
    public static let qwen2 = SplitPattern.qwen2Regex
    /// tiktoken's current cl100k_base pattern.
    public static let cl100k = SplitPattern.cl100kRegex
}

extension Tokenizer {
    /// A tiktoken BPE file: one `base64(token bytes) rank` per line; the rank is the id and
    /// the merge priority (two adjacent parts merge when their concatenation has a rank, the
    /// lowest rank first).
    ///
    /// - Parameters:
    ///   - pattern: the pre-tokenizer regex (one of ``SplitPattern``'s known patterns, e.g.
    ///     Qwen2's or cl100k's).
    ///   - specialTokens: special token strings and their ids, matched in input text.
    ///   - bosToken: added by `encode(addSpecialTokens: true)` when given.
    ///   - eosTokens: the tokens that end generation.
    public convenience init(tiktoken path: String, pattern: String, specialTokens: [String: Int],
                            bosToken: String? = nil, eosTokens: [String] = []) throws {
        let data = try readFile(path)
        var table = ByteStringTable(capacity: 1 << 17)
        var entries: [(Int, [UInt8])] = []
        entries.reserveCapacity(1 << 17)
        var maxRank = -1
        var lineNumber = 0
        var start = 0
        while start < data.count {
            var end = start
            while end < data.count && data[end] != 0x0A { end += 1 }
            lineNumber += 1
            let line = data[start..<end]
            start = end + 1
            guard !line.isEmpty else { continue }
            guard let space = line.firstIndex(of: 0x20),
                  let decoded = Data(base64Encoded: Data(line[line.startIndex..<space])),
                  let rank = Int(String(decoding: line[(space + 1)...], as: UTF8.self).trimmingCharacters(in: .whitespaces)),
                  rank >= 0, rank < 1 << 24 else {
                throw TokenizerError(path, "line \(lineNumber) is not \"base64 rank\"")
            }
            let bytes = [UInt8](decoded)
            guard table.insert(bytes, Int32(rank)) else { throw TokenizerError(path, "line \(lineNumber) repeats a token") }
            entries.append((rank, bytes))
            maxRank = max(maxRank, rank)
        }
        guard maxRank >= 0 else { throw TokenizerError(path, "no ranks in the file") }
        var names = [String](repeating: "", count: maxRank + 1)
        var decoded = [[UInt8]](repeating: [], count: maxRank + 1)
        for (rank, bytes) in entries {
            names[rank] = ByteLevel.text(of: bytes)
            decoded[rank] = bytes
        }
        let rankOfId = (0...maxRank).map { Int32($0) }
        let model = BPEModel(vocab: table, ranks: .tokens(rankOfId: rankOfId), units: .bytes)
        for (token, id) in specialTokens where id < decoded.count { decoded[id] = Array(token.utf8) }
        var parts = Parts(model: model, tokenNames: names, decodedBytes: decoded)
        parts.preTokenizers = [.split(try SplitPattern.regex(pattern, source: path), .isolated, invert: false)]
        parts.addedTokens = specialTokens.sorted { $0.value < $1.value }.map { AddedToken(content: $0.key, id: $0.value, special: true) }
        if let bosToken {
            guard let id = specialTokens[bosToken] else { throw TokenizerError(path, "BOS \(bosToken.debugDescription) is not a special token") }
            parts.bosTokenId = id
            parts.prefixIds = [id]
        }
        for e in eosTokens {
            guard let id = specialTokens[e] else { throw TokenizerError(path, "EOS \(e.debugDescription) is not a special token") }
            parts.eosTokenIds.append(id)
        }
        self.init(parts)
    }
}
