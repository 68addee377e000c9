import Foundation
import Testing

/// This package as other packages see it. SwiftPM (6.3) lets a package that is a dependency use
/// unsafeFlags only when it is a path dependency or pinned to a branch or revision; for a version
/// (or registry) dependency it refuses every product whose targets, with all they depend on, use
/// them ("the target 'X' in product 'Y' contains unsafe build flags"). So a path dependency would
/// prove nothing: the throwaway package here depends on a tagged git copy of this working tree.
/// It uses every library product the manifest declares, so the test covers whatever a library
/// product comes to include (today VTensor and GPU; Kernels, Runtime and CQuant are in none, so
/// a second test checks that no target uses unsafeFlags at all).
@Suite struct PackageDependencyTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The manifest of the package in `directory` as JSON (`swift package dump-package`).
    static func manifest(of directory: URL, temp: URL) throws -> [String: Any] {
        let dump = temp.appendingPathComponent("package-\(UUID().uuidString).json")
        // Its own scratch path: the repository's .build may be locked by the build running the tests.
        let status = try run(["swift", "package", "--scratch-path", temp.appendingPathComponent("dump").path, "dump-package"],
                             in: directory, log: dump)
        try #require(status == 0, "dump-package: \(tail(dump))")
        return try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: dump)) as? [String: Any])
    }

    /// Runs `arguments` through /usr/bin/env in `directory`, output to `log`; kills it after `timeout` seconds.
    @discardableResult
    static func run(_ arguments: [String], in directory: URL, log: URL, timeout: TimeInterval = 120) throws -> Int32 {
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let output = try FileHandle(forWritingTo: log)
        defer { try? output.close() }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(100_000) }
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
            return -1
        }
        return process.terminationStatus
    }

    static func tail(_ log: URL) -> String {
        String((try? String(contentsOf: log, encoding: .utf8))?.suffix(2000) ?? "")
    }

    @Test func noTargetUsesUnsafeFlags() throws {
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-manifest-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: temp, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: temp) }
        let targets = try Self.manifest(of: Self.root, temp: temp)["targets"] as? [[String: Any]] ?? []
        #expect(targets.contains { $0["name"] as? String == "Kernels" })
        let unsafe = Set(targets.compactMap { target -> String? in
            let settings = target["settings"] as? [[String: Any]] ?? []
            let usesUnsafe = settings.contains { ($0["kind"] as? [String: Any])?["unsafeFlags"] != nil }
            return usesUnsafe ? target["name"] as? String : nil
        })
        #expect(unsafe.isEmpty, "unsafeFlags in \(unsafe.sorted()): SwiftPM refuses them in a versioned dependency")
    }

    @Test func buildsAsAVersionedDependency() throws {
        let root = Self.root
        let temp = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-as-dependency-\(UUID().uuidString)")
        let snapshot = temp.appendingPathComponent("vtensor"), consumer = temp.appendingPathComponent("consumer")
        let log = temp.appendingPathComponent("log.txt")
        try FileManager.default.createDirectory(at: snapshot, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: temp) }

        // The files a commit would take now (tracked, and untracked but not ignored), committed and tagged.
        let listing = temp.appendingPathComponent("files.txt")
        try #require(try Self.run(["git", "-C", root.path, "ls-files", "-co", "--exclude-standard", "-z"], in: temp, log: listing) == 0)
        let files = try String(contentsOf: listing, encoding: .utf8).split(separator: "\0").map(String.init)
        #expect(files.contains("Package.swift"))
        for file in files where FileManager.default.fileExists(atPath: root.appendingPathComponent(file).path) {
            let target = snapshot.appendingPathComponent(file)
            try FileManager.default.createDirectory(at: target.deletingLastPathComponent(), withIntermediateDirectories: true)
            try FileManager.default.copyItem(at: root.appendingPathComponent(file), to: target)
        }
        let git = ["git", "-c", "user.name=vtensor tests", "-c", "user.email=tests@invalid", "-c", "commit.gpgsign=false"]
        for step in [["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "snapshot"], ["tag", "1.0.0"]] {
            let status = try Self.run(git + step, in: snapshot, log: log)
            try #require(status == 0, "git \(step[0]): \(Self.tail(log))")
        }

        // Every library product of the manifest.
        let products = (try Self.manifest(of: snapshot, temp: temp)["products"] as? [[String: Any]] ?? []).compactMap { product -> String? in
            (product["type"] as? [String: Any])?["library"] == nil ? nil : product["name"] as? String
        }
        #expect(products.contains("VTensor"))

        try FileManager.default.createDirectory(at: consumer.appendingPathComponent("Sources/Consumer"), withIntermediateDirectories: true)
        let dependencies = products.map { ".product(name: \"\($0)\", package: \"vtensor\")" }.joined(separator: ", ")
        try """
            // swift-tools-version:6.0
            import PackageDescription

            let package = Package(
                name: "Consumer",
                dependencies: [.package(url: "file://\(snapshot.path)", from: "1.0.0")],
                targets: [.executableTarget(name: "Consumer", dependencies: [\(dependencies)])]
            )

            """.write(to: consumer.appendingPathComponent("Package.swift"), atomically: true, encoding: .utf8)
        try """
            import VTensor

            print(KVDType.fp32.bytes)

            """.write(to: consumer.appendingPathComponent("Sources/Consumer/main.swift"), atomically: true, encoding: .utf8)

        let status = try Self.run(["swift", "build", "--scratch-path", temp.appendingPathComponent("build").path,
                                   "--cache-path", temp.appendingPathComponent("cache").path],
                                  in: consumer, log: log, timeout: 1200)
        #expect(status == 0, "swift build of a package that depends on vtensor 1.0.0 (\(status < 0 ? "timed out" : "exit \(status)")):\n\(Self.tail(log))")
    }
}
