import Foundation
import Glibc

/// Progress of a long prompt on standard error, once it has taken `after` seconds: a line
/// redrawn in place on a terminal, otherwise a plain line every few seconds. `clear` erases the
/// terminal line before the answer's text starts.
public final class PromptProgress {
    private let start = Date()
    private let after: TimeInterval
    private let terminal = isatty(2) == 1
    private var lastDraw: Date?
    private var drawn = false

    public init(after: TimeInterval = 1) {
        self.after = after
    }

    public func update(computed: Int, total: Int) {
        let now = Date()
        let elapsed = now.timeIntervalSince(start)
        guard elapsed >= after, computed < total else { return }
        if !terminal, let lastDraw, now.timeIntervalSince(lastDraw) < 3 { return }
        lastDraw = now
        let rate = elapsed > 0 ? Double(computed) / elapsed : 0
        let text = "prompt: \(computed)/\(total) tokens (\(Int(100 * Double(computed) / Double(max(total, 1))))%), "
            + String(format: "%.1f s, %.0f tokens/s", elapsed, rate)
        FileHandle.standardError.write(Data((terminal ? "\r\u{1B}[K[\(text)]" : "[\(text)]\n").utf8))
        drawn = true
    }

    public func clear() {
        guard drawn, terminal else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[K".utf8))
        drawn = false
    }
}
