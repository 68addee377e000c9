import Synchronization
import Tokenizers

/// What a request constrains its answer to (a server's `response_format`, vLLM's
/// `structured_outputs` and `guided_*` fields, a forced tool call; `generate --json-schema` ...).
/// The key of a ``GrammarCache``.
public enum OutputConstraint: Hashable, Sendable {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    case jsonObject
    /// JSON valid under this schema, written as JSON text with its keys in the order sent.
    case jsonSchema(String)
    /// The whole answer matches this regular expression.
    case regex(String)
    /// The answer is exactly one of these strings.
    case choice([String])
    /// The answer is a sentence of this GBNF grammar (rule `root`).
    case grammar(String)

    /// What the constraint asks for, in words (for error messages).
    public var describes: String {
        switch self {
        case .jsonObject: "a JSON object"
        case .jsonSchema: "JSON under the schema"
        case .regex: "the regular expression"
        case .choice: "one of the choices"
        case .grammar: "the grammar"
        }
    }

    public func grammar(options: JSONGrammarOptions = JSONGrammarOptions()) throws -> Grammar {
        switch self {
        case .jsonObject:
            return JSONSchemaGrammar.anyJSON(objectOnly: true, options: options)
        case .jsonSchema(let text):
            return try JSONSchemaGrammar.grammar(schema: try JSON.parse(text, source: "the JSON schema"), options: options)
        case .regex(let pattern):
            return Grammar(try RegexGrammar.expression(pattern))
        case .choice(let options):
            return Grammar(.choice(options.map { .text($0) }))
        case .grammar(let text):
            return try GBNFGrammar.parse(text)
        }
    }
}

/// Compiled grammars, by constraint, for one tokenizer: a schema sent again (every turn of an
/// agent sends the same tools) is compiled once, and its masks are kept with it.
public final class GrammarCache: Sendable {
    private let tokenizer: Tokenizer
    private let state = Mutex<State>(State())
    public static let capacity = 64

    private struct State {
        var vocabulary: TokenVocabulary?
        var grammars: [OutputConstraint: CompiledGrammar] = [:]
        /// Least recently used first.
        var order: [OutputConstraint] = []
    }

    public init(tokenizer: Tokenizer) { self.tokenizer = tokenizer }

    /// The vocabulary, built on first use (sorting it takes a moment on a large tokenizer).
    public var vocabulary: TokenVocabulary {
        state.withLock { s in
            if let v = s.vocabulary { return v }
            let v = TokenVocabulary(tokenizer: tokenizer)
            s.vocabulary = v
            return v
        }
    }

    /// The compiled grammar of `constraint`; a problem with it is a `GrammarError`.
    public func compiled(_ constraint: OutputConstraint) throws -> CompiledGrammar {
        if let hit = state.withLock({ s -> CompiledGrammar? in
            guard let g = s.grammars[constraint] else { return nil }
            s.order.removeAll { $0 == constraint }
            s.order.append(constraint)
            return g
        }) { return hit }
        let compiled = try CompiledGrammar(try constraint.grammar(options: JSONGrammarOptions()), vocabulary: vocabulary)
        state.withLock { s in
            if s.grammars[constraint] == nil {
                s.grammars[constraint] = compiled
                s.order.append(constraint)
            }
            while s.order.count > Self.capacity { s.grammars[s.order.removeFirst()] = nil }
        }
        return compiled
    }

    public var count: Int { state.withLock { $0.grammars.count } }
}

