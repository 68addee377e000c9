import Foundation
import Models
import XCTest
@testable import Runtime

/// Bad files reach the user as errors that name the file and the problem, through the same
/// `LoadedModel.open` the CLI uses.
final class BadInputTests: XCTestCase {
    private func copyOfGolden(_ name: String) throws -> String {
        let target = NSTemporaryDirectory() + "vtensor-bad-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.copyItem(atPath: GoldenTests.directory + "/" + name, toPath: target)
        addTeardownBlock { try? FileManager.default.removeItem(atPath: target) }
        return target
    }

    func testTruncatedSafetensors() throws {
        let dir = try copyOfGolden("llama3")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/model.safetensors"))
        try handle.truncate(atOffset: 100_000)
        try handle.close()
        XCTAssertThrowsError(try LoadedModel.open(dir)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("model.safetensors") && text.contains("data region"), text)
        }
    }

    func testConfigMissingARequiredField() throws {
        let dir = try copyOfGolden("qwen2")
        let path = dir + "/config.json"
        var config = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: path))) as! [String: Any]
        config.removeValue(forKey: "num_hidden_layers")
        try JSONSerialization.data(withJSONObject: config).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try LoadedModel.open(dir)) { error in
            XCTAssertTrue("\(error)".contains("config.json") && "\(error)".contains("num_hidden_layers"), "\(error)")
        }
    }

    func testMissingTensorAndMissingPath() throws {
        XCTAssertThrowsError(try LoadedModel.open("/nonexistent/model.gguf")) { error in
            XCTAssertTrue("\(error)".contains("no such file"), "\(error)")
        }
        XCTAssertThrowsError(try LoadedModel.open("no-such-preset", format: .dummy)) { error in
            XCTAssertTrue("\(error)".contains("not a preset"), "\(error)")
        }
    }

    func testDummyPresetsAreValidConfigs() throws {
        for name in ModelPresets.names { XCTAssertNotNil(ModelPresets.config(named: name), name) }
        XCTAssertEqual(ModelPresets.config(named: "yi-34b")?.numAttentionHeads, 56)
    }
}
