#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif
import Testing
@testable import Models

/// A fresh temporary directory per test, so tests can run in parallel.
func stTempDir() -> String {
    var template = Array("/tmp/vtensor-models-XXXXXX".utf8CString)
    let p = mkdtemp(&template)!
    return String(cString: p)
}

/// Writes raw bytes to a file.
func stWrite(_ bytes: [UInt8], to path: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    precondition(fd >= 0)
    bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

/// Builds a safetensors file from a literal header and a data region.
func safetensorsBytes(header: String, data: [UInt8]) -> [UInt8] {
    let h = Array(header.utf8)
    var out: [UInt8] = []
    withUnsafeBytes(of: UInt64(h.count).littleEndian) { out += $0 }
    return out + h + data
}

func stBytes<T>(_ values: [T]) -> [UInt8] {
    values.withUnsafeBytes { Array($0) }
}

/// The error message the reader gives for a file, or nil if it opened.
func stOpenError(header: String, data: [UInt8] = []) -> String? {
    let path = stTempDir() + "/bad.safetensors"
    stWrite(safetensorsBytes(header: header, data: data), to: path)
    do {
        _ = try SafeTensorsFile(path: path)
        return nil
    } catch let e as ModelFileError {
        #expect(e.path == path)
        return e.problem
    } catch {
        Issue.record("unexpected error \(error)")
        return nil
    }
}

@Test func roundTripsF32BF16I64AndMetadata() throws {
    let f32: [Float] = [1, -2.5, 3, 4, 5, 6]
    let bf16: [UInt16] = [0x3F80, 0xC000, 0x4040]  // 1, -2, 3
    let i64: [Int64] = [7, -9_000_000_000]
    let data = stBytes(f32) + stBytes(bf16) + stBytes(i64)
    let header = """
    {"__metadata__":{"format":"pt","note":"hi"},
     "w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},
     "b":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]},
     "ids":{"dtype":"I64","shape":[2],"data_offsets":[30,46]}}
    """
    let path = stTempDir() + "/model.safetensors"
    stWrite(safetensorsBytes(header: header, data: data), to: path)
    let file = try SafeTensorsFile(path: path)
    #expect(file.tensorNames == ["w", "b", "ids"])
    #expect(file.metadata == ["format": "pt", "note": "hi"])

    let w = try file.tensor(named: "w")
    #expect(w.dtype == .f32 && w.shape == [2, 3] && w.elementCount == 6 && w.bytes.count == 24)
    #expect(Array(w.bytes.bindMemory(to: Float.self)) == f32)
    let b = try file.tensor(named: "b")
    #expect(b.dtype == .bf16 && b.shape == [3])
    #expect((0..<3).map { b.bytes.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self) } == bf16)
    let ids = try file.tensor(named: "ids")
    #expect(ids.dtype == .i64 && ids.elementCount == 2)
    #expect((0..<2).map { ids.bytes.loadUnaligned(fromByteOffset: $0 * 8, as: Int64.self) } == i64)
}

@Test func viewKeepsTheMappingAlive() throws {
    let path = stTempDir() + "/model.safetensors"
    stWrite(safetensorsBytes(header: #"{"x":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#, data: [1, 2, 3]), to: path)
    var file: SafeTensorsFile? = try SafeTensorsFile(path: path)
    let view = try file!.tensor(named: "x")
    file = nil
    #expect(Array(view.bytes) == [1, 2, 3])
}

@Test func scalarAndEmptyTensors() throws {
    let path = stTempDir() + "/model.safetensors"
    let header = #"{"s":{"dtype":"I32","shape":[],"data_offsets":[0,4]},"e":{"dtype":"F16","shape":[0,5],"data_offsets":[4,4]}}"#
    stWrite(safetensorsBytes(header: header, data: stBytes([Int32(42)])), to: path)
    let file = try SafeTensorsFile(path: path)
    let s = try file.tensor(named: "s")
    #expect(s.shape == [] && s.elementCount == 1 && s.bytes.loadUnaligned(as: Int32.self) == 42)
    #expect(try file.tensor(named: "e").elementCount == 0)
}

@Test func shortFileIsRejected() {
    let path = stTempDir() + "/short.safetensors"
    stWrite([1, 2, 3], to: path)
    #expect(throws: ModelFileError.self) { try SafeTensorsFile(path: path) }
    do { _ = try SafeTensorsFile(path: path) } catch let e as ModelFileError {
        #expect(e.problem.contains("shorter than the 8-byte"))
    } catch {}
    let empty = stTempDir() + "/empty.safetensors"
    stWrite([], to: empty)
    #expect(throws: ModelFileError.self) { try SafeTensorsFile(path: empty) }
}

@Test func missingFileIsRejected() {
    #expect(throws: ModelFileError.self) { try SafeTensorsFile(path: "/nonexistent/vtensor/x.safetensors") }
}

@Test func headerLengthPastEndIsRejected() {
    let path = stTempDir() + "/bad.safetensors"
    var b: [UInt8] = []
    withUnsafeBytes(of: UInt64(1000).littleEndian) { b += $0 }
    stWrite(b + Array("{}".utf8), to: path)
    do { _ = try SafeTensorsFile(path: path); Issue.record("opened") } catch let e as ModelFileError {
        #expect(e.problem.contains("header length 1000 runs past the end"))
    } catch { Issue.record("\(error)") }
    var huge: [UInt8] = []
    withUnsafeBytes(of: UInt64.max.littleEndian) { huge += $0 }
    stWrite(huge, to: path)
    #expect(throws: ModelFileError.self) { try SafeTensorsFile(path: path) }
}

@Test func malformedHeadersAreNamed() {
    #expect(stOpenError(header: "{not json")?.contains("not valid JSON") == true)
    #expect(stOpenError(header: "[1,2]")?.contains("not a JSON object") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"Q4","shape":[1],"data_offsets":[0,1]}}"#, data: [0])?.contains("unknown dtype 'Q4'") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#, data: Array(repeating: 0, count: 12))?.contains("span 8 bytes") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}"#, data: [0, 0])?.contains("out of the 2-byte data region") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[3,2]}}"#, data: [0, 0, 0])?.contains("out of the") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[-1],"data_offsets":[0,1]}}"#, data: [0])?.contains("negative dimension -1") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"y":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#, data: [0, 0, 0])?.contains("overlap") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0]}}"#, data: [0])?.contains("data_offsets must be [begin, end]") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[1]}}"#, data: [0])?.contains("missing key 'data_offsets'") == true)
    #expect(stOpenError(header: #"{"__metadata__":{"n":1}}"#)?.contains("wrong type at '__metadata__.n'") == true)
    #expect(stOpenError(header: #"{"x":{"dtype":"U8","shape":[4611686018427387904,4],"data_offsets":[0,1]}}"#, data: [0])?.contains("too large") == true)
}

@Test func missingTensorIsNamed() throws {
    let path = stTempDir() + "/model.safetensors"
    stWrite(safetensorsBytes(header: "{}", data: []), to: path)
    let file = try SafeTensorsFile(path: path)
    #expect(file.tensorNames.isEmpty)
    do { _ = try file.tensor(named: "nope"); Issue.record("found") } catch let e as ModelFileError {
        #expect(e.problem == "tensor 'nope' not found")
    } catch { Issue.record("\(error)") }
}
