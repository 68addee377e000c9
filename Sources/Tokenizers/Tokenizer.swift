import Synchronization

/// Text to token ids and back: added tokens split out first, then for each segment the
/// normalizers, the pre-tokenizers and the BPE model; decoding maps each id to bytes and
/// assembles UTF-8 (see ``IncrementalDetokenizer``).
///
/// Built from an HF tokenizer.json (``init(tokenizerJSON:)``), a GGUF vocabulary
/// (``init(gguf:)``), a tiktoken rank file (``init(tiktoken:pattern:specialTokens:bosToken:eosTokens:)``)
/// or a SentencePiece model (``init(sentencePieceModel:)``).
public final class Tokenizer: Sendable {
    /// Everything a loader decides; the tokenizer adds the caches.
    struct Parts {
        var model: BPEModel
        var normalizers: [Normalizer] = []
        var preTokenizers: [PreTokenizer] = []
        var addedTokens: [AddedToken] = []
        /// The vocabulary's spelling of each id ("" for unused ids).
        var tokenNames: [String]
        /// What each id decodes to, before UTF-8 assembly.
        var decodedBytes: [[UInt8]]
        /// Leading spaces (0x20) removed from the start of the decoded text.
        var stripLeadingSpaces = 0
        var prefixIds: [Int] = []
        var suffixIds: [Int] = []
        var bosTokenId: Int?
        var eosTokenIds: [Int] = []
        /// Ids marked special (beyond special added tokens), e.g. SentencePiece control pieces.
        var specialIds: Set<Int> = []
    }

    let model: BPEModel
    let normalizers: [Normalizer]
    let preTokenizers: [PreTokenizer]
    let added: AddedTokenMatcher
    let tokenNames: [String]
    let nameToId: [String: Int]
    let decodedBytes: [[UInt8]]
    let special: [Bool]
    let stripLeadingSpaces: Int
    /// Ids `encode(addSpecialTokens: true)` puts before and after the text (BOS, EOS).
    public let prefixIds: [Int]
    public let suffixIds: [Int]
    public let bosTokenId: Int?
    /// Ids that end generation (EOS and end-of-turn tokens).
    public let eosTokenIds: [Int]
    /// Ids of all special tokens.
    public let specialTokenIds: Set<Int>
    /// The added tokens (specials included), matched whole in input text.
    public var addedTokens: [AddedToken] { added.tokens }

    /// Encoded pieces, keyed by their bytes; cleared when it grows past `cacheLimit`.
    private let cache = Mutex<[[UInt8]: [Int32]]>([:])
    private static let cacheLimit = 200_000
    private static let cacheablePieceLength = 256

    init(_ parts: Parts) {
        model = parts.model
        normalizers = parts.normalizers
        preTokenizers = parts.preTokenizers
        added = AddedTokenMatcher(parts.addedTokens)
        var names = parts.tokenNames
        var bytes = parts.decodedBytes
        if bytes.count < names.count { bytes += [[UInt8]](repeating: [], count: names.count - bytes.count) }
        var specialFlags = [Bool](repeating: false, count: names.count)
        for t in parts.addedTokens {
            if t.id >= names.count {
                names += [String](repeating: "", count: t.id + 1 - names.count)
                bytes += [[UInt8]](repeating: [], count: t.id + 1 - bytes.count)
                specialFlags += [Bool](repeating: false, count: t.id + 1 - specialFlags.count)
            }
            if names[t.id].isEmpty { names[t.id] = t.content }
            if bytes[t.id].isEmpty { bytes[t.id] = Array(t.content.utf8) }
            if t.special { specialFlags[t.id] = true }
        }
        if bytes.count < names.count { bytes += [[UInt8]](repeating: [], count: names.count - bytes.count) }
        for id in parts.specialIds where id < specialFlags.count { specialFlags[id] = true }
        var lookup: [String: Int] = [:]
        lookup.reserveCapacity(names.count)
        for (id, name) in names.enumerated() where !name.isEmpty {
            if lookup[name] == nil { lookup[name] = id }
        }
        for t in parts.addedTokens { lookup[t.content] = t.id }
        tokenNames = names
        nameToId = lookup
        decodedBytes = bytes
        special = specialFlags
        specialTokenIds = Set(specialFlags.indices.filter { specialFlags[$0] })
        stripLeadingSpaces = parts.stripLeadingSpaces
        prefixIds = parts.prefixIds
        suffixIds = parts.suffixIds
        bosTokenId = parts.bosTokenId
        eosTokenIds = parts.eosTokenIds
    }

    /// One more than the largest id.
    public var vocabularySize: Int { tokenNames.count }

    /// The id of a token spelled as in the vocabulary (byte-level tokens in GPT-2's
    /// characters, SentencePiece pieces with `▁`), added tokens included.
    public func id(of token: String) -> Int? { nameToId[token] }

    /// The vocabulary's spelling of an id.
    public func token(of id: Int) -> String? {
        guard id >= 0 && id < tokenNames.count, !tokenNames[id].isEmpty else { return nil }
        return tokenNames[id]
    }

    public func isSpecial(_ id: Int) -> Bool { id >= 0 && id < special.count && special[id] }

    /// The bytes an id decodes to, before UTF-8 assembly (empty for unused ids).
    public func bytes(of id: Int) -> [UInt8] { id >= 0 && id < decodedBytes.count ? decodedBytes[id] : [] }

    /// Leading spaces removed from the start of decoded text (SentencePiece's first-piece space).
    public var leadingSpacesStripped: Int { stripLeadingSpaces }

    /// The ids of `text`: added tokens in the text are recognized, and with
    /// `addSpecialTokens` the configured BOS (and EOS) are added.
    public func encode(_ text: String, addSpecialTokens: Bool = true) -> [Int] {
        var ids: [Int32] = []
        var utf8 = Array(text.utf8)
        utf8.withUnsafeMutableBufferPointer { buffer in
            let input = UnsafeBufferPointer(buffer)
            for segment in added.split(input) {
                switch segment {
                case .token(let id):
                    ids.append(Int32(id))
                case .text(let range):
                    encodeSegment(Array(input[range]), isFirst: range.lowerBound == 0, into: &ids)
                }
            }
        }
        var out: [Int] = []
        out.reserveCapacity(ids.count + prefixIds.count + suffixIds.count)
        if addSpecialTokens { out += prefixIds }
        for id in ids { out.append(Int(id)) }
        if addSpecialTokens { out += suffixIds }
        return out
    }

    private func encodeSegment(_ segment: [UInt8], isFirst: Bool, into ids: inout [Int32]) {
        var text = segment
        for n in normalizers { text = n.apply(text) }
        var pieces = text.isEmpty ? [] : [text]
        for p in preTokenizers { pieces = p.apply(pieces, isFirst: isFirst) }
        for piece in pieces {
            if piece.count <= Self.cacheablePieceLength {
                if let hit = cache.withLock({ $0[piece] }) {
                    ids += hit
                    continue
                }
                var out: [Int32] = []
                piece.withUnsafeBufferPointer { model.encode($0, into: &out) }
                ids += out
                cache.withLock { c in
                    if c.count >= Self.cacheLimit { c.removeAll(keepingCapacity: true) }
                    c[piece] = out
                }
            } else {
                piece.withUnsafeBufferPointer { model.encode($0, into: &ids) }
            }
        }
    }

    /// The text of `ids`. Invalid UTF-8 (from byte tokens) becomes U+FFFD per maximal
    /// ill-formed subsequence; SentencePiece-style tokenizers drop the leading space of the
    /// first piece.
    public func decode(_ ids: [Int], skipSpecialTokens: Bool = false) -> String {
        var d = IncrementalDetokenizer(tokenizer: self, skipSpecialTokens: skipSpecialTokens)
        var out = ""
        for id in ids { out += d.add(id) }
        out += d.finish()
        return out
    }
}
