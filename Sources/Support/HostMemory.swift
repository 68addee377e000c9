#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif

/// Host memory this process may still take: the kernel's MemAvailable, capped by what the
/// cgroup's memory limit (v2 memory.max, or v1 limit_in_bytes) leaves over its current use.
/// Big allocations are checked against it first, so a model that cannot fit is refused with a
/// message instead of being killed by the out-of-memory killer.
public enum HostMemory {
    public struct Available: Sendable, Equatable {
        public var bytes: Int
        /// What bounds it, for messages: "MemAvailable" or "cgroup limit".
        public var boundBy: String
    }

    public static func available() -> Available? {
        var best: Available? = nil
        if let text = read("/proc/meminfo"), let kib = meminfoValue(text, key: "MemAvailable") {
            best = Available(bytes: kib * 1024, boundBy: "MemAvailable")
        }
        let v2 = (read("/sys/fs/cgroup/memory.max").flatMap(parseLimit), read("/sys/fs/cgroup/memory.current").flatMap(parseLimit))
        let v1 = (read("/sys/fs/cgroup/memory/memory.limit_in_bytes").flatMap(parseLimit),
                  read("/sys/fs/cgroup/memory/memory.usage_in_bytes").flatMap(parseLimit))
        for (limit, used) in [v2, v1] {
            guard let limit, limit < Int.max / 2 else { continue }
            let left = max(0, limit - (used ?? 0))
            if best == nil || left < best!.bytes { best = Available(bytes: left, boundBy: "cgroup limit") }
        }
        return best
    }

    /// The value in kB of `key` in /proc/meminfo's text.
    static func meminfoValue(_ text: String, key: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(key + ":") {
            return Int(line.dropFirst(key.count + 1).split(separator: " ").first ?? "")
        }
        return nil
    }

    /// A cgroup byte count; "max" (no limit) is nil.
    static func parseLimit(_ text: String) -> Int? {
        Int(text.split(whereSeparator: { $0 == " " || $0 == "\n" || $0 == "\t" }).first ?? "")
    }

    private static func read(_ path: String) -> String? {
        FileManager.default.contents(atPath: path).map { String(decoding: $0, as: UTF8.self) }
    }
}
