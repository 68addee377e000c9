import Glibc

/// Splits a Server-Sent Events byte stream into events (their `data`, multi-line data joined
/// with "\n"), as the bytes arrive.
///
/// Stricter than a browser: an OpenAI-compatible stream has only `data:` lines, comments
/// (`:` ...), blank lines and perhaps `event:`/`id:`/`retry:` fields, so any other line is
/// reported as malformed (the request then counts as failed with that reason).
struct SSEParser {
    private var pending: [UInt8] = []
    private var data: [UInt8] = []
    private var hasData = false

    /// Feeds bytes; `onEvent` gets each complete event's data. Returns the problem with the
    /// first malformed line (parsing stops there), else nil.
    mutating func feed(_ bytes: UnsafeRawBufferPointer, onEvent: ([UInt8]) -> Void) -> String? {
        pending.append(contentsOf: bytes)
        var start = 0, problem: String?
        let count = pending.count
        pending.withUnsafeBytes { buffer in
            let base = buffer.baseAddress!
            while start < count, let found = memchr(base + start, 0x0A, count - start) {
                let newline = base.distance(to: UnsafeRawPointer(found))
                var end = newline
                if end > start, buffer[end - 1] == 0x0D { end -= 1 }
                problem = line(UnsafeRawBufferPointer(rebasing: buffer[start..<end]), onEvent: onEvent)
                start = newline + 1
                if problem != nil { break }
            }
        }
        pending.removeFirst(start)
        return problem
    }

    /// The stream ended: an event not closed by a blank line still counts (some servers end
    /// with `data: [DONE]` and no blank line).
    mutating func finish(onEvent: ([UInt8]) -> Void) -> String? {
        if !pending.isEmpty {
            let rest = pending
            pending.removeAll()
            if let problem = rest.withUnsafeBytes({ line($0, onEvent: onEvent) }) { return problem }
        }
        if hasData { onEvent(data) }
        hasData = false
        return nil
    }

    private mutating func line(_ line: UnsafeRawBufferPointer, onEvent: ([UInt8]) -> Void) -> String? {
        if line.isEmpty {
            if hasData { onEvent(data) }
            data.removeAll(keepingCapacity: true)
            hasData = false
            return nil
        }
        if line[0] == UInt8(ascii: ":") { return nil }
        if let value = Self.value(of: "data:", in: line) {
            if hasData { data.append(0x0A) }
            data.append(contentsOf: value)
            hasData = true
            return nil
        }
        for field in Self.ignoredFields where Self.value(of: field, in: line) != nil { return nil }
        let shown = String(decoding: line.prefix(80), as: UTF8.self)
        return "malformed SSE line: \"\(shown)\(line.count > 80 ? "..." : "")\""
    }

    /// Fields an SSE stream may carry that say nothing about tokens.
    private static let ignoredFields: [StaticString] = ["event:", "id:", "retry:"]

    /// The value after `field` (and one optional space), if the line starts with it.
    private static func value(of field: StaticString, in line: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer? {
        let n = field.utf8CodeUnitCount
        guard line.count >= n, memcmp(line.baseAddress!, field.utf8Start, n) == 0 else { return nil }
        let skip = line.count > n && line[n] == 0x20 ? n + 1 : n
        return UnsafeRawBufferPointer(rebasing: line[skip...])
    }
}
