import Engine
import Foundation
import Hummingbird
import Runtime
import Tokenizers

extension OpenAIServer {
    // MARK: Request fields

    /// Fields that take an integer (the decoder's own error for 3.5 or 1e30 names no field).
    static let integerFields = ["max_tokens", "max_completion_tokens", "top_k", "seed", "min_tokens", "logprobs", "top_logprobs", "n"]

    func samplingParameters(_ data: Data, object: [String: Any]) throws -> SamplingParameters {
        for field in Self.integerFields {
            if let value = object[field], value is NSNumber, !isJSONBool(value), jsonInt(value) == nil {
                throw APIError("'\(field)' must be an integer that fits in 64 bits, got \(value)", param: field)
            }
        }
        if let ids = object["stop_token_ids"] as? [Any], let bad = ids.first(where: { jsonInt($0) == nil }) {
            throw APIError("'stop_token_ids' must be a list of integer token ids, got \(Self.describe(bad)) in it", param: "stop_token_ids")
        }
        let decoder = JSONDecoder()
        decoder.userInfo[SamplingParameters.defaultsKey] = defaults
        do {
            return try decoder.decode(SamplingParameters.self, from: data)
        } catch let DecodingError.typeMismatch(type, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)' has the wrong type (expected \(Self.typeName(type, field: field)))", param: field)
        } catch let DecodingError.dataCorrupted(context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw APIError("'\(field)': \(context.debugDescription)", param: field.isEmpty ? nil : field)
        } catch {
            throw APIError("invalid sampling fields: \(error)")
        }
    }

    static func typeName(_ type: Any.Type, field: String) -> String {
        if field == "stop" { return "a string or a list of strings" }
        if field == "logit_bias" { return "an object mapping token ids to biases" }
        if type == Double.self { return "a number" }
        if type == Int.self { return "an integer" }
        if type == Bool.self { return "a boolean" }
        if type == String.self { return "a string" }
        return "\(type)"
    }

    func optionalBool(_ object: [String: Any], _ key: String) throws -> Bool? {
        guard let value = object[key], !(value is NSNull) else { return nil }
        // JSONSerialization gives NSNumber for both numbers and booleans.
        guard isJSONBool(value), let flag = value as? Bool else { throw APIError("'\(key)' must be a boolean", param: key) }
        return flag
    }

    func streamIncludesUsage(_ object: [String: Any]) throws -> Bool {
        guard let options = object["stream_options"], !(options is NSNull) else { return false }
        guard let dict = options as? [String: Any] else { throw APIError("'stream_options' must be an object", param: "stream_options") }
        return try optionalBool(dict, "include_usage") ?? false
    }

    /// `stream_options.continuous_usage_stats` (vLLM's), which counts only with `include_usage`.
    func streamHasContinuousUsage(_ object: [String: Any]) throws -> Bool {
        guard try streamIncludesUsage(object), let dict = object["stream_options"] as? [String: Any] else { return false }
        return try optionalBool(dict, "continuous_usage_stats") ?? false
    }
}

/// True when JSONSerialization decoded the value from `true` or `false` (an NSNumber of type "c").
func isJSONBool(_ value: Any) -> Bool {
    if let number = value as? NSNumber { return String(cString: number.objCType) == "c" }
    return value is Bool
}

/// An integer that was not written as a boolean.
func jsonInt(_ value: Any) -> Int? {
    isJSONBool(value) ? nil : value as? Int
}
