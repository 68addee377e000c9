import Foundation

/// One normalization step, applied to each text segment between added tokens.
enum Normalizer: Sendable {
    /// Prepend a string to non-empty segments.
    case prepend([UInt8])
    /// Replace every occurrence of a literal.
    case replace([UInt8], with: [UInt8])
    /// SentencePiece's `remove_extra_whitespaces`: no leading or trailing spaces, runs of
    /// spaces collapsed to one.
    case collapseSpaces
    case lowercase
    case nfc, nfd, nfkc, nfkd

    func apply(_ text: [UInt8]) -> [UInt8] {
        switch self {
        case .prepend(let p):
            return text.isEmpty ? text : p + text
        case .replace(let pattern, let content):
            let matches = text.withUnsafeBufferPointer { SplitPattern.literal(pattern).matches(in: $0) }
            guard !matches.isEmpty else { return text }
            var out: [UInt8] = []
            out.reserveCapacity(text.count)
            var last = 0
            for m in matches {
                out.append(contentsOf: text[last..<m.lowerBound])
                out.append(contentsOf: content)
                last = m.upperBound
            }
            out.append(contentsOf: text[last...])
            return out
        case .collapseSpaces:
            var out: [UInt8] = []
            out.reserveCapacity(text.count)
            var pendingSpace = false
            for b in text {
                if b == 0x20 {
                    pendingSpace = !out.isEmpty
                } else {
                    if pendingSpace { out.append(0x20); pendingSpace = false }
                    out.append(b)
                }
            }
            return out
        case .lowercase:
            return Array(String(decoding: text, as: UTF8.self).lowercased().utf8)
        case .nfc:
            return Array(String(decoding: text, as: UTF8.self).precomposedStringWithCanonicalMapping.utf8)
        case .nfd:
            return Array(String(decoding: text, as: UTF8.self).decomposedStringWithCanonicalMapping.utf8)
        case .nfkc:
            return Array(String(decoding: text, as: UTF8.self).precomposedStringWithCompatibilityMapping.utf8)
        case .nfkd:
            return Array(String(decoding: text, as: UTF8.self).decomposedStringWithCompatibilityMapping.utf8)
        }
    }
}
