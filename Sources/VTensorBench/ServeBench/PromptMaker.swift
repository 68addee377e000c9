import Tokenizers
import VTensor

/// How prompts go over the wire: token ids (completions endpoint with a tokenizer: exact
/// lengths), text (completions without a tokenizer) or chat messages.
enum PromptForm: Sendable {
    case tokenIds, text, chat

    static func of(_ endpoint: ServeEndpoint, tokenizer: Tokenizer?) -> PromptForm {
        endpoint == .chat ? .chat : tokenizer == nil ? .text : .tokenIds
    }
}

/// A piece of a synthetic prompt (a whole random prompt, a system prompt, a question, a user
/// turn): its ids (token-id form) or its text, and how many tokens it is.
struct PromptPiece: Sendable, Equatable {
    var tokens: [Int] = []
    var text = ""
    /// Exact with a tokenizer, else the number of words (about one token each).
    var count: Int
}

/// Makes random prompt pieces of a given token length. A client does not know the server's
/// tokenizer; vLLM's answer is to use one on the client side. With a tokenizer, pieces are
/// random ids from its vocabulary (specials and added tokens excluded), or, for text forms,
/// random words trimmed to the exact token count; without one, random common words (most
/// are one token with their leading space in BPE vocabularies, so lengths are approximate).
struct PromptMaker {
    let tokenizer: Tokenizer?
    let form: PromptForm
    private let allowed: [Int]
    private var rng: SplitMix64

    init(tokenizer: Tokenizer?, form: PromptForm, seed: UInt64) {
        self.tokenizer = tokenizer
        self.form = form
        rng = SplitMix64(seed: seed &+ 0xB0D1E5)
        if let tokenizer, form == .tokenIds {
            let added = Set(tokenizer.addedTokens.map(\.id))
            allowed = (0..<tokenizer.vocabularySize).filter { !tokenizer.isSpecial($0) && !added.contains($0) && tokenizer.token(of: $0) != nil }
        } else {
            allowed = []
        }
    }

    /// Tokens the server adds around a text prompt (BOS), which the text form leaves room for.
    var specialsAddedByServer: Int { form == .tokenIds ? 0 : (tokenizer.map { $0.prefixIds.count + $0.suffixIds.count } ?? 0) }

    /// Whether `count` is exact.
    var exactLengths: Bool { tokenizer != nil }

    mutating func piece(tokens n: Int) -> PromptPiece {
        if form == .tokenIds, !allowed.isEmpty {
            return PromptPiece(tokens: (0..<n).map { _ in allowed[Int.random(in: 0..<allowed.count, using: &rng)] }, count: n)
        }
        let words = self.words(n)
        guard let tokenizer else { return PromptPiece(text: words, count: n) }
        return trimmed(words, to: n, tokenizer)
    }

    /// `n` random words, each with its leading space.
    mutating func words(_ n: Int) -> String {
        var text = ""
        text.reserveCapacity(n * 6)
        for _ in 0..<n { text += " " + Self.vocabulary[Int.random(in: 0..<Self.vocabulary.count, using: &rng)] }
        return text
    }

    /// Random words cut to exactly `n` tokens: the encoding of the words, cut at `n` ids and
    /// decoded (plain ASCII words decode and re-encode to the same ids); words are added while
    /// there are too few.
    private mutating func trimmed(_ start: String, to n: Int, _ tokenizer: Tokenizer) -> PromptPiece {
        var text = start
        for _ in 0..<8 {
            let ids = tokenizer.encode(text, addSpecialTokens: false)
            if ids.count >= n {
                let cut = ids.count == n ? text : tokenizer.decode(Array(ids.prefix(n)))
                return PromptPiece(text: cut, count: tokenizer.encode(cut, addSpecialTokens: false).count)
            }
            text += words(n - ids.count)
        }
        return PromptPiece(text: text, count: tokenizer.encode(text, addSpecialTokens: false).count)
    }

    /// Common short English words.
    static let vocabulary: [String] = """
        the of and to in is it you that he was for on are with as his they be at one have this from or had by word but \
        what some we can out other were all there when up use your how said an each she which do their time if will way \
        about many then them write would like so these her long make thing see him two has look more day could go come \
        did number sound no most people my over know water than call first who may down side been now find any new work \
        part take get place made live where after back little only round man year came show every good me give our under \
        name very through just form great think say help low line differ turn cause much mean before move right boy old \
        too same tell does set three want air well also play small end put home read hand port large spell add even land \
        here must big high such follow act why ask men change went light kind off need house picture try us again animal \
        point mother world near build self earth father head stand own page should country found answer school grow study
        """.split(whereSeparator: { $0 == " " || $0 == "\n" }).map(String.init)
}
