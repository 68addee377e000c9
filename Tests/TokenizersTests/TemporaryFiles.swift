import Foundation

/// A temporary file with the given contents.
func temporaryFile(_ name: String, _ contents: [UInt8]) throws -> String {
    let dir = NSTemporaryDirectory() + "vtensor-tok-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/" + name
    try Data(contents).write(to: URL(fileURLWithPath: path))
    return path
}

func temporaryFile(_ name: String, _ text: String) throws -> String { try temporaryFile(name, Array(text.utf8)) }
