import CLICommon
import Foundation
import Glibc
import Synchronization
import VTensor

/// Progress of a run on standard error: a bar redrawn in place when standard error is a
/// terminal, else a line every 10% (or every 10 s) so a log stays readable.
final class ServeProgress: Sendable {
    private let total: Int
    private let title: String
    private let terminal: Bool
    private let enabled: Bool
    private let done = Atomic<Int>(0)
    private let failed = Atomic<Int>(0)
    private let started = monotonicNanos()
    private let printer = Mutex<Task<Void, Never>?>(nil)
    /// The count the last line showed (a log gets no repeated final line).
    private let shown = Atomic<Int>(-1)

    init(total: Int, title: String, enabled: Bool = true) {
        self.total = total
        self.title = title
        self.enabled = enabled
        terminal = isatty(STDERR_FILENO) == 1
    }

    func finished(_ succeeded: Bool) {
        done.add(1, ordering: .relaxed)
        if !succeeded { failed.add(1, ordering: .relaxed) }
    }

    func start() {
        guard enabled else { return }
        let task = Task.detached { [self] in
            var lastLine = -1, lastTime = monotonicNanos()
            while !Task.isCancelled {
                try? await Task.sleep(nanoseconds: terminal ? 100_000_000 : 500_000_000)
                let count = done.load(ordering: .relaxed)
                if terminal {
                    write("\r" + line(count))
                } else if count * 10 / max(1, total) > lastLine || monotonicNanos() - lastTime > 10_000_000_000 {
                    lastLine = count * 10 / max(1, total)
                    lastTime = monotonicNanos()
                    write(line(count) + "\n")
                    shown.store(count, ordering: .relaxed)
                }
            }
        }
        printer.withLock { $0 = task }
    }

    /// Stops the display, ending with the final count.
    func stop() async {
        guard enabled, let task = printer.withLock({ $0 }) else { return }
        task.cancel()
        await task.value
        let count = done.load(ordering: .relaxed)
        if terminal || shown.load(ordering: .relaxed) != count { write((terminal ? "\r" : "") + line(count) + "\n") }
    }

    private func line(_ count: Int) -> String {
        let width = 30
        let filled = total == 0 ? width : min(width, count * width / total)
        let bar = String(repeating: "=", count: filled) + (filled < width ? ">" + String(repeating: " ", count: width - filled - 1) : "")
        let failures = failed.load(ordering: .relaxed)
        let seconds = Double(monotonicNanos() - started) / 1e9
        return "\(title) [\(bar)] \(count)/\(total) requests" + (failures > 0 ? ", \(failures) failed" : "") + ", \(fixed(seconds, 1)) s"
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
