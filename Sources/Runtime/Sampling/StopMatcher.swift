/// Finds stop strings in streamed text.
///
/// Feed each decoded piece to ``append(_:)``. It returns the text that is safe to show now and
/// holds back any tail that could still be the start of a stop string, so a client never sees
/// part of a stop string. When a stop string completes, the result carries it and the text up
/// to (not including) it; later pieces are ignored. At the end of a stream that did not stop,
/// ``finish()`` releases what was held back.
///
/// Matching is on UTF-8 bytes, which for valid strings is the same as matching on Unicode
/// scalars (code points, as Python and vLLM do) and never on grapheme clusters: "e" followed by a
/// combining accent still matches the stop string "e". When several stop strings match, the one
/// that starts first wins (then the first in the list).
public struct StopMatcher: Sendable {
    /// What one ``append(_:)`` produced.
    public struct Result: Sendable, Equatable {
        /// Text to emit now.
        public var text: String
        /// The stop string that ended the stream, if one did.
        public var stop: String?

        public init(text: String, stop: String? = nil) {
            self.text = text
            self.stop = stop
        }
    }

    public let stopStrings: [String]
    private let needles: [[UInt8]]
    private var pending: [UInt8] = []
    public private(set) var stopped: String?

    /// Empty stop strings are ignored (``SamplingParameters/validate()`` rejects them).
    public init(stopStrings: [String]) {
        self.stopStrings = stopStrings.filter { !$0.isEmpty }
        needles = self.stopStrings.map { Array($0.utf8) }
    }

    /// The text held back, waiting to see whether it begins a stop string.
    public var heldBack: String { String(decoding: pending, as: UTF8.self) }

    public mutating func append(_ piece: String) -> Result {
        if let stopped { return Result(text: "", stop: stopped) }
        if needles.isEmpty { return Result(text: piece) }
        pending.append(contentsOf: piece.utf8)
        if let (position, index) = firstMatch() {
            let text = String(decoding: pending[..<position], as: UTF8.self)
            pending.removeAll()
            stopped = stopStrings[index]
            return Result(text: text, stop: stopped)
        }
        let hold = longestHeldSuffix()
        let emit = pending.count - hold
        let text = String(decoding: pending[..<emit], as: UTF8.self)
        pending.removeFirst(emit)
        return Result(text: text)
    }

    /// Ends a stream that did not stop: returns the held-back text (empty after a stop).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return stopped == nil ? heldBack : ""
    }

    /// The earliest position where a stop string occurs in `pending`, and which one.
    private func firstMatch() -> (Int, Int)? {
        var best: (Int, Int)?
        for (index, needle) in needles.enumerated() where needle.count <= pending.count {
            let limit = best.map { Swift.min($0.0, pending.count - needle.count) } ?? (pending.count - needle.count)
            var start = 0
            while start <= limit {
                if pending[start] == needle[0] && pending[start..<(start + needle.count)].elementsEqual(needle) {
                    if best == nil || start < best!.0 { best = (start, index) }
                    break
                }
                start += 1
            }
        }
        return best
    }

    /// The length of the longest tail of `pending` that is a proper prefix of some stop string.
    /// A prefix of a stop string starts on a UTF-8 lead byte, so the cut before it never
    /// splits a character.
    private func longestHeldSuffix() -> Int {
        var best = 0
        for needle in needles {
            var length = Swift.min(needle.count - 1, pending.count)
            while length > best {
                if pending[(pending.count - length)...].elementsEqual(needle[..<length]) {
                    best = length
                    break
                }
                length -= 1
            }
        }
        return best
    }
}
