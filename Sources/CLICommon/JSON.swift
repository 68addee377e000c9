#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Pretty JSON of any Codable value; `snakeCaseKeys`: `prefixCacheHitRate` written as
/// `prefix_cache_hit_rate` (the key style of vLLM's and SGLang's benchmark results).
public func jsonString<T: Encodable>(_ value: T, snakeCaseKeys: Bool = false) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    if snakeCaseKeys { encoder.keyEncodingStrategy = .convertToSnakeCase }
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}

/// Today's date (UTC) as YYYY-MM-DD, for reports.
public func todayUTC() -> String {
    let date = Date()
    let days = Int(date.timeIntervalSince1970 / 86_400)
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468
    let era = (z >= 0 ? z : z - 146_096) / 146_097
    let doe = z - era * 146_097
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
    let mp = (5 * doy + 2) / 153
    let d = doy - (153 * mp + 2) / 5 + 1
    let m = mp < 10 ? mp + 3 : mp - 9
    let y = yoe + era * 400 + (m <= 2 ? 1 : 0)
    func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    return "\(y)-\(two(m))-\(two(d))"
}

public struct FileWriteError: Error, CustomStringConvertible {
    public let path: String
    public var description: String { "cannot write \(path)" }
}

public func writeFile(_ path: String, _ text: String) throws {
    do {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    } catch {
        throw FileWriteError(path: path)
    }
}
