#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Testing
@testable import Models
import GGUFTestSupport

func expectModelFileError(_ bytes: [UInt8], containing text: String, sourceLocation: SourceLocation = #_sourceLocation) {
    let path = writeGGUF(bytes)
    defer { unlink(path) }
    do {
        _ = try GGUFFile(path: path)
        Issue.record("expected an error containing \"\(text)\"", sourceLocation: sourceLocation)
    } catch let e as ModelFileError {
        #expect(e.path == path, sourceLocation: sourceLocation)
        #expect(e.problem.contains(text), "\(e.problem)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("unexpected error \(error)", sourceLocation: sourceLocation)
    }
}

let everyValueType: [(String, GGUFValue)] = [
    ("general.architecture", .string("llama")),
    ("t.u8", .uint8(200)), ("t.i8", .int8(-100)), ("t.u16", .uint16(60000)), ("t.i16", .int16(-30000)),
    ("t.u32", .uint32(4_000_000_000)), ("t.i32", .int32(-2_000_000_000)), ("t.f32", .float32(1.5)),
    ("t.bool", .bool(true)), ("t.false", .bool(false)), ("t.u64", .uint64(1 << 40)), ("t.i64", .int64(-(1 << 40))),
    ("t.f64", .float64(-0.125)), ("t.empty", .string("")), ("t.utf8", .string("héllo ▁world")),
    ("tokenizer.ggml.tokens", .array([.string("<s>"), .string("a"), .string("▁b")])),
    ("t.scores", .array([.float32(-1), .float32(0.5)])),
    ("t.ids", .array([.int32(1), .int32(-2), .int32(3)])),
    ("t.bytes", .array([.uint8(1), .uint8(2)])),
    ("t.nested", .array([.array([.uint64(1)]), .array([.uint64(2), .uint64(3)])])),
    ("t.none", .array([])),
]

@Test(arguments: [UInt32(2), 3]) func metadataOfEveryTypeRoundTrips(version: UInt32) throws {
    var w = GGUFTestWriter()
    w.version = version
    w.metadata = everyValueType
    let g = try GGUFFile(path: writeGGUF(w.bytes()))
    #expect(g.version == version)
    #expect(g.tensors.isEmpty)
    #expect(g.metadata.count == everyValueType.count)
    for (k, v) in everyValueType { #expect(g.metadata[k] == v, "\(k)") }
    #expect(g.string("general.architecture") == "llama")
    #expect(g.string("t.utf8") == "héllo ▁world")
    #expect(g.int("t.u32") == 4_000_000_000)
    #expect(g.int("t.i8") == -100)
    #expect(g.int("t.u64") == 1 << 40)
    #expect(g.float("t.f32") == 1.5)
    #expect(g.float("t.i16") == -30000)
    #expect(g.bool("t.bool") == true)
    #expect(g.int("general.architecture") == nil)
    #expect(g.string("missing") == nil)
    #expect(g.stringArray("tokenizer.ggml.tokens") == ["<s>", "a", "▁b"])
    #expect(g.stringArray("t.ids") == nil)
    #expect(g.intArray("t.ids") == [1, -2, 3])
    #expect(g.floatArray("t.scores") == [-1, 0.5])
    #expect(g.array("t.none") == [])
    #expect(g.alignment == 32)
}

@Test func tensorTableHonoursAlignmentAndLookup() throws {
    var w = GGUFTestWriter()
    w.alignment = 64
    w.metadata = [("general.alignment", .uint32(64)), ("x", .string("abc"))]
    let f32: [Float] = [1, 2, 3, 4, 5, 6]
    let raw = f32.flatMap { v in withUnsafeBytes(of: v.bitPattern.littleEndian) { Array($0) } }
    w.tensors = [("a", [3, 2], 0, raw), ("b", [1], 0, Array(raw[0..<4])), ("c", [2], 0, Array(raw[4..<12]))]
    let g = try GGUFFile(path: writeGGUF(w.bytes()))
    #expect(g.alignment == 64)
    #expect(g.dataOffset % 64 == 0)
    #expect(g.tensors.map(\.name) == ["a", "b", "c"])
    #expect(g.tensors.map(\.offset) == [0, 64, 128])
    let a = try g.tensor(named: "a")
    #expect(a.dims == [3, 2] && a.shape == [2, 3] && a.type == .f32 && a.byteSize == 24 && a.elementCount == 6)
    #expect(try g.dequantize(a) == f32)
    #expect(try g.dequantize(g.tensor(named: "c")) == [2, 3])
    #expect(try Array(g.data(of: g.tensor(named: "b"))) == Array(raw[0..<4]))
    #expect(throws: ModelFileError.self) { try g.tensor(named: "nope") }
}

@Test func malformedFilesAreModelFileErrors() throws {
    var good = GGUFTestWriter()
    good.metadata = [("k", .string("v")), ("n", .array([.uint32(1), .uint32(2)]))]
    good.tensors = [("w", [32], 8, [UInt8](repeating: 0, count: 34))]
    let bytes = good.bytes()
    _ = try GGUFFile(path: writeGGUF(bytes))

    var w = good
    w.magic = 0x4655_4746
    expectModelFileError(w.bytes(), containing: "bad magic")
    w = good
    w.version = 1
    expectModelFileError(w.bytes(), containing: "version 1")
    expectModelFileError([], containing: "truncated")
    expectModelFileError(Array(bytes[0..<12]), containing: "truncated")
    // Every proper prefix of the file fails cleanly (header, table, or data).
    for n in 0..<bytes.count {
        let path = writeGGUF(Array(bytes[0..<n]))
        defer { unlink(path) }
        #expect(throws: ModelFileError.self, "prefix \(n)") { try GGUFFile(path: path) }
    }
    w = good
    w.tensors[0].3 = [UInt8](repeating: 0, count: 33)
    expectModelFileError(w.bytes(), containing: "past the end")
    w = good
    w.tensors[0].2 = 99
    expectModelFileError(w.bytes(), containing: "unknown ggml type 99")
    w = good
    w.tensors[0].1 = [32, 1, 1, 1, 1]
    expectModelFileError(w.bytes(), containing: "5 dimensions")
    w = good
    w.tensors[0].1 = [16]
    expectModelFileError(w.bytes(), containing: "block size")
    w = good
    w.metadata.append(("general.alignment", .uint32(48)))
    expectModelFileError(w.bytes(), containing: "power of two")
    w = good
    w.tensors.append(("w", [32], 8, [UInt8](repeating: 0, count: 34)))
    expectModelFileError(w.bytes(), containing: "duplicate tensor")

    // Corrupt counts must not allocate or crash.
    var h = Array(bytes[0..<8])
    GGUFTestWriter.put(UInt64.max, &h)
    GGUFTestWriter.put(UInt64(0), &h)
    expectModelFileError(h, containing: "tensor count")
    var m = Array(bytes[0..<8])
    GGUFTestWriter.put(UInt64(0), &m)
    GGUFTestWriter.put(UInt64(1), &m)
    GGUFTestWriter.put("k", &m)
    GGUFTestWriter.put(UInt32(9), &m)
    GGUFTestWriter.put(UInt32(8), &m)
    GGUFTestWriter.put(UInt64(1) << 60, &m)
    expectModelFileError(m, containing: "element count")
    var t = Array(bytes[0..<8])
    GGUFTestWriter.put(UInt64(0), &t)
    GGUFTestWriter.put(UInt64(1), &t)
    GGUFTestWriter.put("k", &t)
    GGUFTestWriter.put(UInt32(13), &t)
    expectModelFileError(t + [0, 0, 0, 0], containing: "unknown metadata value type 13")
    var s = Array(bytes[0..<8])
    GGUFTestWriter.put(UInt64(0), &s)
    GGUFTestWriter.put(UInt64(1), &s)
    GGUFTestWriter.put(UInt64.max, &s)
    expectModelFileError(s + [0, 0, 0, 0], containing: "truncated")
}

@Test func missingFileIsModelFileError() {
    #expect(throws: ModelFileError.self) { try GGUFFile(path: "/nonexistent/x.gguf") }
}

@Test func unpermuteQKMatchesHandComputedRows() throws {
    // One head of size 6, one column: HF rotate-half rows 0...5 become 0,3,1,4,2,5.
    #expect(try GGUFFile.permuteQK([0, 1, 2, 3, 4, 5], heads: 1, cols: 1) == [0, 3, 1, 4, 2, 5])
    #expect(try GGUFFile.unpermuteQK([0, 3, 1, 4, 2, 5], heads: 1, cols: 1) == [0, 1, 2, 3, 4, 5])
    // Two heads of size 4, two columns (row r holds 10r, 10r+1).
    let hf: [Float] = (0..<8).flatMap { r in [Float(10 * r), Float(10 * r + 1)] }
    let llama: [Float] = [0, 2, 1, 3, 4, 6, 5, 7].flatMap { r in [Float(10 * r), Float(10 * r + 1)] }
    #expect(try GGUFFile.permuteQK(hf, heads: 2, cols: 2) == llama)
    #expect(try GGUFFile.unpermuteQK(llama, heads: 2, cols: 2) == hf)
    let big = (0..<(4 * 8 * 3)).map(Float.init)
    #expect(try GGUFFile.unpermuteQK(GGUFFile.permuteQK(big, heads: 4, cols: 3), heads: 4, cols: 3) == big)
    #expect(try GGUFFile.permuteQK(GGUFFile.unpermuteQK(big, heads: 4, cols: 3), heads: 4, cols: 3) == big)
    #expect(throws: ModelFileError.self) { try GGUFFile.unpermuteQK([1, 2, 3], heads: 1, cols: 1) }
}
