import Synchronization

/// A grammar bound to a vocabulary: matches tokens a byte at a time and gives, for any point
/// of a match, the mask of the tokens that keep the text inside the grammar's language.
///
/// One compiled grammar serves every request that uses it (a server keeps them by their
/// source). Its automaton and its masks are built as they are reached and kept, so a state seen
/// before (the inside of a JSON string, the place after a key) costs a lookup, and a new one
/// one walk over the sorted vocabulary. Thread-safe: a mutex guards the caches.
public final class CompiledGrammar: Sendable {
    public let vocabulary: TokenVocabulary
    private let cache: Mutex<Cache>
    /// The state before any text.
    public let initial: GrammarState

    struct Cache {
        var automaton: GrammarAutomaton
        var masks: [Int32: TokenMask] = [:]
        var maskBytes = 0
        var maskHits = 0
        var maskMisses = 0
    }

    /// Cached masks above this many bytes are dropped (all at once) before the next is kept.
    /// (16 MiB: a thousand masks at a 128k vocabulary, more states than a model's answers visit
    /// in a schema; a server keeps up to `GrammarCache.capacity` grammars, so 1 GiB at most.)
    static let maskCacheBytes = 16 << 20

    public convenience init(_ grammar: Grammar, vocabulary: TokenVocabulary) throws {
        try self.init(grammar, vocabulary: vocabulary, maxStates: GrammarAutomaton.defaultMaxStates)
    }

    /// `maxStates`: the automaton's limit (see ``GrammarAutomaton/defaultMaxStates``).
    init(_ grammar: Grammar, vocabulary: TokenVocabulary, maxStates: Int) throws {
        let program = try GrammarProgram(grammar)
        let automaton = GrammarAutomaton(program: program, maxStates: maxStates)
        self.vocabulary = vocabulary
        initial = GrammarState(id: automaton.initial)
        cache = Mutex(Cache(automaton: automaton))
    }

    /// Where a match stands; a value (copy it to branch).
    public struct GrammarState: Hashable, Sendable {
        let id: Int32
    }

    /// Whether the text so far is a whole sentence of the grammar.
    public func accepts(_ state: GrammarState) -> Bool { cache.withLock { $0.automaton.accepts(state.id) } }

    /// Whether some byte may still follow.
    public func canContinue(_ state: GrammarState) -> Bool { cache.withLock { $0.automaton.canContinue(state.id) } }

    /// The state after `bytes`, or nil when they leave the language.
    public func advance(_ state: GrammarState, bytes: some Sequence<UInt8>) -> GrammarState? {
        cache.withLock { c in
            var s = state.id
            for b in bytes {
                s = c.automaton.next(s, b)
                if s == GrammarAutomaton.dead { return nil }
            }
            return GrammarState(id: s)
        }
    }

    /// The text tokens that may follow `state` (end-of-sequence ids are the caller's to add
    /// where ``accepts(_:)``).
    public func mask(_ state: GrammarState) -> TokenMask {
        cache.withLock { c in
            if let hit = c.masks[state.id] {
                c.maskHits += 1
                return hit
            }
            c.maskMisses += 1
            let mask = Self.walk(from: state.id, vocabulary: vocabulary, automaton: &c.automaton)
            let bytes = mask.words.count * 8
            if c.maskBytes + bytes > Self.maskCacheBytes {
                c.masks.removeAll()
                c.maskBytes = 0
            }
            c.masks[state.id] = mask
            c.maskBytes += bytes
            return mask
        }
    }

    /// The mask of the first token when the detokenizer drops `spaces` leading spaces from it:
    /// each token is matched with its leading spaces (up to `spaces`) removed. A token of
    /// spaces only matches nothing and is allowed (it produces no text).
    public func mask(_ state: GrammarState, strippingLeadingSpaces spaces: Int) -> TokenMask {
        guard spaces > 0 else { return mask(state) }
        return cache.withLock { c in
            var mask = TokenMask(size: vocabulary.size)
            for id in vocabulary.sorted {
                let bytes = vocabulary.tokenBytes[Int(id)]
                var start = 0
                while start < min(spaces, bytes.count) && bytes[start] == 0x20 { start += 1 }
                var s = state.id
                var i = start
                while i < bytes.count && s != GrammarAutomaton.dead {
                    s = c.automaton.next(s, bytes[i])
                    i += 1
                }
                if s != GrammarAutomaton.dead { mask.insert(Int(id)) }
            }
            return mask
        }
    }

    /// Walks the sorted vocabulary from `start`: each token continues from the state its shared
    /// prefix with the previous token reached; a refused prefix skips every token under it.
    private static func walk(from start: Int32, vocabulary: TokenVocabulary, automaton: inout GrammarAutomaton) -> TokenMask {
        var mask = TokenMask(size: vocabulary.size)
        let n = vocabulary.sorted.count
        guard n > 0 else { return mask }
        // states[d]: the state after the current token's first d bytes; valid up to `valid`.
        var states = [Int32](repeating: 0, count: vocabulary.longestToken + 1)
        states[0] = start
        var valid = 0
        vocabulary.flat.withUnsafeBufferPointer { flat in
            vocabulary.offsets.withUnsafeBufferPointer { offsets in
                vocabulary.common.withUnsafeBufferPointer { common in
                    vocabulary.sorted.withUnsafeBufferPointer { sorted in
                        var i = 0
                        while i < n {
                            let begin = Int(offsets[i]), length = Int(offsets[i + 1]) - begin
                            var d = min(Int(common[i]), valid)
                            var s = states[d]
                            while d < length {
                                s = automaton.next(s, flat[begin + d])
                                if s == GrammarAutomaton.dead { break }
                                d += 1
                                states[d] = s
                            }
                            if s == GrammarAutomaton.dead {
                                // Bytes 0...d are refused: so is every following token that shares them.
                                valid = d
                                while i + 1 < n && Int(common[i + 1]) > d { i += 1 }
                            } else {
                                valid = length
                                mask.insert(Int(sorted[i]))
                            }
                            i += 1
                        }
                    }
                }
            }
        }
        return mask
    }

    /// How the caches are used (for tests and `bench`).
    public struct Statistics: Sendable, Equatable {
        public var states: Int
        public var frames: Int
        public var cachedMasks: Int
        public var maskHits: Int
        public var maskMisses: Int
    }

    public var statistics: Statistics {
        cache.withLock { c in
            Statistics(states: c.automaton.stateCount, frames: c.automaton.frameCount, cachedMasks: c.masks.count,
                       maskHits: c.maskHits, maskMisses: c.maskMisses)
        }
    }
}

public typealias GrammarState = CompiledGrammar.GrammarState
