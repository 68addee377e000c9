/// Streaming decode: feed ids one at a time, get back the text they complete.
///
/// Token bytes are appended to a buffer; everything up to a trailing, still-completable UTF-8
/// sequence is emitted (so a character split across tokens, e.g. an emoji from byte-level BPE
/// or from byte-fallback pieces, is emitted whole once its last byte arrives), and the
/// SentencePiece leading space is dropped from the very start of the stream only. The
/// concatenation of everything returned by ``add(_:)`` and ``finish()`` equals
/// ``Tokenizer/decode(_:skipSpecialTokens:)`` of all the ids.
public struct IncrementalDetokenizer: Sendable {
    public let tokenizer: Tokenizer
    public let skipSpecialTokens: Bool
    private var pending: [UInt8] = []
    private var spacesToStrip: Int

    public init(tokenizer: Tokenizer, skipSpecialTokens: Bool = false) {
        self.tokenizer = tokenizer
        self.skipSpecialTokens = skipSpecialTokens
        spacesToStrip = tokenizer.stripLeadingSpaces
    }

    /// The newly completed text after `id` (often empty while a character is incomplete).
    public mutating func add(_ id: Int) -> String {
        guard id >= 0 && id < tokenizer.decodedBytes.count else { return "" }
        if skipSpecialTokens && tokenizer.isSpecial(id) { return "" }
        let bytes = tokenizer.decodedBytes[id]
        var start = 0
        while spacesToStrip > 0 && start < bytes.count {
            if bytes[start] == 0x20 {
                start += 1
                spacesToStrip -= 1
            } else {
                spacesToStrip = 0
            }
        }
        guard start < bytes.count else { return "" }
        pending.append(contentsOf: bytes[start...])
        let cut = UTF8Scan.incompleteSuffixStart(pending)
        guard cut > 0 else { return "" }
        let text = String(decoding: pending[..<cut], as: UTF8.self)
        pending.removeFirst(cut)
        return text
    }

    /// Whatever is held back (an incomplete sequence at the end decodes as U+FFFD).
    public mutating func finish() -> String {
        defer { pending.removeAll() }
        return pending.isEmpty ? "" : String(decoding: pending, as: UTF8.self)
    }
}
