#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Models

/// Builds GGUF bytes by hand so the tests need no fixture files or Python.
public struct GGUFTestWriter {
    public var version: UInt32 = 3
    public var magic: UInt32 = 0x4655_4747
    public var metadata: [(String, GGUFValue)] = []
    /// name, dims (ggml order), raw type, data
    public var tensors: [(String, [UInt64], UInt32, [UInt8])] = []
    public var alignment = 32

    public init() {}

    /// Adds one metadata entry.
    public mutating func add(_ key: String, _ value: GGUFValue) { metadata.append((key, value)) }

    /// Writes the file to a fresh temporary path and returns it.
    public func write() -> String { writeGGUF(bytes()) }

    public static func typeCode(_ v: GGUFValue) -> UInt32 {
        switch v {
        case .uint8: 0
        case .int8: 1
        case .uint16: 2
        case .int16: 3
        case .uint32: 4
        case .int32: 5
        case .float32: 6
        case .bool: 7
        case .string: 8
        case .array: 9
        case .uint64: 10
        case .int64: 11
        case .float64: 12
        }
    }

    public static func put<T: FixedWidthInteger>(_ x: T, _ b: inout [UInt8]) {
        withUnsafeBytes(of: x.littleEndian) { b.append(contentsOf: $0) }
    }

    public static func put(_ s: String, _ b: inout [UInt8]) {
        put(UInt64(s.utf8.count), &b)
        b.append(contentsOf: s.utf8)
    }

    public static func put(_ v: GGUFValue, _ b: inout [UInt8]) {
        switch v {
        case .uint8(let x): put(x, &b)
        case .int8(let x): put(x, &b)
        case .uint16(let x): put(x, &b)
        case .int16(let x): put(x, &b)
        case .uint32(let x): put(x, &b)
        case .int32(let x): put(x, &b)
        case .float32(let x): put(x.bitPattern, &b)
        case .bool(let x): put(UInt8(x ? 1 : 0), &b)
        case .string(let s): put(s, &b)
        case .array(let a):
            put(a.first.map(typeCode) ?? 4, &b)
            put(UInt64(a.count), &b)
            for e in a { put(e, &b) }
        case .uint64(let x): put(x, &b)
        case .int64(let x): put(x, &b)
        case .float64(let x): put(x.bitPattern, &b)
        }
    }

    /// Header and tensor table only (no padding or data).
    public func header(offsets: [UInt64]) -> [UInt8] {
        var b: [UInt8] = []
        Self.put(magic, &b)
        Self.put(version, &b)
        Self.put(UInt64(tensors.count), &b)
        Self.put(UInt64(metadata.count), &b)
        for (k, v) in metadata {
            Self.put(k, &b)
            Self.put(Self.typeCode(v), &b)
            Self.put(v, &b)
        }
        for (i, t) in tensors.enumerated() {
            Self.put(t.0, &b)
            Self.put(UInt32(t.1.count), &b)
            for d in t.1 { Self.put(d, &b) }
            Self.put(t.2, &b)
            Self.put(offsets[i], &b)
        }
        return b
    }

    public func bytes() -> [UInt8] {
        var offsets: [UInt64] = []
        var data: [UInt8] = []
        for t in tensors {
            while data.count % alignment != 0 { data.append(0) }
            offsets.append(UInt64(data.count))
            data += t.3
        }
        var b = header(offsets: offsets)
        while b.count % alignment != 0 { b.append(0) }
        return b + data
    }
}

/// One temp directory per test process; each file gets a unique name inside it.
public let ggufTestDir: String = {
    var template = Array("/tmp/vtensor-gguf-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)!) }
}()

public func writeGGUF(_ bytes: [UInt8]) -> String {
    var template = Array((ggufTestDir + "/m-XXXXXX").utf8CString)
    let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
    precondition(fd >= 0, "mkstemp failed")
    let path = template.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
    let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    precondition(n == bytes.count, "short write")
    close(fd)
    return path
}

