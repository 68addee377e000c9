import Foundation
import Runtime
import Structured
import Testing
import Tokenizers
@testable import Engine

/// Structured output through the engine, on the fake model with a 50-token tokenizer: every
/// generated token is one the grammar allowed, on the host's sampling path and on the device's
/// (where the refusals travel as biases and the engine must wait for each pick before the next
/// draw), in batches that mix constrained and unconstrained requests.
@Suite struct StructuredEngineTests {
    /// Id 0 is `<|eot|>` (special, the end of sequence); ids 1...49 are text.
    static let tokenizer: Tokenizer = {
        let pieces = Array("0123456789abcdefghijklmnopqrstuvwxyz,{}[]\":-_ .".utf8).map { [$0] } + [Array("ab".utf8), Array("{\"".utf8)]
        precondition(pieces.count == 49)
        let lines = pieces.enumerated().map { "\(Data($1).base64EncodedString()) \($0 + 1)" }.joined(separator: "\n")
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("structured-\(UUID().uuidString).tiktoken")
        try! lines.write(to: url, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: url) }
        return try! Tokenizer(tiktoken: url.path, pattern: PreTokenizerRegex.gpt2, specialTokens: ["<|eot|>": 0], eosTokens: ["<|eot|>"])
    }()

    /// `[` item (`,` item){0,3} `]`, an item being 1-4 letters or 1-2 digits.
    static var grammar: Grammar {
        var g = Grammar()
        let letters = GrammarExpression.bytes(ByteSet(UInt8(ascii: "a")...UInt8(ascii: "z")))
        let digits = GrammarExpression.bytes(ByteSet(UInt8(ascii: "0")...UInt8(ascii: "9")))
        g.define("root", .sequence([.text("["), .rule("item"), .repeat(.sequence([.text(","), .rule("item")]), min: 0, max: 3), .text("]")]))
        g.define("item", .choice([.repeat(letters, min: 1, max: 4), .repeat(digits, min: 1, max: 2)]))
        return g
    }

    static func compiled() throws -> CompiledGrammar {
        try CompiledGrammar(grammar, vocabulary: TokenVocabulary(tokenizer: tokenizer))
    }

    static func prompts(_ count: Int, seed: UInt64) -> [[Int]] {
        var rng = Xoshiro256StarStar(seed: seed)
        return (0..<count).map { _ in (0..<Int(rng.next() % 20 + 3)).map { _ in Int(rng.next() % 49) + 1 } }
    }

    struct Run {
        var tokens: [RequestID: [Int]] = [:]
        var text: [RequestID: String] = [:]
        var finish: [RequestID: FinishReason] = [:]
    }

    static func run(_ engine: Engine, _ requests: [GenerationRequest]) throws -> (ids: [RequestID], run: Run) {
        var run = Run()
        let ids = try requests.map { try engine.add($0) }
        var steps = 0
        while engine.hasWork {
            for output in engine.step() {
                run.tokens[output.id, default: []] += output.tokens.map(\.id)
                run.text[output.id, default: ""] += output.text
                if let finish = output.finish { run.finish[output.id] = finish }
                #expect(output.error == nil, "\(output.error ?? "")")
            }
            steps += 1
            if steps > 10_000 { Issue.record("the engine did not finish"); break }
        }
        return (ids, run)
    }

    /// Replays a request's tokens through a fresh matcher: each must be allowed where it came.
    static func checkFollowsGrammar(_ tokens: [Int], text: String, finish: FinishReason?, grammar: CompiledGrammar) {
        var matcher = GrammarMatcher(grammar: grammar)
        for (i, token) in tokens.enumerated() {
            if token == 0 {
                #expect(matcher.canEnd, "end of sequence where the grammar cannot end")
                #expect(i == tokens.count - 1)
                break
            }
            #expect(matcher.allowedTokens().allows(token), "token \(token) at \(i) was not allowed")
            guard matcher.accept(token) else { return }
        }
        if finish == .stop {
            #expect(matcher.canEnd, "stopped before the grammar was complete: \(text)")
            #expect(GrammarReference(Self.grammar).accepts(text), "\(text)")
        }
    }

    /// (device, late draws): the host's sampling, the device's with each constrained step
    /// synchronized, and the device's with the draws queued after the step before is collected.
    @Test(arguments: [(false, false), (true, false), (true, true)])
    func everyTokenIsAllowedOnTheHostAndOnTheDevice(device: Bool, lateDraws: Bool) throws {
        let model = try FakeModel(context: 96, budgetChunks: 200, queuesSteps: device)
        model.honorsRefusals = true
        var options = EngineOptions(maxNumSeqs: 6, maxNumBatchedTokens: 48)
        options.lateDraws = lateDraws
        let engine = try Engine(model: model, tokenizer: Self.tokenizer, eosTokenIds: [0], options: options)
        let grammar = try Self.compiled()
        let prompts = Self.prompts(10, seed: 3)
        let requests = prompts.enumerated().map { i, prompt in
            GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: i % 2 == 0 ? 0 : 1, seed: i, maxTokens: 40), grammar: grammar)
        }
        let (ids, run) = try Self.run(engine, requests)
        var completed = 0
        for id in ids {
            let tokens = run.tokens[id] ?? []
            #expect(!tokens.isEmpty)
            Self.checkFollowsGrammar(tokens, text: run.text[id] ?? "", finish: run.finish[id], grammar: grammar)
            if run.finish[id] == .stop { completed += 1 }
        }
        #expect(completed == ids.count, "a 20-byte-at-most grammar completes well within 40 tokens")
        #expect(engine.statistics.finishedGrammar + engine.statistics.finishedEOS == ids.count)
        #expect(engine.statistics.constrainedDraws == ids.reduce(0) { $0 + (run.tokens[$1]?.count ?? 0) }, "one timed mask a token")
        #expect(engine.statistics.grammarMaskSeconds > 0)
        if device && !lateDraws { #expect(engine.statistics.synchronizedSteps > 0, "each constrained draw waited for its request's previous pick") }
        if lateDraws { #expect(engine.statistics.synchronizedSteps == 0 && engine.statistics.lateDrawSteps > 0) }
        #expect(model.kvCache.requestIDs.isEmpty)
    }

    /// Constrained requests in the batch change nothing for the others.
    @Test(arguments: [false, true])
    func unconstrainedNeighboursKeepTheirTokens(device: Bool) throws {
        let grammar = try Self.compiled()
        let prompts = Self.prompts(8, seed: 9)
        func tokens(constrainEven: Bool) throws -> [[Int]] {
            let model = try FakeModel(context: 96, budgetChunks: 200, queuesSteps: device)
            model.honorsRefusals = true
            let engine = try Engine(model: model, tokenizer: Self.tokenizer, eosTokenIds: [0], options: EngineOptions(maxNumSeqs: 8, maxNumBatchedTokens: 64))
            let requests = prompts.enumerated().map { i, prompt in
                GenerationRequest(prompt: prompt, parameters: SamplingParameters(temperature: 0, maxTokens: 12, ignoreEOS: true),
                                  grammar: constrainEven && i % 2 == 0 ? grammar : nil)
            }
            let (ids, run) = try Self.run(engine, requests)
            return ids.map { run.tokens[$0] ?? [] }
        }
        let mixed = try tokens(constrainEven: true), plain = try tokens(constrainEven: false)
        for i in stride(from: 1, to: prompts.count, by: 2) { #expect(mixed[i] == plain[i], "request \(i)") }
        #expect((0..<prompts.count).contains { i in i % 2 == 0 && mixed[i] != plain[i] }, "the grammar changed the constrained requests")
    }

    /// The device's masks: one per masked row, cut or padded to the vocabulary limit, and the
    /// float64 oracle of the GPU sampler draws only allowed ids under them.
    @Test func masksPackForTheDeviceAndTheOracleHonoursThem() {
        var mask = TokenMask(size: 70)
        for id in [1, 4, 5, 66, 69] { mask.insert(id) }
        let plain = DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0)
        var masked = plain
        masked.allowed = mask.words
        let (rows, words) = DeviceDraw.packMasks([plain, masked, plain, masked], limit: 68)
        #expect(rows == [-1, 0, -1, 1])
        #expect(words.count == 4, "two masks of (68 + 63) / 64 words")
        #expect(words[1] == UInt64(1) << 2, "id 66 stays, 69 is past the limit")
        #expect((0..<68).filter { DeviceDraw.allows(Array(words[0..<2]), $0) } == [1, 4, 5, 66])
        let short = DeviceDraw.packMasks([DeviceDraw(parameters: SamplingParameters(temperature: 0), u: 0, allowed: [0b10])], limit: 200)
        #expect(short.words == [0b10, 0, 0, 0], "a short mask refuses the ids past it")

        var rng = Xoshiro256StarStar(seed: 5)
        for trial in 0..<50 {
            let logits = (0..<70).map { _ in Float(rng.nextUnit() * 8 - 4) }
            var draw = DeviceDraw(parameters: SamplingParameters(temperature: trial % 2 == 0 ? 0 : 1.3, topP: 0.9), u: Float(rng.nextUnit()))
            draw.allowed = mask.words
            let pick = SamplingReference.sample(logits: logits, vocabularyLimit: 68, draw: draw).token.id
            #expect([1, 4, 5, 66].contains(pick), "trial \(trial): \(pick)")
        }
    }

    @Test func aGrammarForAnotherVocabularyIsRefused() throws {
        let model = try FakeModel(context: 96, budgetChunks: 200)
        let engine = try Engine(model: model, tokenizer: Self.tokenizer, eosTokenIds: [0])
        let other = try CompiledGrammar(Self.grammar, vocabulary: TokenVocabulary(tokens: [Array("[".utf8), Array("]".utf8)]))
        do {
            _ = try engine.add(GenerationRequest(prompt: [1, 2], grammar: other))
            Issue.record("accepted a grammar compiled for another vocabulary")
        } catch {
            #expect("\(error)".contains("vocabulary of 2 tokens"))
        }
        // A grammar this vocabulary cannot begin to spell.
        let unspellable = try CompiledGrammar(Grammar(.text("~")), vocabulary: TokenVocabulary(tokenizer: Self.tokenizer))
        do {
            _ = try engine.add(GenerationRequest(prompt: [1, 2], grammar: unspellable))
            Issue.record("accepted a grammar no token can start")
        } catch {
            #expect("\(error)".contains("allows no token"))
        }
    }
}
