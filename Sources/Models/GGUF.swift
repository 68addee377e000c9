#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A metadata value from a GGUF file. Arrays keep their elements as values (GGUF
/// allows arrays of any type, arrays included).
public enum GGUFValue: Sendable, Equatable {
    case uint8(UInt8), int8(Int8), uint16(UInt16), int16(Int16)
    case uint32(UInt32), int32(Int32), uint64(UInt64), int64(Int64)
    case float32(Float), float64(Double), bool(Bool), string(String)
    case array([GGUFValue])

    /// Any integer type as Int (nil when it does not fit or is not an integer).
    public var intValue: Int? {
        switch self {
        case .uint8(let v): Int(v)
        case .int8(let v): Int(v)
        case .uint16(let v): Int(v)
        case .int16(let v): Int(v)
        case .uint32(let v): Int(v)
        case .int32(let v): Int(v)
        case .uint64(let v): Int(exactly: v)
        case .int64(let v): Int(v)
        default: nil
        }
    }

    /// Floats and integers as Double.
    public var doubleValue: Double? {
        switch self {
        case .float32(let v): Double(v)
        case .float64(let v): v
        default: intValue.map(Double.init)
        }
    }

    public var stringValue: String? { if case .string(let s) = self { s } else { nil } }
    public var boolValue: Bool? { if case .bool(let b) = self { b } else { nil } }
    public var arrayValue: [GGUFValue]? { if case .array(let a) = self { a } else { nil } }
}

/// One tensor's header entry; `offset` is relative to the start of the data section.
public struct GGUFTensorInfo: Sendable, Equatable {
    public let name: String
    /// ggml order: dims[0] varies fastest (the row length), unlike PyTorch shapes.
    public let dims: [Int]
    public let type: GGMLType
    public let offset: Int
    public let byteSize: Int

    public var elementCount: Int { dims.reduce(1, *) }
    /// The PyTorch/row-major shape: dims reversed.
    public var shape: [Int] { dims.reversed() }
}

/// A GGUF v2/v3 file (llama.cpp's model format), memory-mapped: header, metadata and
/// tensor table are parsed and bounds-checked up front; tensor data is read in place.
public final class GGUFFile: @unchecked Sendable {
    public let path: String
    public let version: UInt32
    public let metadata: [String: GGUFValue]
    /// In file order.
    public let tensors: [GGUFTensorInfo]
    public let alignment: Int
    /// Absolute file offset of the data section.
    public let dataOffset: Int
    private let file: MappedFile
    private let index: [String: Int]

    public init(path: String) throws {
        self.path = path
        file = try MappedFile(path: path)
        var r = GGUFReader(bytes: file.bytes, path: path)
        guard try r.u32("magic") == 0x4655_4747 else { throw ModelFileError(path: path, "not a GGUF file (bad magic)") }
        version = try r.u32("version")
        guard version == 2 || version == 3 else {
            throw ModelFileError(path: path, "unsupported GGUF version \(version) (only 2 and 3)")
        }
        let tensorCount = try r.count("tensor count", minBytesEach: 24)
        let kvCount = try r.count("metadata count", minBytesEach: 12)
        var meta: [String: GGUFValue] = [:]
        for _ in 0..<kvCount {
            let key = try r.string("metadata key")
            let type = try r.u32("type of \(key)")
            guard meta[key] == nil else { throw ModelFileError(path: path, "duplicate metadata key \(key)") }
            meta[key] = try r.value(type: type, what: key, depth: 0)
        }
        metadata = meta
        var align = 32
        if let a = meta["general.alignment"] {
            guard case .uint32(let v) = a, v > 0, v & (v - 1) == 0 else {
                throw ModelFileError(path: path, "general.alignment must be a u32 power of two, got \(a)")
            }
            align = Int(v)
        }
        alignment = align

        var infos: [(String, [Int], GGMLType, Int)] = []
        infos.reserveCapacity(tensorCount)
        for _ in 0..<tensorCount {
            let name = try r.string("tensor name")
            let nDims = try r.u32("dimension count of \(name)")
            guard nDims <= 4 else { throw ModelFileError(path: path, "tensor \(name) has \(nDims) dimensions (at most 4)") }
            var dims: [Int] = []
            for _ in 0..<nDims {
                let d = try r.u64("dimensions of \(name)")
                guard d <= UInt64(Int32.max) * 1024 else { throw ModelFileError(path: path, "tensor \(name) has dimension \(d)") }
                dims.append(Int(d))
            }
            let raw = try r.u32("type of \(name)")
            guard let type = GGMLType(rawValue: raw) else {
                throw ModelFileError(path: path, "tensor \(name) has unknown ggml type \(raw)")
            }
            let off = try r.u64("offset of \(name)")
            guard off <= UInt64(Int.max / 2) else { throw ModelFileError(path: path, "tensor \(name) offset \(off) is out of range") }
            infos.append((name, dims, type, Int(off)))
        }

        dataOffset = (r.pos + align - 1) / align * align
        let dataSize = max(0, file.bytes.count - dataOffset)
        var list: [GGUFTensorInfo] = []
        var idx: [String: Int] = [:]
        for (name, dims, type, off) in infos {
            var n = 1
            for d in dims {
                let (p, o) = n.multipliedReportingOverflow(by: d)
                guard !o, p <= Int.max / 64 else { throw ModelFileError(path: path, "tensor \(name) is too large: \(dims)") }
                n = p
            }
            guard (dims.first ?? 1) % type.blockSize == 0 else {
                throw ModelFileError(path: path, "tensor \(name) row length \(dims.first ?? 1) is not a multiple of the \(type) block size \(type.blockSize)")
            }
            let size = n / type.blockSize * type.bytesPerBlock
            guard off % align == 0 else { throw ModelFileError(path: path, "tensor \(name) offset \(off) is not aligned to \(align)") }
            guard off + size <= dataSize else {
                throw ModelFileError(path: path, "tensor \(name) data (\(size) bytes at data offset \(off)) runs past the end of the file")
            }
            guard idx[name] == nil else { throw ModelFileError(path: path, "duplicate tensor \(name)") }
            idx[name] = list.count
            list.append(GGUFTensorInfo(name: name, dims: dims, type: type, offset: off, byteSize: size))
        }
        tensors = list
        index = idx
    }

    public func tensor(named name: String) throws -> GGUFTensorInfo {
        guard let i = index[name] else { throw ModelFileError(path: path, "no tensor named \(name)") }
        return tensors[i]
    }

    /// The tensor's raw bytes inside the mapping; valid while this file is alive.
    public func data(of info: GGUFTensorInfo) -> UnsafeRawBufferPointer {
        if info.byteSize == 0 { return UnsafeRawBufferPointer(start: nil, count: 0) }
        let start = dataOffset + info.offset
        return UnsafeRawBufferPointer(rebasing: file.bytes[start..<(start + info.byteSize)])
    }

    /// The tensor as Floats in file (row-major, dims[0] fastest) order.
    public func dequantize(_ info: GGUFTensorInfo) throws -> [Float] {
        try GGUFQuant.dequantize(info.type, data(of: info), count: info.elementCount, path: "\(path) (\(info.name))")
    }

    public func string(_ key: String) -> String? { metadata[key]?.stringValue }
    public func int(_ key: String) -> Int? { metadata[key]?.intValue }
    public func float(_ key: String) -> Double? { metadata[key]?.doubleValue }
    public func bool(_ key: String) -> Bool? { metadata[key]?.boolValue }
    public func array(_ key: String) -> [GGUFValue]? { metadata[key]?.arrayValue }

    /// nil unless the key is an array of strings only.
    public func stringArray(_ key: String) -> [String]? {
        guard let a = array(key) else { return nil }
        var out: [String] = []
        out.reserveCapacity(a.count)
        for v in a { guard let s = v.stringValue else { return nil }; out.append(s) }
        return out
    }

    /// nil unless every element is an integer that fits Int.
    public func intArray(_ key: String) -> [Int]? {
        guard let a = array(key) else { return nil }
        var out: [Int] = []
        out.reserveCapacity(a.count)
        for v in a { guard let i = v.intValue else { return nil }; out.append(i) }
        return out
    }

    /// nil unless every element is a number.
    public func floatArray(_ key: String) -> [Double]? {
        guard let a = array(key) else { return nil }
        var out: [Double] = []
        out.reserveCapacity(a.count)
        for v in a { guard let d = v.doubleValue else { return nil }; out.append(d) }
        return out
    }
}

/// Bounds-checked little-endian cursor; every overrun is a ModelFileError.
struct GGUFReader {
    let bytes: UnsafeRawBufferPointer
    let path: String
    var pos = 0

    var remaining: Int { bytes.count - pos }

    mutating func take<T>(_ t: T.Type, _ what: String) throws -> T {
        let n = MemoryLayout<T>.size
        guard remaining >= n else { throw ModelFileError(path: path, "truncated at byte \(pos) reading \(what)") }
        defer { pos += n }
        return bytes.loadUnaligned(fromByteOffset: pos, as: T.self)
    }

    mutating func u32(_ what: String) throws -> UInt32 { UInt32(littleEndian: try take(UInt32.self, what)) }
    mutating func u64(_ what: String) throws -> UInt64 { UInt64(littleEndian: try take(UInt64.self, what)) }

    /// A u64 count whose items need at least `minBytesEach` bytes, checked against the
    /// rest of the file so a corrupt count cannot trigger a huge allocation.
    mutating func count(_ what: String, minBytesEach: Int) throws -> Int {
        let n = try u64(what)
        guard n <= UInt64(remaining / max(minBytesEach, 1)) else {
            throw ModelFileError(path: path, "\(what) \(n) does not fit in the file")
        }
        return Int(n)
    }

    mutating func string(_ what: String) throws -> String {
        let n = try u64("length of \(what)")
        guard n <= UInt64(remaining) else { throw ModelFileError(path: path, "truncated at byte \(pos) reading \(what)") }
        let s = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[pos..<(pos + Int(n))]), as: UTF8.self)
        pos += Int(n)
        return s
    }

    /// Smallest encoding of one value of a type, to bound array counts.
    static func minSize(_ type: UInt32) -> Int {
        switch type {
        case 0, 1, 7: 1
        case 2, 3: 2
        case 4, 5, 6: 4
        case 8, 10, 11, 12: 8
        case 9: 12
        default: 1
        }
    }

    mutating func value(type: UInt32, what: String, depth: Int) throws -> GGUFValue {
        switch type {
        case 0: return .uint8(try take(UInt8.self, what))
        case 1: return .int8(try take(Int8.self, what))
        case 2: return .uint16(UInt16(littleEndian: try take(UInt16.self, what)))
        case 3: return .int16(Int16(littleEndian: try take(Int16.self, what)))
        case 4: return .uint32(try u32(what))
        case 5: return .int32(Int32(littleEndian: try take(Int32.self, what)))
        case 6: return .float32(Float(bitPattern: try u32(what)))
        case 7: return .bool(try take(UInt8.self, what) != 0)
        case 8: return .string(try string(what))
        case 9:
            guard depth < 8 else { throw ModelFileError(path: path, "\(what): arrays nested too deeply") }
            let et = try u32("element type of \(what)")
            guard et <= 12 else { throw ModelFileError(path: path, "\(what): unknown array element type \(et)") }
            let n = try count("element count of \(what)", minBytesEach: Self.minSize(et))
            var out: [GGUFValue] = []
            out.reserveCapacity(n)
            for _ in 0..<n { out.append(try value(type: et, what: what, depth: depth + 1)) }
            return .array(out)
        case 10: return .uint64(try u64(what))
        case 11: return .int64(Int64(bitPattern: try u64(what)))
        case 12: return .float64(Double(bitPattern: try u64(what)))
        default: throw ModelFileError(path: path, "\(what): unknown metadata value type \(type)")
        }
    }
}
