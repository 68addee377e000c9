import Foundation

extension Tokenizer {
    /// Loads an HF `tokenizer.json` (BPE models: byte-level, or SentencePiece-style with byte
    /// fallback), reading `tokenizer_config.json` beside it when present for BOS/EOS and
    /// `add_bos_token`/`add_eos_token`.
    ///
    /// - Throws: ``TokenizerError`` naming the unsupported or malformed part.
    public convenience init(tokenizerJSON path: String) throws {
        let json = try JSON.parse(try readFile(path), source: path)
        let configPath = (path as NSString).deletingLastPathComponent + "/tokenizer_config.json"
        var config: JSON? = nil
        if FileManager.default.fileExists(atPath: configPath) {
            config = try JSON.parse(try readFile(configPath), source: configPath)
        }
        self.init(try TokenizerJSONLoader(path: path).parts(json, config: config))
    }
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw TokenizerError(path, "cannot read the file")
    }
    return [UInt8](data)
}

/// The pieces of tokenizer.json, component by component.
struct TokenizerJSONLoader {
    let path: String

    func fail(_ problem: String) -> TokenizerError { TokenizerError(path, problem) }

    func parts(_ json: JSON, config: JSON?) throws -> Tokenizer.Parts {
        guard json.members != nil else { throw fail("not a JSON object") }
        guard let modelJSON = json["model"], modelJSON.members != nil else { throw fail("no \"model\"") }
        let type = modelJSON["type"]?.string ?? "BPE"
        guard type == "BPE" else {
            throw fail("unsupported model type \(type.debugDescription) (only BPE)")
        }
        var addedTokens: [AddedToken] = []
        for item in json["added_tokens"]?.array ?? [] {
            guard let content = item["content"]?.string, let id = item["id"]?.int, id >= 0 else {
                throw fail("an added token without content or id")
            }
            addedTokens.append(AddedToken(content: content, id: id, special: item["special"]?.bool ?? false,
                                          lstrip: item["lstrip"]?.bool ?? false, rstrip: item["rstrip"]?.bool ?? false,
                                          singleWord: item["single_word"]?.bool ?? false))
        }

        let preTokenizers = try preTokenizer(json["pre_tokenizer"])
        let byteLevel = preTokenizers.contains { if case .byteLevel = $0 { true } else { false } }
            || (json["decoder"].map { decoderUsesByteLevel($0) } ?? false)

        // Vocabulary: names, and the bytes the model matches.
        guard let vocabMembers = modelJSON["vocab"]?.members else { throw fail("model.vocab is not an object") }
        var maxId = -1
        for (_, v) in vocabMembers {
            guard let id = v.int, id >= 0, id < 1 << 24 else { throw fail("model.vocab has an invalid id \(v)") }
            maxId = max(maxId, id)
        }
        for t in addedTokens { maxId = max(maxId, t.id) }
        var names = [String](repeating: "", count: maxId + 1)
        var table = ByteStringTable(capacity: vocabMembers.count)
        var nameToId: [String: Int32] = [:]
        nameToId.reserveCapacity(vocabMembers.count)
        for (name, v) in vocabMembers {
            let id = v.int!
            names[id] = name
            nameToId[name] = Int32(id)
            let bytes = byteLevel ? (ByteLevel.bytes(of: name) ?? Array(name.utf8)) : Array(name.utf8)
            table.insert(bytes, Int32(id))
        }

        // Merges: "a b" strings or ["a", "b"] pairs.
        var merges: [UInt64: UInt64] = [:]
        let mergeList = modelJSON["merges"]?.array ?? []
        merges.reserveCapacity(mergeList.count)
        for (rank, m) in mergeList.enumerated() {
            let a: String, b: String
            if let s = m.string {
                guard let space = s.firstIndex(of: " ") else { throw fail("merge \(s.debugDescription) is not two tokens") }
                a = String(s[..<space])
                b = String(s[s.index(after: space)...])
            } else if let pair = m.array, pair.count == 2, let x = pair[0].string, let y = pair[1].string {
                a = x
                b = y
            } else {
                throw fail("merge \(rank) is neither \"a b\" nor [\"a\", \"b\"]")
            }
            guard let ia = nameToId[a], let ib = nameToId[b], let merged = nameToId[a + b] else {
                throw fail("merge \((a + " " + b).debugDescription) uses a token missing from the vocabulary")
            }
            let key = UInt64(UInt32(ia)) << 32 | UInt64(UInt32(ib))
            if merges[key] == nil { merges[key] = UInt64(rank) << 32 | UInt64(UInt32(merged)) }
        }
        if let dropout = modelJSON["dropout"], !dropout.isNull, (dropout.double ?? 0) != 0 {
            throw fail("BPE dropout \(dropout) is not supported")
        }
        for key in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let v = modelJSON[key], !v.isNull, v.string != "" {
                throw fail("BPE \(key) is not supported")
            }
        }
        var unknown = UnknownPolicy()
        if let unk = modelJSON["unk_token"]?.string {
            guard let id = nameToId[unk] else { throw fail("unk_token \(unk.debugDescription) is not in the vocabulary") }
            unknown.unknownId = id
        }
        unknown.fuseUnknown = modelJSON["fuse_unk"]?.bool ?? false
        if modelJSON["byte_fallback"]?.bool == true {
            var ids = [Int32](repeating: -1, count: 256)
            for b in 0..<256 { ids[b] = nameToId[String(format: "<0x%02X>", b)] ?? -1 }
            unknown.byteFallback = ids
        }
        let model = BPEModel(vocab: table, ranks: .pairs(merges), units: byteLevel ? .bytes : .characters,
                             ignoreMerges: modelJSON["ignore_merges"]?.bool ?? false, unknown: unknown)

        var parts = Tokenizer.Parts(model: model, tokenNames: names, decodedBytes: [])
        parts.addedTokens = addedTokens
        parts.normalizers = try normalizer(json["normalizer"])
        parts.preTokenizers = preTokenizers
        var tokenTexts = names
        for t in addedTokens { tokenTexts[t.id] = t.content }
        let (decoded, strip) = try decoder(json["decoder"], tokens: tokenTexts)
        parts.decodedBytes = decoded
        parts.stripLeadingSpaces = strip

        let allIds = nameToId.merging(addedTokens.map { ($0.content, Int32($0.id)) }) { _, new in new }
        var (prefix, suffix) = try postProcessor(json["post_processor"], ids: allIds)
        // tokenizer_config.json: the named BOS/EOS, and whether to add them.
        func tokenName(_ v: JSON?) -> String? { v?.string ?? v?["content"]?.string }
        let bos = tokenName(config?["bos_token"]).flatMap { allIds[$0] }.map(Int.init)
        let eos = tokenName(config?["eos_token"]).flatMap { allIds[$0] }.map(Int.init)
        if let addBos = config?["add_bos_token"]?.bool, let bos {
            prefix.removeAll { $0 == bos }
            if addBos { prefix.insert(bos, at: 0) }
        }
        if let addEos = config?["add_eos_token"]?.bool, let eos {
            suffix.removeAll { $0 == eos }
            if addEos { suffix.append(eos) }
        }
        parts.prefixIds = prefix
        parts.suffixIds = suffix
        parts.bosTokenId = bos ?? prefix.first
        parts.eosTokenIds = eos.map { [$0] } ?? suffix.last.map { [$0] } ?? []
        return parts
    }

    func decoderUsesByteLevel(_ json: JSON) -> Bool {
        switch json["type"]?.string {
        case "ByteLevel": return true
        case "Sequence": return (json["decoders"]?.array ?? []).contains { decoderUsesByteLevel($0) }
        default: return false
        }
    }

    // MARK: Normalizers

    func normalizer(_ json: JSON?) throws -> [Normalizer] {
        guard let json, !json.isNull else { return [] }
        guard let type = json["type"]?.string else { throw fail("a normalizer without a type") }
        switch type {
        case "Sequence":
            return try (json["normalizers"]?.array ?? []).flatMap { try normalizer($0) }
        case "Prepend":
            guard let p = json["prepend"]?.string else { throw fail("Prepend normalizer without \"prepend\"") }
            return [.prepend(Array(p.utf8))]
        case "Replace":
            let (pattern, content) = try replacePair(json, what: "Replace normalizer")
            return [.replace(pattern, with: content)]
        case "NFC": return [.nfc]
        case "NFD": return [.nfd]
        case "NFKC": return [.nfkc]
        case "NFKD": return [.nfkd]
        case "Lowercase": return [.lowercase]
        default:
            throw fail("unsupported normalizer \(type.debugDescription) (supported: Sequence, Prepend, Replace, NFC, NFD, NFKC, NFKD, Lowercase)")
        }
    }

    func replacePair(_ json: JSON, what: String) throws -> ([UInt8], [UInt8]) {
        guard let content = json["content"]?.string else { throw fail("\(what) without \"content\"") }
        if let s = json["pattern"]?["String"]?.string, !s.isEmpty { return (Array(s.utf8), Array(content.utf8)) }
        if let r = json["pattern"]?["Regex"]?.string {
            throw fail("\(what) with regex \(r.debugDescription) is not supported (only literal strings)")
        }
        throw fail("\(what) without a pattern")
    }

    // MARK: Pre-tokenizers

    func preTokenizer(_ json: JSON?) throws -> [PreTokenizer] {
        guard let json, !json.isNull else { return [] }
        guard let type = json["type"]?.string else { throw fail("a pre-tokenizer without a type") }
        switch type {
        case "Sequence":
            return try (json["pretokenizers"]?.array ?? []).flatMap { try preTokenizer($0) }
        case "ByteLevel":
            return [.byteLevel(addPrefixSpace: json["add_prefix_space"]?.bool ?? true, useRegex: json["use_regex"]?.bool ?? true)]
        case "Split":
            let pattern: SplitPattern
            if let s = json["pattern"]?["String"]?.string {
                pattern = .literal(Array(s.utf8))
            } else if let r = json["pattern"]?["Regex"]?.string {
                pattern = try SplitPattern.regex(r, source: path)
            } else {
                throw fail("Split pre-tokenizer without a pattern")
            }
            let name = json["behavior"]?.string ?? "Isolated"
            guard let behavior = SplitBehavior(rawValue: name) else { throw fail("unknown Split behavior \(name.debugDescription)") }
            return [.split(pattern, behavior, invert: json["invert"]?.bool ?? false)]
        case "Digits":
            let individual = json["individual_digits"]?.bool ?? false
            return [.split(.digits(max: individual ? 1 : nil), .isolated, invert: false)]
        case "Metaspace":
            let replacement = json["replacement"]?.string ?? "\u{2581}"
            let scheme: PrependScheme
            if let s = json["prepend_scheme"]?.string {
                guard let p = PrependScheme(rawValue: s) else { throw fail("unknown Metaspace prepend_scheme \(s.debugDescription)") }
                scheme = p
            } else {
                scheme = (json["add_prefix_space"]?.bool ?? true) ? .always : .never
            }
            return [.metaspace(replacement: Array(replacement.utf8), prepend: scheme, split: json["split"]?.bool ?? true)]
        default:
            throw fail("unsupported pre-tokenizer \(type.debugDescription) (supported: Sequence, ByteLevel, Split, Digits, Metaspace)")
        }
    }

    // MARK: Decoders

    enum Piece { case text(String), bytes([UInt8]) }

    /// Per-token bytes, and how many leading spaces the decoded text loses.
    func decoder(_ json: JSON?, tokens: [String]) throws -> ([[UInt8]], Int) {
        var steps: [JSON] = []
        func flatten(_ j: JSON) throws {
            if j["type"]?.string == "Sequence" {
                for d in j["decoders"]?.array ?? [] { try flatten(d) }
            } else {
                steps.append(j)
            }
        }
        if let json, !json.isNull { try flatten(json) }
        var pieces: [Piece] = tokens.map { .text($0) }
        var fused = false
        var strip = 0
        for step in steps {
            let type = step["type"]?.string ?? ""
            switch type {
            case "ByteLevel":
                pieces = pieces.map {
                    guard case .text(let s) = $0 else { return $0 }
                    return .bytes(ByteLevel.bytes(of: s) ?? Array(s.utf8))
                }
            case "ByteFallback":
                pieces = pieces.map {
                    guard case .text(let s) = $0, s.utf8.count == 6, s.hasPrefix("<0x"), s.hasSuffix(">"),
                          let b = UInt8(s.dropFirst(3).dropLast(), radix: 16) else { return $0 }
                    return .bytes([b])
                }
            case "Replace":
                let (pattern, content) = try replacePair(step, what: "Replace decoder")
                pieces = pieces.map {
                    switch $0 {
                    case .text(let s): .text(String(decoding: Normalizer.replace(pattern, with: content).apply(Array(s.utf8)), as: UTF8.self))
                    case .bytes(let b): .bytes(Normalizer.replace(pattern, with: content).apply(b))
                    }
                }
            case "Metaspace":
                let replacement = Array((step["replacement"]?.string ?? "\u{2581}").utf8)
                let scheme = step["prepend_scheme"]?.string ?? ((step["add_prefix_space"]?.bool ?? true) ? "always" : "never")
                pieces = pieces.map {
                    guard case .text(let s) = $0 else { return $0 }
                    return .text(String(decoding: Normalizer.replace(replacement, with: [0x20]).apply(Array(s.utf8)), as: UTF8.self))
                }
                if scheme != "never" { strip = 1 }
            case "Fuse":
                fused = true
            case "Strip":
                let content = step["content"]?.string ?? " "
                let start = step["start"]?.int ?? 0, stop = step["stop"]?.int ?? 0
                guard content == " ", fused, stop == 0 else {
                    throw fail("Strip decoder (content \(content.debugDescription), start \(start), stop \(stop)\(fused ? "" : ", before Fuse")) is not supported (only leading spaces of the fused text)")
                }
                strip = start
            default:
                throw fail("unsupported decoder \(type.debugDescription) (supported: Sequence, ByteLevel, ByteFallback, Fuse, Strip, Replace, Metaspace)")
            }
        }
        let bytes: [[UInt8]] = pieces.map {
            switch $0 {
            case .text(let s): Array(s.utf8)
            case .bytes(let b): b
            }
        }
        return (bytes, strip)
    }

    // MARK: Post-processors

    /// The ids added before and after a single sequence.
    func postProcessor(_ json: JSON?, ids: [String: Int32]) throws -> ([Int], [Int]) {
        guard let json, !json.isNull else { return ([], []) }
        let type = json["type"]?.string ?? ""
        switch type {
        case "ByteLevel":
            return ([], [])
        case "Sequence":
            var prefix: [Int] = [], suffix: [Int] = []
            for p in json["processors"]?.array ?? [] {
                let (a, b) = try postProcessor(p, ids: ids)
                prefix += a
                suffix = b + suffix
            }
            return (prefix, suffix)
        case "TemplateProcessing":
            guard let single = json["single"]?.array else { throw fail("TemplateProcessing without \"single\"") }
            var prefix: [Int] = [], suffix: [Int] = []
            var seenSequence = false
            for item in single {
                if item["Sequence"] != nil { seenSequence = true; continue }
                guard let name = item["SpecialToken"]?["id"]?.string else { throw fail("TemplateProcessing item \(item) is not understood") }
                var tokenIds: [Int] = []
                if let list = json["special_tokens"]?[name]?["ids"]?.array {
                    tokenIds = list.compactMap { $0.int }
                } else if let id = ids[name] {
                    tokenIds = [Int(id)]
                } else {
                    throw fail("TemplateProcessing special token \(name.debugDescription) has no id")
                }
                if seenSequence { suffix += tokenIds } else { prefix += tokenIds }
            }
            return (prefix, suffix)
        case "RobertaProcessing", "BertProcessing":
            guard let cls = json["cls"]?.array, cls.count == 2, let c = cls[1].int,
                  let sep = json["sep"]?.array, sep.count == 2, let s = sep[1].int else {
                throw fail("\(type) without cls/sep")
            }
            return ([c], [s])
        default:
            throw fail("unsupported post-processor \(type.debugDescription) (supported: TemplateProcessing, ByteLevel, Sequence, RobertaProcessing, BertProcessing)")
        }
    }
}
