import Foundation

/// Writes a GGUF v3 file with metadata only (no tensors), for loader tests.
struct GGUFWriter {
    enum Value {
        case u32(UInt32), i32(Int32), f32(Float), bool(Bool), string(String)
        case strings([String]), floats([Float]), ints([Int32])
    }

    var entries: [(String, Value)] = []

    mutating func add(_ key: String, _ value: Value) { entries.append((key, value)) }

    func bytes() -> [UInt8] {
        var out: [UInt8] = []
        func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { out += $0 } }
        func str(_ s: String) { u64(UInt64(s.utf8.count)); out += Array(s.utf8) }
        u32(0x4655_4747)
        u32(3)
        u64(0)
        u64(UInt64(entries.count))
        for (key, value) in entries {
            str(key)
            switch value {
            case .u32(let v): u32(4); u32(v)
            case .i32(let v): u32(5); u32(UInt32(bitPattern: v))
            case .f32(let v): u32(6); u32(v.bitPattern)
            case .bool(let v): u32(7); out.append(v ? 1 : 0)
            case .string(let s): u32(8); str(s)
            case .strings(let a): u32(9); u32(8); u64(UInt64(a.count)); a.forEach(str)
            case .floats(let a): u32(9); u32(6); u64(UInt64(a.count)); a.forEach { u32($0.bitPattern) }
            case .ints(let a): u32(9); u32(5); u64(UInt64(a.count)); a.forEach { u32(UInt32(bitPattern: $0)) }
            }
        }
        return out
    }

    /// Writes the file into a fresh temporary directory; returns its path.
    func write(name: String = "test.gguf") throws -> String {
        let dir = NSTemporaryDirectory() + "vtensor-tok-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let path = dir + "/" + name
        try Data(bytes()).write(to: URL(fileURLWithPath: path))
        return path
    }
}

/// A temporary file with the given contents.
func temporaryFile(_ name: String, _ contents: [UInt8]) throws -> String {
    let dir = NSTemporaryDirectory() + "vtensor-tok-\(UInt32.random(in: 0...UInt32.max))"
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    let path = dir + "/" + name
    try Data(contents).write(to: URL(fileURLWithPath: path))
    return path
}

func temporaryFile(_ name: String, _ text: String) throws -> String { try temporaryFile(name, Array(text.utf8)) }
