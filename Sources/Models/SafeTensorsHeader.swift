#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// The JSON header of a safetensors file. Keys are tensor names except `__metadata__`,
/// so it is decoded through dynamic keys rather than a fixed struct.
struct SafeTensorsHeader: Decodable {
    struct RawEntry: Decodable {
        let dtype: String
        let shape: [Int]
        let dataOffsets: [Int]
        enum CodingKeys: String, CodingKey { case dtype, shape, dataOffsets = "data_offsets" }
    }

    var metadata: [String: String] = [:]
    var tensors: [String: RawEntry] = [:]

    init(from decoder: Decoder) throws {
        let c = try decoder.container(keyedBy: SafeTensorsKey.self)
        for key in c.allKeys {
            if key.stringValue == "__metadata__" {
                metadata = try c.decode([String: String].self, forKey: key)
            } else {
                tensors[key.stringValue] = try c.decode(RawEntry.self, forKey: key)
            }
        }
    }

    /// Decodes, turning decoder errors into messages that say which part of the header is wrong.
    static func parse(_ data: Data, path: String) throws -> SafeTensorsHeader {
        do {
            return try JSONDecoder().decode(SafeTensorsHeader.self, from: data)
        } catch let error as DecodingError {
            throw ModelFileError(path: path, "safetensors header: \(describeDecodingError(error))")
        }
    }
}

/// A coding key for JSON objects whose keys are data (tensor names, shard maps).
struct SafeTensorsKey: CodingKey {
    var stringValue: String
    var intValue: Int? { nil }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Renders a DecodingError as a short human message, distinguishing "not JSON" from "wrong shape".
func describeDecodingError(_ error: DecodingError) -> String {
    func where_(_ path: [CodingKey]) -> String {
        path.isEmpty ? "top level" : "'" + path.map(\.stringValue).joined(separator: ".") + "'"
    }
    switch error {
    case .dataCorrupted(let ctx) where ctx.codingPath.isEmpty:
        return "not valid JSON (\(ctx.debugDescription))"
    case .dataCorrupted(let ctx):
        return "bad value at \(where_(ctx.codingPath)): \(ctx.debugDescription)"
    case .typeMismatch(let type, let ctx) where ctx.codingPath.isEmpty:
        return "top level is not a JSON object (expected \(type))"
    case .typeMismatch(let type, let ctx):
        return "wrong type at \(where_(ctx.codingPath)): expected \(type)"
    case .valueNotFound(let type, let ctx):
        return "missing value at \(where_(ctx.codingPath)): expected \(type)"
    case .keyNotFound(let key, let ctx):
        return "missing key '\(key.stringValue)' in \(where_(ctx.codingPath))"
    @unknown default:
        return "\(error)"
    }
}
