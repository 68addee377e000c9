#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// Element types a safetensors header may name; the raw value is the header spelling.
public enum SafeTensorsDType: String, Sendable, CaseIterable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8"
    case u64 = "U64", u32 = "U32", u16 = "U16", u8 = "U8", bool = "BOOL"

    /// Bytes per element, used to check that offsets agree with the shape.
    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .f8e4m3, .f8e5m2, .i8, .u8, .bool: return 1
        }
    }
}

/// One tensor's header entry plus its bytes inside the mapping.
/// Holds the mapping alive, so the bytes stay valid as long as the view does.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: SafeTensorsDType
    public let shape: [Int]
    public let elementCount: Int
    /// Read-only bytes in the memory-mapped file (little-endian, row-major).
    public let bytes: UnsafeRawBufferPointer
    let owner: AnyObject
}

/// One `.safetensors` file, memory-mapped and validated up front so later lookups cannot fail on bad offsets.
public final class SafeTensorsFile: @unchecked Sendable {
    public let path: String
    /// The optional `__metadata__` string map.
    public let metadata: [String: String]
    /// Tensor names in data order.
    public let tensorNames: [String]
    private let entries: [String: Entry]
    private let file: MappedFile
    private let dataStart: Int

    struct Entry {
        let dtype: SafeTensorsDType
        let shape: [Int]
        let elementCount: Int
        let begin: Int
        let end: Int
    }

    public init(path: String) throws {
        self.path = path
        let file = try MappedFile(path: path)
        self.file = file
        let buf = file.bytes
        guard buf.count >= 8 else {
            throw ModelFileError(path: path, "file is \(buf.count) bytes, shorter than the 8-byte header length")
        }
        let headerLength = UInt64(littleEndian: buf.loadUnaligned(as: UInt64.self))
        guard headerLength <= UInt64(buf.count - 8) else {
            throw ModelFileError(path: path, "header length \(headerLength) runs past the end of the \(buf.count)-byte file")
        }
        let headerEnd = 8 + Int(headerLength)
        let header = try SafeTensorsHeader.parse(Data(buf[8..<headerEnd]), path: path)
        dataStart = headerEnd
        let dataCount = buf.count - headerEnd
        var entries: [String: Entry] = [:]
        for (name, raw) in header.tensors {
            entries[name] = try Self.validate(name: name, raw: raw, dataCount: dataCount, path: path)
        }
        // Sorting by offset both gives file order and makes the overlap check one pass.
        let ordered = entries.sorted { ($0.value.begin, $0.value.end, $0.key) < ($1.value.begin, $1.value.end, $1.key) }
        for (a, b) in zip(ordered, ordered.dropFirst()) where b.value.begin < a.value.end {
            throw ModelFileError(path: path, "tensors '\(a.key)' [\(a.value.begin), \(a.value.end)) and '\(b.key)' [\(b.value.begin), \(b.value.end)) overlap")
        }
        self.entries = entries
        self.tensorNames = ordered.map(\.key)
        self.metadata = header.metadata
    }

    private static func validate(name: String, raw: SafeTensorsHeader.RawEntry, dataCount: Int, path: String) throws -> Entry {
        guard let dtype = SafeTensorsDType(rawValue: raw.dtype) else {
            let known = SafeTensorsDType.allCases.map(\.rawValue).joined(separator: ", ")
            throw ModelFileError(path: path, "tensor '\(name)' has unknown dtype '\(raw.dtype)' (known: \(known))")
        }
        var count = 1
        for dim in raw.shape {
            guard dim >= 0 else {
                throw ModelFileError(path: path, "tensor '\(name)' has negative dimension \(dim) in shape \(raw.shape)")
            }
            let (p, overflow) = count.multipliedReportingOverflow(by: dim)
            guard !overflow else { throw ModelFileError(path: path, "tensor '\(name)' shape \(raw.shape) is too large") }
            count = p
        }
        guard raw.dataOffsets.count == 2 else {
            throw ModelFileError(path: path, "tensor '\(name)' data_offsets must be [begin, end], got \(raw.dataOffsets)")
        }
        let begin = raw.dataOffsets[0], end = raw.dataOffsets[1]
        guard begin >= 0, begin <= end, end <= dataCount else {
            throw ModelFileError(path: path, "tensor '\(name)' data_offsets [\(begin), \(end)] are out of the \(dataCount)-byte data region")
        }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, end - begin == bytes else {
            throw ModelFileError(path: path, "tensor '\(name)' data_offsets span \(end - begin) bytes but shape \(raw.shape) of \(dtype.rawValue) needs \(count) x \(dtype.byteSize) bytes")
        }
        return Entry(dtype: dtype, shape: raw.shape, elementCount: count, begin: begin, end: end)
    }

    public func contains(_ name: String) -> Bool { entries[name] != nil }

    public func tensor(named name: String) throws -> TensorView {
        guard let e = entries[name] else {
            throw ModelFileError(path: path, "tensor '\(name)' not found")
        }
        let all = file.bytes
        let slice = UnsafeRawBufferPointer(rebasing: all[(dataStart + e.begin)..<(dataStart + e.end)])
        return TensorView(name: name, dtype: e.dtype, shape: e.shape, elementCount: e.elementCount, bytes: slice, owner: file)
    }
}
