import Foundation
import Models
import XCTest
@testable import Runtime

final class GenerationConfigTests: XCTestCase {
    private func decode(_ json: String, path: String = "/m/generation_config.json") throws -> GenerationConfig {
        try GenerationConfig.decode(Data(json.utf8), path: path)
    }

    func testSmolLM2StyleConfig() throws {
        let c = try decode(#"{"_from_model_config": true, "bos_token_id": 1, "eos_token_id": 2, "transformers_version": "4.42.3"}"#)
        XCTAssertEqual(c.bosTokenId, 1)
        XCTAssertEqual(c.eosTokenIds, [2])
        XCTAssertNil(c.temperature)
        XCTAssertEqual(c.samplingDefaults(), SamplingParameters())
    }

    func testLlama3StyleConfigWithEOSList() throws {
        let c = try decode("""
            {"bos_token_id": 128000, "do_sample": true, "eos_token_id": [128001, 128008, 128009],
             "temperature": 0.6, "top_p": 0.9, "transformers_version": "4.45.0.dev0"}
            """)
        XCTAssertEqual(c.eosTokenIds, [128001, 128008, 128009])
        XCTAssertEqual(c.doSample, true)
        let p = c.samplingDefaults()
        XCTAssertEqual(p.temperature, 0.6)
        XCTAssertEqual(p.topP, 0.9)
        XCTAssertEqual(p.topK, 0)
    }

    func testQwenStyleConfig() throws {
        let c = try decode("""
            {"bos_token_id": 151643, "pad_token_id": 151643, "do_sample": true, "eos_token_id": [151645, 151643],
             "repetition_penalty": 1.05, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "min_p": 0.0}
            """)
        XCTAssertEqual(c.padTokenId, 151643)
        let p = c.samplingDefaults()
        XCTAssertEqual(p, SamplingParameters(temperature: 0.7, topK: 20, topP: 0.8, minP: 0, repetitionPenalty: 1.05))
        try p.validate()
    }

    func testDoSampleFalseMeansGreedy() throws {
        let c = try decode(#"{"do_sample": false, "temperature": 0.9, "max_new_tokens": 64}"#)
        let p = c.samplingDefaults()
        XCTAssertTrue(p.isGreedy)
        XCTAssertEqual(p.maxTokens, 64)
    }

    func testMaxLengthCountsThePrompt() throws {
        let c = try decode(#"{"max_length": 100}"#)
        XCTAssertEqual(c.maxTokens(promptLength: 30), 70)
        XCTAssertEqual(c.maxTokens(promptLength: 130), 0)
        XCTAssertNil(c.samplingDefaults().maxTokens)
        XCTAssertEqual(try decode(#"{"max_length": 100, "max_new_tokens": 8}"#).maxTokens(promptLength: 30), 8)
        XCTAssertNil(try decode("{}").maxTokens(promptLength: 3))
    }

    func testNullsAreAbsent() throws {
        let c = try decode(#"{"eos_token_id": null, "temperature": null, "bos_token_id": null}"#)
        XCTAssertEqual(c, GenerationConfig())
    }

    func testDefaultsFeedRequestDecoding() throws {
        let defaults = try decode(#"{"temperature": 0.7, "top_k": 20}"#).samplingDefaults()
        let decoder = JSONDecoder()
        decoder.userInfo[SamplingParameters.defaultsKey] = defaults
        let request = try decoder.decode(SamplingParameters.self, from: Data(#"{"top_k": 5}"#.utf8))
        XCTAssertEqual(request.temperature, 0.7)
        XCTAssertEqual(request.topK, 5)
    }

    func testMalformedFilesNameThePathAndTheProblem() {
        let cases: [(String, String)] = [
            ("{not json", "not valid JSON"),
            ("[1, 2]", "not a JSON object"),
            (#"{"top_k": "forty"}"#, "top_k"),
            (#"{"eos_token_id": "2"}"#, "eos_token_id"),
            (#"{"temperature": -1}"#, "temperature must be >= 0"),
            (#"{"top_p": 1.5}"#, "top_p must be in (0, 1]"),
            (#"{"top_k": -5}"#, "top_k"),
            (#"{"repetition_penalty": 0}"#, "repetition_penalty"),
            (#"{"eos_token_id": [2, -1]}"#, "eos_token_id"),
        ]
        for (json, expected) in cases {
            XCTAssertThrowsError(try decode(json, path: "/models/x/generation_config.json"), json) { error in
                guard let error = error as? ModelFileError else { return XCTFail("\(error)") }
                XCTAssertEqual(error.path, "/models/x/generation_config.json")
                XCTAssertTrue(error.description.contains(expected), "\(error) should mention \(expected)")
            }
        }
    }

    func testLoadFromDisk() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-genconfig-\(getpid())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // Missing: empty defaults.
        XCTAssertEqual(try GenerationConfig.load(directory: dir), GenerationConfig())
        let path = dir + "/generation_config.json"
        try Data(#"{"eos_token_id": [7, 8], "top_p": 0.5}"#.utf8).write(to: URL(fileURLWithPath: path))
        let c = try GenerationConfig.load(directory: dir + "/")
        XCTAssertEqual(c.eosTokenIds, [7, 8])
        XCTAssertEqual(c.topP, 0.5)
        try Data("{oops".utf8).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try GenerationConfig.load(path: path)) { error in
            XCTAssertTrue("\(error)".hasPrefix(path), "\(error)")
        }
    }
}
