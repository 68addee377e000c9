import ArgumentParser
import CLICommon
import Structured
import Support
import Tokenizers
import VTensor

struct StructuredCaseResult: Codable {
    var name: String
    var compileMs: Double
    /// Tokens generated per walk, and walks.
    var tokens: Int
    var walks: Int
    /// Distinct automaton states reached, and masks computed (cache misses).
    var states: Int
    var maskMisses: Int
    var maskHits: Int
    /// Microseconds per mask: a walk over the vocabulary (miss), a cached mask (hit), and per step overall.
    var missMedianUs: Double
    var missMaxUs: Double
    var hitMedianUs: Double
    var stepMeanUs: Double
    var stepP99Us: Double
    /// Microseconds to advance the matcher by one token.
    var advanceMeanUs: Double
}

struct StructuredBenchReport: Codable {
    var date: String
    var tokenizer: String
    var vocabulary: Int
    var textTokens: Int
    var vocabularyBuildMs: Double
    var cases: [StructuredCaseResult]
}

/// `vtensor bench structured`: what constrained decoding costs the engine's thread per step. For
/// each grammar (JSON schemas, a regular expression, a choice), random walks generate answers by
/// picking uniformly among the tokens each mask allows; every step's mask (a walk over the sorted
/// vocabulary when the state is new, a lookup when it is not) and every advance is timed.
struct BenchStructuredCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "structured",
        abstract: "Constrained decoding's host cost: mask (vocabulary walk or cache hit) and advance per token, per grammar.")

    @OptionGroup var modelOptions: ModelOptions
    @Option(name: .customLong("tokenizer-json"), help: "Use this tokenizer.json instead of the model's tokenizer.")
    var tokenizerJSON: String?
    @Option(help: "Random answers generated per grammar.")
    var walks = 20
    @Option(name: .customLong("max-tokens"), help: "Tokens per answer at most.")
    var maxTokens = 200
    @Option(help: "Seed of the walks.")
    var seed: UInt64 = 1
    @Option(name: .customLong("json-out"), help: "Write the report as JSON to this file.")
    var jsonOut: String?

    static let person = #"{"type": "object", "properties": {"name": {"type": "string", "maxLength": 24}, "age": {"type": "integer", "minimum": 0, "maximum": 130}, "email": {"type": "string", "format": "email"}, "tags": {"type": "array", "items": {"enum": ["admin", "user", "guest"]}, "maxItems": 4}, "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["city"]}}, "required": ["name", "age"]}"#

    static let toolCalls = #"{"type": "array", "minItems": 1, "maxItems": 3, "items": {"anyOf": [{"type": "object", "properties": {"name": {"const": "get_weather"}, "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 40}, "unit": {"enum": ["celsius", "fahrenheit"]}, "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["city", "unit"]}}, "required": ["name", "parameters"]}, {"type": "object", "properties": {"name": {"const": "search"}, "parameters": {"type": "object", "properties": {"query": {"type": "string", "maxLength": 80}, "limit": {"type": "integer", "minimum": 1, "maximum": 50}}, "required": ["query"]}}, "required": ["name", "parameters"]}]}}"#

    func grammars() throws -> [(String, Grammar)] {
        [
            ("json-object", JSONSchemaGrammar.anyJSON(objectOnly: true)),
            ("schema-person", try JSONSchemaGrammar.grammar(schema: try JSON.parse(Self.person, source: "person"))),
            ("schema-tool-calls", try JSONSchemaGrammar.grammar(schema: try JSON.parse(Self.toolCalls, source: "tool calls"))),
            ("regex-date-time", Grammar(try RegexGrammar.expression(#"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?Z"#))),
            ("choice-3", Grammar(.choice(["positive", "negative", "neutral"].map { .text($0) }))),
        ]
    }

    func run() throws {
        guard walks > 0, maxTokens > 0 else { throw ValidationError("--walks and --max-tokens must be positive") }
        let tokenizer: Tokenizer
        let label: String
        if let tokenizerJSON {
            tokenizer = try Tokenizer(tokenizerJSON: tokenizerJSON)
            label = tokenizerJSON
        } else {
            let loaded = try modelOptions.openForCPU()
            tokenizer = try loaded.tokenizer()
            label = modelOptions.model ?? "embedded SmolLM2-135M-Instruct"
        }
        var clock = monotonicNanos()
        let vocabulary = TokenVocabulary(tokenizer: tokenizer)
        let buildMs = Double(monotonicNanos() - clock) / 1e6
        var rng = SplitMix64(seed: seed)
        var results: [StructuredCaseResult] = []
        for (name, grammar) in try grammars() {
            clock = monotonicNanos()
            let compiled = try CompiledGrammar(grammar, vocabulary: vocabulary)
            let compileMs = Double(monotonicNanos() - clock) / 1e6
            var misses: [Double] = [], hits: [Double] = [], steps: [Double] = [], advances: [Double] = []
            var tokens = 0
            for _ in 0..<walks {
                var matcher = GrammarMatcher(grammar: compiled)
                for _ in 0..<maxTokens {
                    let before = compiled.statistics.maskMisses
                    let start = monotonicNanos()
                    let mask = matcher.allowedTokens()
                    let us = Double(monotonicNanos() - start) / 1e3
                    steps.append(us)
                    if compiled.statistics.maskMisses > before { misses.append(us) } else { hits.append(us) }
                    let allowed = mask.ids
                    // End where the grammar may, half the time (an answer the model chose to end).
                    if allowed.isEmpty || (matcher.canEnd && rng.next() % 2 == 0) { break }
                    let token = allowed[Int(rng.next() % UInt64(allowed.count))]
                    let advanceStart = monotonicNanos()
                    let ok = matcher.accept(token)
                    advances.append(Double(monotonicNanos() - advanceStart) / 1e3)
                    precondition(ok, "a token the mask allowed was refused")
                    tokens += 1
                    if matcher.isComplete { break }
                }
            }
            let stats = compiled.statistics
            func median(_ xs: [Double]) -> Double { xs.isEmpty ? 0 : xs.sorted()[xs.count / 2] }
            let sortedSteps = steps.sorted()
            results.append(StructuredCaseResult(
                name: name, compileMs: compileMs, tokens: tokens, walks: walks, states: stats.states, maskMisses: stats.maskMisses,
                maskHits: stats.maskHits, missMedianUs: median(misses), missMaxUs: misses.max() ?? 0, hitMedianUs: median(hits),
                stepMeanUs: steps.reduce(0, +) / Double(max(1, steps.count)),
                stepP99Us: sortedSteps.isEmpty ? 0 : sortedSteps[min(sortedSteps.count - 1, Int(Double(sortedSteps.count) * 0.99))],
                advanceMeanUs: advances.reduce(0, +) / Double(max(1, advances.count))))
        }
        print("tokenizer: \(label): \(vocabulary.size) ids, \(vocabulary.textTokenCount) text tokens; vocabulary sorted in \(fixed(buildMs, 1)) ms")
        let rows = results.map { r in
            [r.name, fixed(r.compileMs, 2), "\(r.tokens)", "\(r.states)", "\(r.maskMisses)", fixed(r.missMedianUs, 0),
             fixed(r.missMaxUs, 0), fixed(r.hitMedianUs, 2), fixed(r.stepMeanUs, 1), fixed(r.stepP99Us, 0),
             fixed(r.advanceMeanUs, 2)]
        }
        print(Table(title: "constrained decoding, host cost per token (\(walks) random answers per grammar, at most \(maxTokens) tokens each)",
                    header: ["grammar", "compile ms", "tokens", "states", "walks", "walk us (med)", "walk us (max)", "hit us",
                             "mask us/step", "p99 us", "advance us"], rows: rows).render())
        if let jsonOut {
            let report = StructuredBenchReport(date: todayUTC(), tokenizer: label, vocabulary: vocabulary.size,
                                               textTokens: vocabulary.textTokenCount, vocabularyBuildMs: buildMs, cases: results)
            try writeFile(jsonOut, try jsonString(report, snakeCaseKeys: true) + "\n")
        }
    }
}
