/// One request's place in its grammar: takes each generated token and gives the mask of the
/// next. The output text is the tokens' bytes as the detokenizer writes them, so leading spaces
/// it drops from the start of the output (SentencePiece) are dropped here too.
public struct GrammarMatcher: Sendable {
    public let grammar: CompiledGrammar
    public private(set) var state: GrammarState
    /// Leading spaces still to be dropped (as ``Tokenizers/IncrementalDetokenizer`` does).
    private var spacesToStrip: Int

    public init(grammar: CompiledGrammar) {
        self.grammar = grammar
        state = grammar.initial
        spacesToStrip = grammar.vocabulary.leadingSpacesStripped
    }

    /// The text tokens allowed next. (End-of-sequence ids are allowed where ``canEnd``.)
    public func allowedTokens() -> TokenMask {
        spacesToStrip > 0 ? grammar.mask(state, strippingLeadingSpaces: spacesToStrip) : grammar.mask(state)
    }

    /// Whether the text so far is complete (the sequence may end here).
    public var canEnd: Bool { grammar.accepts(state) }

    /// Complete, and nothing may follow: generation is over.
    public var isComplete: Bool { grammar.accepts(state) && !grammar.canContinue(state) }

    /// Takes a generated token. Returns false, changing nothing, when the grammar refuses it
    /// (a token that is not text, or whose bytes leave the language).
    @discardableResult
    public mutating func accept(_ token: Int) -> Bool {
        guard let bytes = grammar.vocabulary.text(of: token) else { return false }
        var start = 0
        var strip = spacesToStrip
        while strip > 0 && start < bytes.count {
            if bytes[start] == 0x20 {
                start += 1
                strip -= 1
            } else {
                strip = 0
            }
        }
        guard let next = grammar.advance(state, bytes: bytes[start...]) else { return false }
        state = next
        spacesToStrip = strip
        return true
    }
}
