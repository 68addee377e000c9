import Models

extension Tokenizer {
    /// The tokenizer embedded in a GGUF file: `tokenizer.ggml.model` "gpt2" (byte-level BPE
    /// with merges; `tokenizer.ggml.pre` picks the pre-tokenizer) or "llama" (SentencePiece
    /// BPE with scores and byte pieces).
    ///
    /// - Throws: ``TokenizerError`` for an unknown model or pre-tokenizer, or missing arrays.
    public convenience init(gguf: GGUFFile) throws {
        let source = gguf.path
        guard let model = gguf.string("tokenizer.ggml.model") else {
            throw TokenizerError(source, "no tokenizer.ggml.model: the file has no embedded tokenizer")
        }
        guard let tokens = gguf.stringArray("tokenizer.ggml.tokens") else {
            throw TokenizerError(source, "tokenizer.ggml.tokens is missing or not an array of strings")
        }
        let types = gguf.intArray("tokenizer.ggml.token_type") ?? [Int](repeating: PieceType.normal.rawValue, count: tokens.count)
        guard types.count == tokens.count else {
            throw TokenizerError(source, "tokenizer.ggml.token_type has \(types.count) entries for \(tokens.count) tokens")
        }
        func id(_ key: String) -> Int? {
            guard let v = gguf.int(key), v >= 0, v < tokens.count else { return nil }
            return v
        }
        let bos = id("tokenizer.ggml.bos_token_id")
        var eos: [Int] = []
        for key in ["tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
            if let e = id(key), !eos.contains(e) { eos.append(e) }
        }
        switch model {
        case "llama":
            guard let scores = gguf.floatArray("tokenizer.ggml.scores"), scores.count == tokens.count else {
                throw TokenizerError(source, "tokenizer.ggml.scores is missing or does not match the tokens")
            }
            var vocab = SentencePieceVocabulary(source: source, pieces: tokens, scores: scores.map { Float($0) }, types: types,
                                                byteFallback: types.contains(PieceType.byte.rawValue))
            vocab.addDummyPrefix = gguf.bool("tokenizer.ggml.add_space_prefix") ?? true
            vocab.unknownId = id("tokenizer.ggml.unknown_token_id") ?? types.firstIndex(of: PieceType.unknown.rawValue)
            vocab.bosId = bos
            vocab.eosIds = eos
            vocab.addBos = gguf.bool("tokenizer.ggml.add_bos_token") ?? true
            vocab.addEos = gguf.bool("tokenizer.ggml.add_eos_token") ?? false
            self.init(try vocab.parts())
        case "gpt2":
            let pre = gguf.string("tokenizer.ggml.pre") ?? "default"
            let preTokenizers: [PreTokenizer]
            switch pre {
            case "default", "gpt-2", "gpt2":
                preTokenizers = [.byteLevel(addPrefixSpace: false, useRegex: true)]
            case "smollm":
                preTokenizers = [.split(.digits(max: 1), .isolated, invert: false), .byteLevel(addPrefixSpace: false, useRegex: true)]
            case "llama-bpe", "llama3":
                preTokenizers = [.split(.llama3(maxDigits: 3), .isolated, invert: false), .byteLevel(addPrefixSpace: false, useRegex: false)]
            case "qwen2":
                preTokenizers = [.split(.llama3(maxDigits: 1), .isolated, invert: false), .byteLevel(addPrefixSpace: false, useRegex: false)]
            case "deepseek-v3":
                preTokenizers = [.split(.digits(max: 3), .isolated, invert: false), .split(.cjkRuns, .isolated, invert: false),
                                 .split(.deepSeekWords, .isolated, invert: false)]
            default:
                throw TokenizerError(source, "unsupported tokenizer.ggml.pre \(pre.debugDescription) (supported: default, gpt-2, smollm, llama-bpe, llama3, qwen2, deepseek-v3)")
            }
            guard let mergeList = gguf.stringArray("tokenizer.ggml.merges") else {
                throw TokenizerError(source, "tokenizer.ggml.merges is missing for a gpt2 tokenizer")
            }
            var table = ByteStringTable(capacity: tokens.count)
            var decoded: [[UInt8]] = []
            decoded.reserveCapacity(tokens.count)
            var added: [AddedToken] = []
            var nameToId: [String: Int32] = [:]
            nameToId.reserveCapacity(tokens.count)
            for (i, t) in tokens.enumerated() {
                let bytes = ByteLevel.bytes(of: t) ?? Array(t.utf8)
                table.insert(bytes, Int32(i))
                decoded.append(bytes)
                if nameToId[t] == nil { nameToId[t] = Int32(i) }
                switch PieceType(rawValue: types[i]) {
                case .control, .unknown:
                    added.append(AddedToken(content: t, id: i, special: true))
                case .userDefined:
                    added.append(AddedToken(content: t, id: i, special: false))
                default:
                    break
                }
            }
            var merges: [UInt64: UInt64] = [:]
            merges.reserveCapacity(mergeList.count)
            for (rank, m) in mergeList.enumerated() {
                guard let space = m.firstIndex(of: " ") else {
                    throw TokenizerError(source, "merge \(m.debugDescription) is not two tokens")
                }
                let a = String(m[..<space]), b = String(m[m.index(after: space)...])
                guard let ia = nameToId[a], let ib = nameToId[b], let merged = nameToId[a + b] else {
                    throw TokenizerError(source, "merge \(m.debugDescription) uses a token missing from the vocabulary")
                }
                let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
                if merges[key] == nil { merges[key] = UInt64(rank) << 32 | UInt64(UInt32(merged)) }
            }
            // llama.cpp (like Llama 3's tokenizer.json) takes whole-token pieces as they are.
            let bpe = BPEModel(vocab: table, ranks: .pairs(merges), units: .bytes, ignoreMerges: pre == "llama-bpe" || pre == "llama3")
            var parts = Tokenizer.Parts(model: bpe, tokenNames: tokens, decodedBytes: decoded)
            parts.preTokenizers = preTokenizers
            parts.addedTokens = added
            parts.bosTokenId = bos
            parts.eosTokenIds = eos
            if gguf.bool("tokenizer.ggml.add_bos_token") ?? false, let bos { parts.prefixIds = [bos] }
            if gguf.bool("tokenizer.ggml.add_eos_token") ?? false, let e = eos.first { parts.suffixIds = [e] }
            self.init(parts)
        default:
            throw TokenizerError(source, "unsupported tokenizer.ggml.model \(model.debugDescription) (supported: gpt2, llama)")
        }
    }

}
