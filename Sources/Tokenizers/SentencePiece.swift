/// SentencePiece piece types (sentencepiece_model.proto; GGUF's token_type uses the same values).
enum PieceType: Int {
    case normal = 1, unknown = 2, control = 3, userDefined = 4, unused = 5, byte = 6
}

/// What a SentencePiece BPE vocabulary needs, from a `.model` file or a GGUF "llama" vocabulary.
struct SentencePieceVocabulary {
    var source: String
    var pieces: [String]
    var scores: [Float]
    var types: [Int]
    var byteFallback: Bool
    var addDummyPrefix = true
    var removeExtraWhitespaces = false
    var unknownId: Int?
    var bosId: Int?
    var eosIds: [Int] = []
    var addBos = true
    var addEos = false

    /// SentencePiece's BPE: the text (spaces as `▁`, with a dummy `▁` prefix) is split into
    /// characters, user-defined pieces whole and frozen; the adjacent pair whose concatenation
    /// is the highest-scoring piece merges first (leftmost on ties); characters left without a
    /// piece become `<0xNN>` byte pieces (byte fallback) or `<unk>`. Control and unknown pieces
    /// are special tokens matched in the input text first; each text segment between them is
    /// encoded on its own (so it gets its own dummy prefix).
    func parts() throws -> Tokenizer.Parts {
        let n = pieces.count
        guard n > 0, scores.count == n, types.count == n else {
            throw TokenizerError(source, "SentencePiece vocabulary: \(n) pieces, \(scores.count) scores, \(types.count) types")
        }
        var table = ByteStringTable(capacity: n)
        var frozen = ByteTrie()
        var byteIds = [Int32](repeating: -1, count: 256)
        var added: [AddedToken] = []
        var decoded: [[UInt8]] = []
        decoded.reserveCapacity(n)
        var special: Set<Int> = []
        // Dense rank of the scores of mergeable pieces, highest score first.
        let mergeable = (0..<n).filter { types[$0] == PieceType.normal.rawValue || types[$0] == PieceType.userDefined.rawValue }
        let distinct = Array(Set(mergeable.map { scores[$0] })).sorted(by: >)
        var rankOfScore: [Float: Int32] = [:]
        for (r, s) in distinct.enumerated() { rankOfScore[s] = Int32(r) }
        var rankOfId = [Int32](repeating: -1, count: n)
        for id in mergeable { rankOfId[id] = rankOfScore[scores[id]]! }

        let space = Array("\u{2581}".utf8)
        for id in 0..<n {
            let piece = pieces[id]
            let bytes = Array(piece.utf8)
            table.insert(bytes, Int32(id))
            switch PieceType(rawValue: types[id]) {
            case .byte:
                guard bytes.count == 6, piece.hasPrefix("<0x"), piece.hasSuffix(">"),
                      let b = UInt8(piece.dropFirst(3).dropLast(), radix: 16) else {
                    throw TokenizerError(source, "byte piece \(piece.debugDescription) is not <0xNN>")
                }
                byteIds[Int(b)] = Int32(id)
                decoded.append([b])
            case .control, .unknown:
                added.append(AddedToken(content: piece, id: id, special: true))
                special.insert(id)
                decoded.append(bytes)
            case .userDefined:
                frozen.insert(bytes, value: Int32(id))
                decoded.append(bytes)
            case .normal, .unused:
                decoded.append(Normalizer.replace(space, with: [0x20]).apply(bytes))
            case nil:
                throw TokenizerError(source, "piece \(id) has unknown type \(types[id])")
            }
        }
        var unknown = UnknownPolicy()
        unknown.unknownId = unknownId.map(Int32.init)
        if byteFallback { unknown.byteFallback = byteIds }
        let model = BPEModel(vocab: table, ranks: .tokens(rankOfId: rankOfId), units: .characters,
                             unknown: unknown, frozen: frozen)
        var parts = Tokenizer.Parts(model: model, tokenNames: pieces, decodedBytes: decoded)
        if removeExtraWhitespaces { parts.normalizers.append(.collapseSpaces) }
        if addDummyPrefix { parts.normalizers.append(.prepend(space)) }
        parts.normalizers.append(.replace([0x20], with: space))
        // Words can be encoded separately (and cached) when no piece continues past a "▁"
        // that follows another character.
        let crossesWords = mergeable.contains { id in
            var previousIsSpace = true
            for ch in pieces[id].unicodeScalars {
                if ch == "\u{2581}" && !previousIsSpace { return true }
                previousIsSpace = ch == "\u{2581}"
            }
            return false
        }
        if !crossesWords { parts.preTokenizers = [.markerRuns(space)] }
        parts.addedTokens = added
        parts.specialIds = special
        parts.stripLeadingSpaces = addDummyPrefix ? 1 : 0
        parts.bosTokenId = bosId
        parts.eosTokenIds = eosIds
        if addBos, let bosId { parts.prefixIds = [bosId] }
        if addEos, let eos = eosIds.first { parts.suffixIds = [eos] }
        return parts
    }
}

extension Tokenizer {
    /// Loads a SentencePiece `.model` file (a ModelProto) of model type BPE.
    ///
    /// - Parameter addBos: whether `encode(addSpecialTokens: true)` prepends BOS (the
    ///   convention of Llama and Mistral; the file does not say).
    /// - Throws: ``TokenizerError`` for a malformed file, a unigram/word/char model, or a
    ///   normalizer with a precompiled character map (e.g. nmt_nfkc).
    public convenience init(sentencePieceModel path: String, addBos: Bool = true) throws {
        let bytes = try readFile(path)
        let proto = try SentencePieceModelProto(bytes, source: path)
        guard proto.modelType == 2 else {
            let names = [1: "UNIGRAM", 2: "BPE", 3: "WORD", 4: "CHAR"]
            throw TokenizerError(path, "unsupported SentencePiece model type \(names[proto.modelType] ?? String(proto.modelType)) (only BPE)")
        }
        guard proto.precompiledCharsmapSize == 0 else {
            throw TokenizerError(path, "SentencePiece normalizer \(proto.normalizerName.debugDescription) with a precompiled character map is not supported (only identity)")
        }
        guard !proto.treatWhitespaceAsSuffix else {
            throw TokenizerError(path, "treat_whitespace_as_suffix is not supported")
        }
        func valid(_ id: Int) -> Int? { id >= 0 && id < proto.pieces.count ? id : nil }
        var vocab = SentencePieceVocabulary(source: path, pieces: proto.pieces, scores: proto.scores, types: proto.types,
                                            byteFallback: proto.byteFallback)
        vocab.addDummyPrefix = proto.addDummyPrefix
        vocab.removeExtraWhitespaces = proto.removeExtraWhitespaces
        vocab.unknownId = valid(proto.unkId)
        vocab.bosId = valid(proto.bosId)
        vocab.eosIds = valid(proto.eosId).map { [$0] } ?? []
        vocab.addBos = addBos
        self.init(try vocab.parts())
    }
}

/// The fields of sentencepiece's ModelProto that the tokenizer needs, read with a minimal
/// protobuf decoder (varints, fixed32/64, length-delimited; unknown fields skipped).
struct SentencePieceModelProto {
    var pieces: [String] = []
    var scores: [Float] = []
    var types: [Int] = []
    // TrainerSpec
    var modelType = 1
    var byteFallback = false
    var treatWhitespaceAsSuffix = false
    var unkId = 0, bosId = 1, eosId = 2
    // NormalizerSpec
    var normalizerName = ""
    var precompiledCharsmapSize = 0
    var addDummyPrefix = true
    var removeExtraWhitespaces = true

    init(_ bytes: [UInt8], source: String) throws {
        try bytes.withUnsafeBufferPointer { buffer in
            var r = ProtobufReader(bytes: buffer, source: source)
            try r.fields { field, value, r in
                switch (field, value) {
                case (1, .bytes(let range)):
                    var piece = "", score: Float = 0, type = 1
                    var sub = r.sub(range)
                    try sub.fields { f, v, s in
                        switch (f, v) {
                        case (1, .bytes(let rr)): piece = s.string(rr)
                        case (2, .fixed32(let bits)): score = Float(bitPattern: bits)
                        case (3, .varint(let t)): type = Int(truncatingIfNeeded: t)
                        default: break
                        }
                    }
                    pieces.append(piece)
                    scores.append(score)
                    types.append(type)
                case (2, .bytes(let range)):
                    var sub = r.sub(range)
                    try sub.fields { f, v, _ in
                        guard case .varint(let x) = v else { return }
                        let i = Int(Int32(truncatingIfNeeded: x))
                        switch f {
                        case 3: modelType = i
                        case 24: treatWhitespaceAsSuffix = x != 0
                        case 35: byteFallback = x != 0
                        case 40: unkId = i
                        case 41: bosId = i
                        case 42: eosId = i
                        default: break
                        }
                    }
                case (3, .bytes(let range)):
                    var sub = r.sub(range)
                    try sub.fields { f, v, s in
                        switch (f, v) {
                        case (1, .bytes(let rr)): normalizerName = s.string(rr)
                        case (2, .bytes(let rr)): precompiledCharsmapSize = rr.count
                        case (3, .varint(let x)): addDummyPrefix = x != 0
                        case (4, .varint(let x)): removeExtraWhitespaces = x != 0
                        default: break
                        }
                    }
                default:
                    break
                }
            }
        }
        guard !pieces.isEmpty else { throw TokenizerError(source, "no SentencePiece pieces (not a SentencePiece model?)") }
    }
}

struct ProtobufReader {
    enum Value {
        case varint(UInt64)
        case fixed64(UInt64)
        case fixed32(UInt32)
        case bytes(Range<Int>)
    }

    let bytes: UnsafeBufferPointer<UInt8>
    let source: String
    var pos: Int
    var end: Int

    init(bytes: UnsafeBufferPointer<UInt8>, source: String) {
        self.bytes = bytes
        self.source = source
        pos = 0
        end = bytes.count
    }

    func sub(_ range: Range<Int>) -> ProtobufReader {
        var r = self
        r.pos = range.lowerBound
        r.end = range.upperBound
        return r
    }

    func string(_ range: Range<Int>) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[range]), as: UTF8.self)
    }

    func fail(_ what: String) -> TokenizerError {
        TokenizerError(source, "malformed protobuf at byte \(pos): \(what)")
    }

    mutating func varint() throws -> UInt64 {
        var v: UInt64 = 0
        var shift: UInt64 = 0
        while true {
            guard pos < end else { throw fail("truncated varint") }
            let b = bytes[pos]
            pos += 1
            guard shift < 64 else { throw fail("varint too long") }
            v |= UInt64(b & 0x7F) << shift
            if b & 0x80 == 0 { return v }
            shift += 7
        }
    }

    /// Calls `body` for each field until the end of this (sub)message.
    mutating func fields(_ body: (Int, Value, inout ProtobufReader) throws -> Void) throws {
        while pos < end {
            let key = try varint()
            let field = Int(key >> 3)
            let value: Value
            switch key & 7 {
            case 0: value = .varint(try varint())
            case 1:
                guard end - pos >= 8 else { throw fail("truncated fixed64") }
                var v: UInt64 = 0
                for i in 0..<8 { v |= UInt64(bytes[pos + i]) << (8 * UInt64(i)) }
                pos += 8
                value = .fixed64(v)
            case 2:
                let n = try varint()
                guard n <= UInt64(end - pos) else { throw fail("length \(n) runs past the end") }
                value = .bytes(pos..<(pos + Int(n)))
                pos += Int(n)
            case 5:
                guard end - pos >= 4 else { throw fail("truncated fixed32") }
                var v: UInt32 = 0
                for i in 0..<4 { v |= UInt32(bytes[pos + i]) << (8 * UInt32(i)) }
                pos += 4
                value = .fixed32(v)
            default:
                throw fail("unsupported wire type \(key & 7)")
            }
            var copy = self
            try body(field, value, &copy)
        }
    }
}
