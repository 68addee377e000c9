import Foundation
import XCTest
@testable import Models

final class PyPIAssetTests: XCTestCase {
    private func temporaryRoot() -> String {
        let root = NSTemporaryDirectory() + "vtensor-asset-test-\(UInt32.random(in: 0...UInt32.max))"
        addTeardownBlock { try? FileManager.default.removeItem(atPath: root) }
        return root
    }

    func testCacheRootPrecedence() {
        XCTAssertEqual(PyPIAsset.cacheRoot(environment: ["VTENSOR_CACHE_DIR": "/a/", "HOME": "/h"]), "/a")
        XCTAssertEqual(PyPIAsset.cacheRoot(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]), "/x/vtensor")
        XCTAssertEqual(PyPIAsset.cacheRoot(environment: ["XDG_CACHE_HOME": "rel", "HOME": "/h"]), "/h/.cache/vtensor")
        XCTAssertEqual(PyPIAsset.cacheRoot(environment: [:]), "/tmp/vtensor-cache")
    }

    /// Two fetches at once of a small wheel's file: both get the same complete file, fetched once.
    func testConcurrentFetchesAgree() throws {
        let root = temporaryRoot()
        let asset = PyPIAsset(package: "six", version: "1.16.0", member: "six.py")
        let messages = LockedLines()
        let results = LockedLines()
        DispatchQueue.concurrentPerform(iterations: 2) { _ in
            do { results.append(try asset.fetch(root: root, progress: { messages.append($0) })) } catch { results.append("error: \(error)") }
        }
        XCTAssertEqual(results.lines, [asset.localPath(root: root), asset.localPath(root: root)])
        let text = try String(contentsOfFile: asset.localPath(root: root), encoding: .utf8)
        XCTAssertTrue(text.contains("__version__ = \"1.16.0\""))

        // The fetch checked the file against the wheel's RECORD and kept the digest: a flipped
        // byte in the cached copy is found; removing the copy makes the next fetch fetch again.
        XCTAssertEqual(try asset.verify(root: root), true)
        var bytes = try Data(contentsOf: URL(fileURLWithPath: asset.localPath(root: root)))
        bytes[100] ^= 0x20
        try bytes.write(to: URL(fileURLWithPath: asset.localPath(root: root)))
        XCTAssertEqual(try asset.verify(root: root), false)
        asset.removeCachedCopy(root: root)
        XCTAssertNil(try asset.verify(root: root))
        XCTAssertEqual(try asset.fetch(root: root, progress: { _ in }), asset.localPath(root: root))
        XCTAssertEqual(try asset.verify(root: root), true)
        XCTAssertEqual(messages.lines.filter { $0.hasPrefix("fetching") }.count, 1, "\(messages.lines)")
        // Nothing left behind but the asset and its lock.
        let entries = try FileManager.default.contentsOfDirectory(atPath: root + "/assets").sorted()
        XCTAssertEqual(entries, ["six-1.16.0", "six-1.16.0.lock"])
    }

    func testMissingMemberIsAClearError() {
        let asset = PyPIAsset(package: "six", version: "1.16.0", member: "no/such/file.txt")
        XCTAssertThrowsError(try asset.fetch(root: temporaryRoot(), progress: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("no member no/such/file.txt"), "\(error)")
        }
    }

    func testUnknownPackageIsAClearError() {
        let asset = PyPIAsset(package: "vtensor-no-such-package-xyz", version: "0.0.1", member: "x")
        XCTAssertThrowsError(try asset.fetch(root: temporaryRoot(), progress: { _ in })) { error in
            XCTAssertTrue("\(error)".contains("could not fetch from PyPI"), "\(error)")
        }
    }
}

final class LockedLines: @unchecked Sendable {
    private let lock = NSLock()
    private var storage: [String] = []
    func append(_ line: String) { lock.lock(); storage.append(line); lock.unlock() }
    var lines: [String] { lock.lock(); defer { lock.unlock() }; return storage }
}

extension PyPIAssetTests {
    /// RECORD's hash field: urlsafe base64 without padding, turned into hex.
    func testRecordDigestParsing() {
        XCTAssertEqual(PyPIAsset.recordDigest("noise\nsha256=ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0\n"),
                       "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertNil(PyPIAsset.recordDigest("sha256=tooShort"))
        XCTAssertNil(PyPIAsset.recordDigest(""))
    }
}
