import Foundation

/// `vtensor --version`: the release number, and the git commit of the source checkout the binary
/// was built from when that checkout is still where the build found it (SwiftPM has no build-time
/// hook to stamp the commit into the binary; a binary carried elsewhere says so).
public enum VTensorVersion {
    public static let number = "0.1.0"

    public static var text: String {
        let source = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        guard let commit = gitHead(checkout: source) else {
            return "vtensor \(number) (commit unknown: the source checkout it was built from is not on this machine)"
        }
        return "vtensor \(number) (source checkout \(source.path), HEAD \(commit.prefix(12)))"
    }

    /// The commit `HEAD` names in `checkout/.git`: a detached id, or a branch's loose or packed ref.
    static func gitHead(checkout: URL) -> String? {
        let git = checkout.appendingPathComponent(".git")
        func read(_ path: String) -> String? {
            (try? String(contentsOf: git.appendingPathComponent(path), encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let head = read("HEAD") else { return nil }
        guard head.hasPrefix("ref: ") else { return head.count >= 40 ? head : nil }
        let ref = String(head.dropFirst(5))
        if let loose = read(ref), loose.count >= 40 { return loose }
        for line in (read("packed-refs") ?? "").split(separator: "\n") where line.hasSuffix(" " + ref) {
            return String(line.prefix(40))
        }
        return nil
    }
}
