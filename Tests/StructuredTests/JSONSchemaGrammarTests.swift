import Testing
@testable import Structured
import Tokenizers

/// Parses `schema`, builds its grammar (checked: no undefined rules, no left recursion, no
/// nullable repeats; lowerable) and a reference matcher for it.
private func matcher(_ schema: String, _ options: JSONGrammarOptions = .init()) throws -> GrammarReference {
    let g = try JSONSchemaGrammar.grammar(schema: try JSON.parse(schema), options: options)
    try GrammarChecks.check(g)
    _ = try GrammarProgram(g)
    return GrammarReference(g)
}

private func check(_ schema: String, _ options: JSONGrammarOptions = .init(), accept: [String], reject: [String],
                   sourceLocation: SourceLocation = #_sourceLocation) throws {
    let r = try matcher(schema, options)
    for text in accept { #expect(r.accepts(text), "should accept \(text)", sourceLocation: sourceLocation) }
    for text in reject { #expect(!r.accepts(text), "should reject \(text)", sourceLocation: sourceLocation) }
}

/// The error message building `schema` throws (nil when it builds).
private func failure(_ schema: String, _ options: JSONGrammarOptions = .init()) -> String? {
    do {
        _ = try JSONSchemaGrammar.grammar(schema: try JSON.parse(schema), options: options)
        return nil
    } catch let e as GrammarError {
        return e.message
    } catch {
        return "\(error)"
    }
}

@Suite struct JSONSchemaGrammarTests {
    // MARK: Types and whitespace

    @Test func primitiveTypes() throws {
        try check(#"{"type":"string"}"#, accept: [#""""#, #""abc""#, #""a\"b\\c\/\n\u00e9\uD83D\uDE00""#, "\"é😀\""],
                  reject: ["abc", #""a"b""#, "\"a\nb\"", #""\x""#, #""\uD83D""#, #""\uDE00x""#, #""\u12""#, "1", "\"\u{7}\""])
        try check(#"{"type":"integer"}"#, accept: ["0", "-1", "42", "-9876543210"], reject: ["-0", "01", "+1", "1.0", "1e3", "", "-"])
        try check(#"{"type":"number"}"#, accept: ["0", "-0", "1.5", "-0.25", "1e10", "2E-3", "3.0e+7", "10"],
                  reject: ["01", ".5", "1.", "+1", "1e", "--1", "0x1", "NaN"])
        try check(#"{"type":"boolean"}"#, accept: ["true", "false"], reject: ["True", "1", "null"])
        try check(#"{"type":"null"}"#, accept: ["null"], reject: ["nul", "\"null\""])
        try check(#"{"type":["string","null"]}"#, accept: ["null", #""x""#], reject: ["1", "true"])
        try check(#"{"type":["integer","number"]}"#, accept: ["1", "1.5"], reject: ["\"1\""])
        try check("true", accept: ["1", "{\"a\":[true,null,\"x\"]}", "[]", "\"s\""], reject: ["{", "tru", "[1,]"])
        try check("{}", accept: ["1", "{}", "[{}]"], reject: ["", "{,}"])
        try check(#"{"title":"T","description":"d","$schema":"x","examples":[1],"default":2}"#, accept: ["1", "[]"], reject: ["x"])
    }

    @Test func whitespace() throws {
        let schema = #"{"type":"object","properties":{"a":{"type":"array","items":{"type":"integer"}},"b":{"type":"string"}},"required":["a","b"]}"#
        let pretty = "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"x\"\n}"
        try check(schema, accept: [#"{"a":[1,2],"b":"x"}"#, pretty, " { \"a\" : [ ] , \"b\" : \"\" }", "{\"a\":[1],\n\"b\":\"x\"}", "{\n\t\"a\": [],\n\t\"b\": \"\"\n}"],
                  // Nothing after the value: the answer ends when it is complete.
                  reject: [#"{"a":[1,2],"b":"x"} x"#, "{\"a\":[],\"b\":\"\"}\n", "{  \"a\":[],\"b\":\"\"}", "{\n\n\"a\":[],\"b\":\"\"}", " \t{\"a\":[],\"b\":\"\"}", "{\"a\":[1,2],\"b\":\"x\"\n" + String(repeating: " ", count: 33) + "}", "{\"a\":[1 2],\"b\":\"x\"}"])
        try check(schema, JSONGrammarOptions(maxWhitespace: 0), accept: [#"{"a":[1,2],"b":"x"}"#], reject: [pretty, #"{"a":[1,2], "b":"x"}"#, " {\"a\":[],\"b\":\"\"}"])
        try check(schema, JSONGrammarOptions(maxWhitespace: 3), accept: ["{\n   \"a\":[],\"b\":\"\"}", "{ \"a\":[],\"b\":\"\"}"],
                  reject: ["{\n    \"a\":[],\"b\":\"\"}", "{   \"a\":[],\"b\":\"\"}"])
    }

    // MARK: Objects

    /// Every subset of the optional properties, in schema order, with the commas right.
    @Test func optionalPropertySubsets() throws {
        let schema = #"{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"integer"},"c":{"type":"integer"},"d":{"type":"integer"},"e":{"type":"integer"}},"required":["b","d"]}"#
        let r = try matcher(schema)
        let keys = ["a", "b", "c", "d", "e"]
        for mask in 0..<32 {
            let present = keys.enumerated().filter { mask & (1 << $0.offset) != 0 }.map(\.element)
            let text = "{" + present.map { "\"\($0)\":1" }.joined(separator: ",") + "}"
            let valid = present.contains("b") && present.contains("d")
            #expect(r.accepts(text) == valid, "\(text)")
            if present.count >= 2 {
                #expect(!r.accepts("{" + present.reversed().map { "\"\($0)\":1" }.joined(separator: ",") + "}"), "reversed \(text)")
                #expect(!r.accepts("{" + present.map { "\"\($0)\":1" }.joined(separator: ",,") + "}"))
            }
            if valid {
                #expect(!r.accepts("{," + text.dropFirst()), "leading comma \(text)")
                #expect(!r.accepts(text.dropLast() + ",}"), "trailing comma \(text)")
                #expect(!r.accepts(text.dropLast() + ",\"f\":1}"), "extra key \(text)")
            }
        }
        // All optional: the empty object too.
        let allOptional = try matcher(#"{"type":"object","properties":{"x":{"type":"string"},"y":{"type":"boolean"}}}"#)
        for text in ["{}", "{ }", #"{"x":""}"#, #"{"y":true}"#, #"{"x":"","y":false}"#] { #expect(allOptional.accepts(text), "\(text)") }
        for text in ["{,}", #"{"y":true,"x":""}"#, #"{"x":"",}"#, #"{"x":1}"#, #"{"x":"","x":""}"#] { #expect(!allOptional.accepts(text), "\(text)") }
    }

    @Test func additionalProperties() throws {
        let props = #""properties":{"a":{"type":"integer"},"b":{"type":"string"}},"required":["a"]"#
        // Strict default: no other key.
        try check("{\"type\":\"object\",\(props)}", accept: [#"{"a":1}"#, #"{"a":1,"b":"x"}"#], reject: [#"{"a":1,"c":2}"#, #"{"c":2,"a":1}"#, "{}"])
        // JSON Schema's default: other keys after the listed ones.
        try check("{\"type\":\"object\",\(props)}", JSONGrammarOptions(strictProperties: false),
                  accept: [#"{"a":1}"#, #"{"a":1,"c":[1,{"d":null}]}"#, #"{"a":1,"b":"x","c":2,"d":3}"#], reject: [#"{"c":2,"a":1}"#, #"{"a":1,"c":}"#])
        try check("{\"type\":\"object\",\(props),\"additionalProperties\":{\"type\":\"boolean\"}}",
                  accept: [#"{"a":1,"z":true}"#, #"{"a":1,"b":"","y":false,"z":true}"#], reject: [#"{"a":1,"z":1}"#])
        try check("{\"type\":\"object\",\(props),\"additionalProperties\":true}", accept: [#"{"a":1,"z":{}}"#], reject: [])
        try check("{\"type\":\"object\",\(props),\"additionalProperties\":false}", JSONGrammarOptions(strictProperties: false),
                  accept: [#"{"a":1}"#], reject: [#"{"a":1,"z":1}"#])
        // No properties.
        try check(#"{"type":"object"}"#, accept: ["{}", "{ }", "{\n}"], reject: [#"{"a":1}"#])
        try check(#"{"type":"object"}"#, JSONGrammarOptions(strictProperties: false), accept: ["{}", #"{"a":1,"b":[]}"#], reject: ["{"])
        try check(#"{"type":"object","additionalProperties":{"type":"integer"}}"#, accept: ["{}", #"{"a":1,"b":2}"#], reject: [#"{"a":"x"}"#])
        // A required key not in properties takes the additional properties' schema.
        try check(#"{"type":"object","required":["id"]}"#, accept: [#"{"id":"x"}"#, #"{"id":[1]}"#], reject: ["{}"])
        // A property of schema false is left out.
        try check(#"{"type":"object","properties":{"a":false,"b":{"type":"null"}}}"#, accept: [#"{"b":null}"#], reject: [#"{"a":1}"#])
        // Keys with characters to escape.
        try check(#"{"type":"object","properties":{"q\"k\\\n/é":{"const":1}},"required":["q\"k\\\n/é"]}"#,
                  accept: [#"{"q\"k\\\n/é":1}"#], reject: [#"{"qk":1}"#])
        // unevaluatedProperties stands in for additionalProperties.
        try check(#"{"type":"object","properties":{"a":{}},"unevaluatedProperties":{"type":"string"}}"#,
                  accept: [#"{"a":1,"b":"x"}"#], reject: [#"{"a":1,"b":2}"#])
        // Trivial minProperties/maxProperties are allowed.
        try check(#"{"type":"object","properties":{"a":{}},"required":["a"],"minProperties":1,"maxProperties":1}"#, accept: [#"{"a":1}"#], reject: ["{}"])
    }

    @Test func nestedObjectsAndArrays() throws {
        let schema = #"""
        {"type":"object","properties":{
          "user":{"type":"object","properties":{"name":{"type":"string"},"tags":{"type":"array","items":{"type":"string"}}},"required":["name"]},
          "points":{"type":"array","items":{"type":"array","items":{"type":"number"},"minItems":2,"maxItems":2}}},
         "required":["user","points"]}
        """#
        try check(schema, accept: [
            #"{"user":{"name":"a"},"points":[]}"#,
            #"{"user":{"name":"a","tags":["x","y"]},"points":[[1,2],[3.5,-4e2]]}"#,
            "{\n  \"user\": {\n    \"name\": \"a\",\n    \"tags\": []\n  },\n  \"points\": [\n    [\n      1,\n      2\n    ]\n  ]\n}",
        ], reject: [
            #"{"user":{"tags":[]},"points":[]}"#,
            #"{"user":{"name":"a"},"points":[[1]]}"#,
            #"{"user":{"name":"a"},"points":[[1,2,3]]}"#,
            #"{"user":{"name":"a","tags":[1]},"points":[]}"#,
            #"{"points":[],"user":{"name":"a"}}"#,
        ])
    }

    // MARK: References

    @Test func recursiveReferences() throws {
        let list = ##"{"$defs":{"node":{"type":"object","properties":{"value":{"type":"integer"},"next":{"anyOf":[{"$ref":"#/$defs/node"},{"type":"null"}]}},"required":["value","next"]}},"$ref":"#/$defs/node"}"##
        try check(list, accept: [#"{"value":1,"next":null}"#, #"{"value":1,"next":{"value":2,"next":{"value":3,"next":null}}}"#],
                  reject: [#"{"value":1}"#, #"{"value":1,"next":{"value":2}}"#, #"{"value":1,"next":{"value":"x","next":null}}"#])
        let tree = ##"{"type":"object","properties":{"name":{"type":"string"},"children":{"type":"array","items":{"$ref":"#"}}},"required":["name"]}"##
        try check(tree, accept: [#"{"name":"r"}"#, #"{"name":"r","children":[{"name":"a","children":[]},{"name":"b","children":[{"name":"c"}]}]}"#],
                  reject: [#"{"name":"r","children":[{}]}"#, #"{"name":"r","children":[1]}"#])
        // definitions, pointer escapes, percent-encoding, a chain of refs, one rule per target.
        let defs = ##"{"definitions":{"a/b":{"$ref":"#/definitions/c~0d"},"c~d":{"type":"integer","minimum":1}},"type":"array","items":{"$ref":"#/definitions/a~1b"},"prefixItems":[{"$ref":"#/definitions/c%7Ed"}]}"##
        try check(defs, accept: ["[1]", "[1,2,3]", "[]"], reject: ["[0]", "[1,0]"])
        let g = try JSONSchemaGrammar.grammar(schema: try JSON.parse(##"{"$defs":{"x":{"type":"string","maxLength":5}},"type":"array","prefixItems":[{"$ref":"#/$defs/x"},{"$ref":"#/$defs/x"}],"items":{"$ref":"#/$defs/x"}}"##))
        #expect(g.rules.values.filter { $0 == .sequence([.text("\""), .repeat(.rule("char"), min: 0, max: 5), .text("\"")]) }.count == 1)
    }

    @Test func leftRecursionAndBadReferences() {
        #expect(failure(##"{"$ref":"#"}"##)?.contains("left recursion") == true)
        #expect(failure(##"{"$defs":{"a":{"anyOf":[{"$ref":"#/$defs/b"},{"type":"null"}]},"b":{"$ref":"#/$defs/a"}},"$ref":"#/$defs/a"}"##)?.contains("left recursion") == true)
        #expect(failure(##"{"$ref":"#/$defs/missing"}"##)?.contains("#/$defs/missing") == true)
        #expect(failure(##"{"$ref":"other.json#/x"}"##)?.contains("$ref") == true)
        #expect(failure(##"{"$ref":"#anchor"}"##)?.contains("anchor") == true)
    }

    // MARK: enum / const / combinators

    @Test func enumAndConst() throws {
        try check(#"{"enum":["a\"b","c\\d","line\nbreak","é",1,2.5,null,true,{"k":[1,"x"]},[]]}"#,
                  accept: [#""a\"b""#, #""c\\d""#, #""line\nbreak""#, "\"é\"", "1", "2.5", "null", "true", #"{"k":[1,"x"]}"#, "[]"],
                  reject: [#""a"b""#, #""c\d""#, "\"line\nbreak\"", "2", "false", #"{"k":[1]}"#, "\"a\\\"b\"x"])
        try check(#"{"const":"x"}"#, accept: [#""x""#], reject: [#""y""#])
        try check(#"{"const":{"a":1}}"#, accept: [#"{"a":1}"#], reject: [#"{"a":2}"#])
        // type filters the values.
        try check(#"{"type":"string","enum":["a",1]}"#, accept: [#""a""#], reject: ["1"])
        try check(#"{"type":"integer","enum":[1,2.0,2.5]}"#, accept: ["1", "2.0"], reject: ["2.5"])
        try check(#"{"enum":[1,2,3],"const":2}"#, accept: ["2"], reject: ["1"])
        #expect(failure(#"{"type":"string","enum":[1]}"#)?.contains("enum") == true)
        #expect(failure(#"{"enum":[]}"#)?.contains("#/enum") == true)
    }

    @Test func anyOfOneOfAllOf() throws {
        try check(#"{"anyOf":[{"type":"string"},{"type":"integer","minimum":0}],"description":"x"}"#, accept: [#""s""#, "3"], reject: ["-1", "null"])
        try check(#"{"oneOf":[{"type":"boolean"},{"type":"null"}]}"#, accept: ["true", "null"], reject: ["0"])
        try check(#"{"anyOf":[false,{"type":"null"},false]}"#, accept: ["null"], reject: ["1"])
        #expect(failure(#"{"anyOf":[false,false]}"#)?.contains("#/anyOf/1") == true)
        try check(#"{"allOf":[{"type":"integer"}]}"#, accept: ["1"], reject: ["\"a\""])
        try check(##"{"allOf":[{"description":"only words"},{"$ref":"#/$defs/s"},true],"$defs":{"s":{"type":"string"}}}"##, accept: [#""a""#], reject: ["1"])
        try check(##"{"$ref":"#/$defs/s","title":"t","$defs":{"s":{"type":"null"}}}"##, accept: ["null"], reject: ["1"])
        #expect(failure(#"{"allOf":[{"type":"integer"},{"minimum":1}]}"#)?.contains("allOf") == true)
        #expect(failure(#"{"type":"object","anyOf":[{"required":["a"]}]}"#)?.contains("anyOf") == true)
    }

    // MARK: Integers

    @Test func integerRangesAreExact() throws {
        let ranges: [(Int?, Int?)] = [(-15, 130), (7, 7), (0, 0), (0, 99999), (-1000, -1), (10, nil), (nil, -3), (nil, 25), (-9, 9), (1, 1000), (-100, nil), (99, 101)]
        for (lo, hi) in ranges {
            var schema = #"{"type":"integer""#
            if let lo { schema += ",\"minimum\":\(lo)" }
            if let hi { schema += ",\"maximum\":\(hi)" }
            let r = try matcher(schema + "}")
            var values = Set<Int>()
            for edge in [lo, hi, 0].compactMap({ $0 }) { for v in (edge - 40)...(edge + 40) { values.insert(v) } }
            for p in 1...7 { let t = Int(pow10(p)); values.formUnion([t - 1, t, t + 1, -t + 1, -t, -t - 1]) }
            for _ in 0..<200 { values.insert(Int.random(in: -200_000...200_000)) }
            for v in values {
                let inside = (lo.map { v >= $0 } ?? true) && (hi.map { v <= $0 } ?? true)
                #expect(r.accepts(String(v)) == inside, "\(v) in [\(lo.map(String.init) ?? "-inf"), \(hi.map(String.init) ?? "inf")]")
            }
            for bad in ["-0", "00", "007", "+1", "1.0", "1e1", " 1 1"] { #expect(!r.accepts(bad), "\(bad)") }
        }
    }

    @Test func integerRangeExhaustive() throws {
        // Every value of [0, 99999] and its neighbours, straight from the range builder.
        let r = GrammarReference(Grammar(SchemaCompiler.integerRange(0, 99999)!))
        for v in stride(from: -10, through: 100_010, by: 1) where v < 2000 || v > 98_000 || v % 97 == 0 {
            #expect(r.accepts(String(v)) == (0...99999).contains(v), "\(v)")
        }
        let s = GrammarReference(Grammar(SchemaCompiler.integerRange(-15, 130)!))
        for v in -2000...2000 { #expect(s.accepts(String(v)) == (-15...130).contains(v), "\(v)") }
        #expect(SchemaCompiler.integerRange(5, 4) == nil)
        let big = GrammarReference(Grammar(SchemaCompiler.integerRange(Int.min, Int.max)!))
        #expect(big.accepts(String(Int.min)) && big.accepts(String(Int.max)) && !big.accepts("-0"))
    }

    @Test func exclusiveAndFractionalIntegerBounds() throws {
        let cases: [(String, ClosedRange<Int>)] = [
            (#""exclusiveMinimum":0,"exclusiveMaximum":10"#, 1...9),
            (#""minimum":-2.5,"maximum":3.5"#, -2...3),
            (#""exclusiveMinimum":-2.5,"exclusiveMaximum":3.0"#, -2...2),
            (#""minimum":5,"exclusiveMinimum":true"#, 6...Int.max),
            (#""minimum":1,"exclusiveMinimum":3"#, 4...Int.max),
            (#""maximum":0,"exclusiveMaximum":true,"minimum":-3"#, -3...(-1)),
        ]
        for (bounds, range) in cases {
            let r = try matcher("{\"type\":\"integer\",\(bounds)}")
            for v in -60...60 { #expect(r.accepts(String(v)) == range.contains(v), "\(bounds): \(v)") }
        }
        #expect(failure(#"{"type":"integer","minimum":3,"maximum":2}"#)?.contains("no integer") == true)
        #expect(failure(#"{"type":"integer","minimum":1e30}"#)?.contains("#/minimum") == true)
    }

    // MARK: Numbers

    @Test func numberBoundsAreExact() throws {
        let cases: [(String, (Double) -> Bool)] = [
            (#""minimum":0"#, { $0 >= 0 }),
            (#""exclusiveMinimum":0"#, { $0 > 0 }),
            (#""minimum":0,"maximum":1"#, { $0 >= 0 && $0 <= 1 }),
            (#""minimum":-90,"maximum":90"#, { $0 >= -90 && $0 <= 90 }),
            (#""exclusiveMinimum":-1,"exclusiveMaximum":2"#, { $0 > -1 && $0 < 2 }),
            (#""maximum":-2"#, { $0 <= -2 }),
            (#""exclusiveMaximum":-2"#, { $0 < -2 }),
            (#""minimum":3,"maximum":3"#, { $0 == 3 }),
            (#""exclusiveMinimum":3,"maximum":4"#, { $0 > 3 && $0 <= 4 }),
            (#""minimum":0,"exclusiveMaximum":0.0"#, { _ in false }),
        ]
        var candidates: [String] = []
        for i in ["0", "1", "2", "3", "4", "9", "10", "89", "90", "91", "100"] {
            for f in ["", ".0", ".00", ".5", ".01", ".99", ".000001", ".10"] { candidates += [i + f, "-" + i + f] }
        }
        for (bounds, inside) in cases {
            if bounds.contains("exclusiveMaximum\":0.0") {
                #expect(failure("{\"type\":\"number\",\(bounds)}")?.contains("no number") == true)
                continue
            }
            let r = try matcher("{\"type\":\"number\",\(bounds)}")
            for c in candidates {
                let v = Double(c)!
                // Zero with a minus sign is left out (a subset: still valid).
                let expected = inside(v) && !(c.hasPrefix("-") && v == 0)
                #expect(r.accepts(c) == expected, "\(bounds): \(c)")
            }
            for bad in ["1e0", "01", ".5", "1."] { #expect(!r.accepts(bad), "\(bounds): \(bad)") }
        }
        #expect(failure(#"{"type":"number","minimum":0.5}"#)?.contains("minimum") == true)
        #expect(failure(#"{"type":"number","multipleOf":2}"#)?.contains("'multipleOf'") == true)
    }

    // MARK: Strings

    @Test func stringLengths() throws {
        try check(#"{"type":"string","minLength":2,"maxLength":3}"#,
                  accept: [#""ab""#, #""abc""#, #""\n\"""#, #""\u00e9x""#, "\"é😀\"", #""\uD83D\uDE00x""#, "\"日本語\""],
                  reject: [#""a""#, #""abcd""#, #""\n""#, "\"😀\"", "\"日本語x\"", #""\uD83D\uDE00""#])
        try check(#"{"type":"string","maxLength":0}"#, accept: [#""""#], reject: [#""a""#])
        try check(#"{"type":"string","minLength":1}"#, accept: [#""a""#, #""abcdefgh""#], reject: [#""""#])
        #expect(failure(#"{"type":"string","maxLength":100000}"#)?.contains("#/maxLength") == true)
        #expect(failure(#"{"type":"string","minLength":3,"maxLength":2}"#)?.contains("maxLength") == true)
        #expect(failure(#"{"type":"string","maxLength":-1}"#)?.contains("maxLength") == true)
    }

    @Test func formats() throws {
        try check(#"{"type":"string","format":"date"}"#,
                  accept: [#""2024-02-29""#, #""2000-02-29""#, #""1999-12-31""#, #""2023-04-30""#, #""0000-02-29""#, #""1996-02-29""#],
                  reject: [#""2023-02-29""#, #""1900-02-29""#, #""2023-04-31""#, #""2023-13-01""#, #""2023-00-10""#, #""2023-01-00""#, #""2023-1-01""#, #""2023-02-30""#])
        try check(#"{"type":"string","format":"time"}"#, accept: [#""23:59:59Z""#, #""00:00:00.123+05:30""#, #""12:30:00-08:00""#],
                  reject: [#""24:00:00Z""#, #""12:60:00Z""#, #""12:00:00""#, #""12:00Z""#])
        try check(#"{"type":"string","format":"date-time"}"#, accept: [#""2024-01-15T10:20:30Z""#, #""2024-01-15T10:20:30.5+01:00""#],
                  reject: [#""2024-01-15 10:20:30Z""#, #""2024-01-15T10:20:30""#])
        try check(#"{"type":"string","format":"uuid"}"#, accept: [#""123e4567-e89b-12d3-a456-426614174000""#, #""123E4567-E89B-12D3-A456-426614174000""#],
                  reject: [#""123e4567e89b12d3a456426614174000""#, #""123e4567-e89b-12d3-a456-42661417400g""#])
        try check(#"{"type":"string","format":"email"}"#, accept: [#""a.b+c@example.com""#, #""x@a-b.co.uk""#, #""o'neil/x@d.io""#, #""o'neil\/x@d.io""#],
                  reject: [#""a@b""#, #""@b.com""#, #""a..b@c.com""#, #""a@-b.com""#, #""a b@c.com""#])
        try check(#"{"type":"string","format":"ipv4"}"#, accept: [#""0.0.0.0""#, #""255.255.255.255""#, #""192.168.1.10""#],
                  reject: [#""256.1.1.1""#, #""01.1.1.1""#, #""1.1.1""#])
        try check(#"{"type":"string","format":"uri"}"#,
                  accept: [#""https://example.com/a/b?x=1&y=%20#frag""#, #""mailto:a@b.c""#, #""urn:isbn:0451450523""#, #""http://u:p@h:8080/""#, #""http:\/\/x""#, #""file:///tmp/x""#],
                  reject: [#""example.com""#, #""http://exa mple.com""#, #""1http://x""#, #""http://h:port/""#, #""http://x/%zz""#])
        #expect(failure(#"{"type":"string","format":"hostname"}"#)?.contains("'format' \"hostname\"") == true)
        // Lengths that a format implies are allowed; others are not.
        try check(#"{"type":"string","format":"uuid","minLength":36,"maxLength":36}"#, accept: [#""123e4567-e89b-12d3-a456-426614174000""#], reject: [])
        #expect(failure(#"{"type":"string","format":"email","maxLength":20}"#)?.contains("maxLength") == true)
    }

    @Test func patterns() throws {
        // Anchors with an empty body need no regular expression.
        try check(#"{"type":"string","pattern":"^$"}"#, accept: [#""""#], reject: [#""a""#])
        try check(#"{"type":"string","pattern":""}"#, accept: [#""""#, #""any \"thing\" é""#], reject: ["\"a\nb\""])
        #expect(SchemaCompiler.topLevelAlternatives("^a|b$") == ["^a", "b$"])
        #expect(SchemaCompiler.topLevelAlternatives(#"(a|b)|[|\]]|\|x"#) == ["(a|b)", #"[|\]]"#, #"\|x"#])
        #expect(SchemaCompiler.topLevelAlternatives("[]|]|x") == ["[]|]", "x"])
        if (try? RegexGrammar.expression("abc")) != nil {
            try check(#"{"type":"string","pattern":"^abc$"}"#, accept: [#""abc""#], reject: [#""abcd""#, #""xabc""#])
            try check(#"{"type":"string","pattern":"abc"}"#, accept: [#""abc""#, #""xxabcyy""#], reject: [#""ab""#])
            try check(#"{"type":"string","pattern":"^ab|cd$"}"#, accept: [#""abx""#, #""xcd""#], reject: [#""xab""#, #""cdx""#])
            try check(#"{"type":"string","pattern":"^x\\$"}"#, accept: [#""x$""#, #""x$yz""#], reject: [#""x""#])
            try check(#"{"type":"string","pattern":"^\\d{3}-[a-z\"]{2}$","maxLength":6,"minLength":6}"#,
                      accept: [#""123-ab""#, #""123-\"a""#], reject: [#""123-a"b""#, #""12-ab""#])
            try check(#"{"type":"string","pattern":"^(?:[^\\n]|é)$"}"#, accept: ["\"é\"", #""\"""#, #""\u0001""#, #""\t""#], reject: [#""\n""#, #""ab""#])
            #expect(failure(#"{"type":"string","pattern":"^\\d{3}$","maxLength":2}"#)?.contains("maxLength") == true)
            #expect(failure(#"{"type":"string","pattern":"\\d{3}","maxLength":5}"#)?.contains("maxLength") == true)
            #expect(failure(#"{"type":"string","pattern":"^(a$"}"#)?.contains("#/pattern") == true)
        } else {
            #expect(failure(#"{"type":"string","pattern":"^a+$"}"#)?.contains("#/pattern") == true)
        }
    }

    @Test func escapedForJSONString() {
        let e = JSONSchemaGrammar.escapedForJSONString(.sequence([.text("a\"b\\/"), .bytes(ByteSet([0x0A, 0x01, 0x41])), .anyScalar]))
        let r = GrammarReference(Grammar(e))
        for yes in [#"a\"b\\/\nx"#, #"a\u0022b\u005C\/Aé"#, #"a\"b\\/\u000aZ"#, #"a\"b\\/\u0001\t"#, #"a\"b\\/\u000A\u001F"#] { #expect(r.accepts(yes), "\(yes)") }
        for no in ["a\"b\\/\nx", #"a"b\\/Ax"#, #"a\"b\\/\u0041x"#, #"a\"b\\/\x01x"#, #"a\"b\\/A""#, #"a\"b\\/A\u00e9"#] { #expect(!r.accepts(no), "\(no)") }
    }

    // MARK: Arrays

    @Test func arrays() throws {
        try check(#"{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}"#, accept: ["[1]", "[1,2,3]", "[ 1 , 2 ]"], reject: ["[]", "[1,2,3,4]", "[1,]", "[,1]"])
        try check(#"{"type":"array"}"#, accept: ["[]", #"[1,"a",[{}]]"#], reject: ["[", "[1 2]"])
        try check(#"{"type":"array","items":false}"#, accept: ["[]", "[ ]"], reject: ["[1]"])
        try check(#"{"type":"array","maxItems":0}"#, accept: ["[]"], reject: ["[1]"])
        let tuple = #"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"},{"type":"boolean"}],"items":false}"#
        try check(tuple, accept: ["[]", #"["a"]"#, #"["a",1]"#, #"["a",1,true]"#], reject: [#"[1]"#, #"["a",1,true,null]"#, #"["a",true]"#, #"[,"a"]"#])
        try check(#"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"items":{"type":"null"},"minItems":2}"#,
                  accept: [#"["a",1]"#, #"["a",1,null,null]"#], reject: [#"["a"]"#, #"["a",1,2]"#])
        try check(#"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"minItems":3,"maxItems":4}"#,
                  accept: [#"["a",1,{}]"#, #"["a",1,{},[]]"#], reject: [#"["a",1]"#, #"["a",1,2,3,4]"#])
        try check(#"{"type":"array","prefixItems":[{"type":"string"},{"type":"integer"}],"maxItems":1}"#, accept: ["[]", #"["a"]"#], reject: [#"["a",1]"#])
        try check(#"{"type":"array","prefixItems":[{"type":"string"},false]}"#, accept: ["[]", #"["a"]"#], reject: [#"["a",1]"#])
        // Draft 4 tuples.
        try check(#"{"type":"array","items":[{"type":"integer"}],"additionalItems":{"type":"string"}}"#, accept: ["[1]", #"[1,"x","y"]"#], reject: [#"["x"]"#, "[1,2]"])
        try check(#"{"type":"array","uniqueItems":false,"items":{"type":"null"}}"#, accept: ["[null,null]"], reject: [])
        #expect(failure(#"{"type":"array","prefixItems":[{}],"items":false,"minItems":2}"#)?.contains("minItems") == true)
        #expect(failure(#"{"type":"array","uniqueItems":true}"#)?.contains("'uniqueItems'") == true)
        #expect(failure(#"{"type":"array","contains":{}}"#)?.contains("'contains'") == true)
    }

    // MARK: anyJSON

    @Test func anyJSON() throws {
        let any = GrammarReference(JSONSchemaGrammar.anyJSON(objectOnly: false))
        let objects = GrammarReference(JSONSchemaGrammar.anyJSON(objectOnly: true))
        try GrammarChecks.check(JSONSchemaGrammar.anyJSON(objectOnly: false))
        for text in ["1", "\"x\"", "[1,{\"a\":null}]", " {\"a\" : [true, false]}", "-0.5e3"] { #expect(any.accepts(text), "\(text)") }
        for text in ["{", "[1,]", "'x'", "{\"a\"}", "1 2", "", "{}\n"] { #expect(!any.accepts(text), "\(text)") }
        #expect(objects.accepts("{}") && objects.accepts("{\"a\":{\"b\":[1]}}") && objects.accepts("\n{ }"))
        #expect(!objects.accepts("[]") && !objects.accepts("1") && !objects.accepts("\"{}\""))
    }

    // MARK: Errors

    @Test func errorsNameKeywordAndPath() {
        let cases: [(String, [String])] = [
            (#"{"type":"object","properties":{"tags":{"type":"array","uniqueItems":true}}}"#, ["'uniqueItems'", "#/properties/tags"]),
            (#"{"type":"object","properties":{"age":{"type":"number","multipleOf":5}}}"#, ["'multipleOf'", "#/properties/age"]),
            (#"{"type":"object","properties":{"a/b":{"not":{}}}}"#, ["'not'", "#/properties/a~1b"]),
            (##"{"$defs":{"x":{"if":{}}},"$ref":"#/$defs/x"}"##, ["'if'", "#/$defs/x"]),
            (#"{"type":"object","patternProperties":{"a":{}}}"#, ["'patternProperties'", "#"]),
            (#"{"type":"object","properties":{"a":{}},"minProperties":2}"#, ["'minProperties'", "#/minProperties"]),
            (#"{"type":"object","additionalProperties":false,"required":["x"]}"#, ["\"x\"", "#/required"]),
            (#"{"anyOf":[{"type":"string"},{"type":"nope"}]}"#, ["nope", "#/anyOf/1/type"]),
            (#"{"type":"string","format":"ipv6"}"#, ["'format'", "#/format"]),
            (##"{"type":"object","properties":{"p":{"type":"string","$ref":"#/$defs/x"}},"$defs":{"x":{}}}"##, ["'type'", "'$ref'", "#/properties/p"]),
            (#"{"nullable":true}"#, ["'nullable'", "#"]),
            (#"{"type":"object","properties":{"a":false},"required":["a"]}"#, ["#/properties/a"]),
            ("false", ["false", "#"]),
            ("1", ["schema must be"]),
            (#"{"type":"array","items":{"type":"array","maxItems":20000}}"#, ["'maxItems'", "#/items/maxItems"]),
        ]
        for (schema, parts) in cases {
            let message = failure(schema)
            #expect(message != nil, "\(schema) should fail")
            for p in parts { #expect(message?.contains(p) == true, "\(schema): \(message ?? "no error") should mention \(p)") }
        }
    }

    @Test func deepNestingIsRefused() {
        var schema = #"{"type":"integer"}"#
        for _ in 0..<50 { schema = #"{"type":"array","items":"# + schema + "}" }
        #expect(failure(schema) == nil)
        // A chain of 200 references (each followed nests one level deeper).
        let defs = (0..<200).map { ##""d\##($0)":{"$ref":"#/$defs/d\##($0 + 1)"}"## }.joined(separator: ",")
        let chain = #"{"$defs":{"# + defs + ##","d200":{"type":"null"}},"$ref":"#/$defs/d0"}"##
        #expect(failure(chain)?.contains("deeply") == true)
    }

    // MARK: Randomized

    @Test func randomSchemasAcceptTheirValuesAndRejectMutations() throws {
        var rng = SplitMix(seed: 0x5EED)
        var checkedMutations = 0
        for round in 0..<60 {
            let shape = Shape.random(&rng, depth: 0)
            let schemaText = shape.schema()
            let r = try matcher(schemaText)
            for _ in 0..<4 {
                let value = shape.value(&rng)
                let compact = Serial.compact(value)
                let pretty = Serial.pretty(value, indent: 0)
                #expect(r.accepts(compact), "round \(round): \(schemaText) should accept \(compact)")
                #expect(r.accepts(pretty), "round \(round): \(schemaText) should accept pretty \(pretty)")
                if let bad = shape.mutated(value, &rng) {
                    checkedMutations += 1
                    #expect(!r.accepts(Serial.compact(bad)), "round \(round): \(schemaText) should reject \(Serial.compact(bad))")
                }
            }
        }
        #expect(checkedMutations > 50)
    }
}

private func pow10(_ p: Int) -> Double { (0..<p).reduce(1.0) { r, _ in r * 10 } }

// MARK: - Random schemas and values

private struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// A value to serialize: numbers kept as their text.
private indirect enum Value {
    case null, bool(Bool), number(String), string(String), array([Value]), object([(String, Value)])
}

private enum Serial {
    static func quote(_ s: String) -> String {
        var out = "\""
        for c in s.unicodeScalars {
            switch c {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\t": out += "\\t"
            default: out.unicodeScalars.append(c)
            }
        }
        return out + "\""
    }

    static func compact(_ v: Value) -> String {
        switch v {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n
        case .string(let s): return quote(s)
        case .array(let items): return "[" + items.map(compact).joined(separator: ",") + "]"
        case .object(let members): return "{" + members.map { quote($0.0) + ":" + compact($0.1) }.joined(separator: ",") + "}"
        }
    }

    /// Two-space indentation, like `json.dumps(indent=2)`.
    static func pretty(_ v: Value, indent: Int) -> String {
        let pad = String(repeating: " ", count: indent + 2), end = String(repeating: " ", count: indent)
        switch v {
        case .array(let items) where !items.isEmpty:
            return "[\n" + items.map { pad + pretty($0, indent: indent + 2) }.joined(separator: ",\n") + "\n" + end + "]"
        case .object(let members) where !members.isEmpty:
            return "{\n" + members.map { pad + quote($0.0) + ": " + pretty($0.1, indent: indent + 2) }.joined(separator: ",\n") + "\n" + end + "}"
        default:
            return compact(v)
        }
    }
}

private indirect enum Shape {
    case string(maxLength: Int?)
    case integer(lo: Int?, hi: Int?)
    case number
    case boolean
    case null
    case stringEnum([String])
    case object([(String, Shape, Bool)])
    case array(Shape, min: Int, max: Int?)
    case stringOrInteger

    static let alphabet: [String] = ["a", "b", "Z", " ", "\"", "\\", "\n", "é", "😀", "/", "{", "1"]

    static func random(_ rng: inout SplitMix, depth: Int) -> Shape {
        let pick = Int.random(in: 0..<(depth >= 2 ? 7 : 9), using: &rng)
        switch pick {
        case 0: return .string(maxLength: Bool.random(using: &rng) ? Int.random(in: 0...4, using: &rng) : nil)
        case 1:
            let lo: Int? = Bool.random(using: &rng) ? Int.random(in: -50...50, using: &rng) : nil
            let hi: Int? = Bool.random(using: &rng) ? (lo ?? -50) + Int.random(in: 0...200, using: &rng) : nil
            return .integer(lo: lo, hi: hi)
        case 2: return .number
        case 3: return .boolean
        case 4: return .null
        case 5: return .stringEnum((0..<Int.random(in: 1...3, using: &rng)).map { i in "v\(i)" + alphabet[Int.random(in: 0..<alphabet.count, using: &rng)] })
        case 6: return .stringOrInteger
        case 7:
            let n = Int.random(in: 0...4, using: &rng)
            return .object((0..<n).map { i in ("k\(i)", random(&rng, depth: depth + 1), Bool.random(using: &rng)) })
        default:
            let lo = Int.random(in: 0...2, using: &rng)
            return .array(random(&rng, depth: depth + 1), min: lo, max: Bool.random(using: &rng) ? lo + Int.random(in: 0...2, using: &rng) : nil)
        }
    }

    func schema() -> String {
        switch self {
        case .string(let max): return max.map { #"{"type":"string","maxLength":\#($0)}"# } ?? #"{"type":"string"}"#
        case .integer(let lo, let hi):
            return #"{"type":"integer""# + (lo.map { ",\"minimum\":\($0)" } ?? "") + (hi.map { ",\"maximum\":\($0)" } ?? "") + "}"
        case .number: return #"{"type":"number"}"#
        case .boolean: return #"{"type":"boolean"}"#
        case .null: return #"{"type":"null"}"#
        case .stringEnum(let values): return #"{"enum":["# + values.map(Serial.quote).joined(separator: ",") + "]}"
        case .stringOrInteger: return #"{"anyOf":[{"type":"string"},{"type":"integer"}]}"#
        case .object(let props):
            let p = props.map { Serial.quote($0.0) + ":" + $0.1.schema() }.joined(separator: ",")
            let req = props.filter(\.2).map { Serial.quote($0.0) }.joined(separator: ",")
            return #"{"type":"object","properties":{"# + p + #"},"required":["# + req + "]}"
        case .array(let item, let lo, let hi):
            return #"{"type":"array","items":"# + item.schema() + ",\"minItems\":\(lo)" + (hi.map { ",\"maxItems\":\($0)" } ?? "") + "}"
        }
    }

    func value(_ rng: inout SplitMix) -> Value {
        switch self {
        case .string(let max):
            let n = Int.random(in: 0...(max ?? 5), using: &rng)
            return .string((0..<n).map { _ in Shape.alphabet[Int.random(in: 0..<Shape.alphabet.count, using: &rng)] }.joined())
        case .integer(let lo, let hi):
            let a = lo ?? (hi.map { $0 - 300 } ?? -300), b = hi ?? (a + 300)
            return .number(String(Int.random(in: a...b, using: &rng)))
        case .number:
            return .number(["0", "-1.5", "3e8", "12.25", "-0.001", "7E-2"][Int.random(in: 0..<6, using: &rng)])
        case .boolean: return .bool(Bool.random(using: &rng))
        case .null: return .null
        case .stringEnum(let values): return .string(values[Int.random(in: 0..<values.count, using: &rng)])
        case .stringOrInteger: return Bool.random(using: &rng) ? .string("s") : .number("-12")
        case .object(let props):
            return .object(props.compactMap { p in p.2 || Bool.random(using: &rng) ? (p.0, p.1.value(&rng)) : nil })
        case .array(let item, let lo, let hi):
            return .array((0..<Int.random(in: lo...(hi ?? lo + 2), using: &rng)).map { _ in item.value(&rng) })
        }
    }

    /// An invalid variant of `v` (a required key dropped, a value of the wrong type, one item
    /// too many or too few), or nil when none was made.
    func mutated(_ v: Value, _ rng: inout SplitMix) -> Value? {
        switch (self, v) {
        case (.object(let props), .object(var members)):
            if let i = props.firstIndex(where: \.2), Bool.random(using: &rng) {
                members.removeAll { $0.0 == props[i].0 }
                return .object(members)
            }
            if !members.isEmpty {
                let j = Int.random(in: 0..<members.count, using: &rng)
                let shape = props.first { $0.0 == members[j].0 }!.1
                if let bad = shape.mutated(members[j].1, &rng) {
                    members[j].1 = bad
                    return .object(members)
                }
            }
            return nil
        case (.array(let item, let lo, let hi), .array(var items)):
            if let hi, items.count == hi, Bool.random(using: &rng) { return .array(items + [item.value(&rng)]) }
            if items.count == lo, lo > 0 { return .array(Array(items.dropLast())) }
            if !items.isEmpty, let bad = item.mutated(items[0], &rng) { items[0] = bad; return .array(items) }
            return nil
        case (.string(let max), _):
            if let max, Bool.random(using: &rng) { return .string(String(repeating: "x", count: max + 1)) }
            return .number("1")
        case (.integer(let lo, let hi), _):
            if let lo, Bool.random(using: &rng) { return .number(String(lo - 1)) }
            if let hi { return .number(String(hi + 1)) }
            return .number("1.5")
        case (.number, _), (.boolean, _), (.null, _), (.stringOrInteger, _):
            return .object([])
        case (.stringEnum(let values), _):
            return .string(values.joined() + "?")
        default:
            return nil
        }
    }
}

/// Unbounded numbers stop at the digits a double (or an Int64) holds: a model cannot write digits forever.
@Suite struct JSONNumberDigitTests {
    @Test func unboundedNumbersAndIntegersHaveBoundedDigits() throws {
        let numbers = GrammarReference(try JSONSchemaGrammar.grammar(schema: try JSON.parse(#"{"type": "number"}"#, source: "t")))
        #expect(numbers.accepts(String(repeating: "9", count: 16)) && !numbers.accepts(String(repeating: "9", count: 17)))
        #expect(numbers.accepts("-1." + String(repeating: "5", count: 16) + "e-308") && !numbers.accepts("1." + String(repeating: "5", count: 17)))
        #expect(!numbers.accepts("1e1000"))
        let integers = GrammarReference(try JSONSchemaGrammar.grammar(schema: try JSON.parse(#"{"type": "integer"}"#, source: "t")))
        #expect(integers.accepts("-" + String(repeating: "9", count: 19)) && !integers.accepts("1" + String(repeating: "0", count: 19)))
    }
}
