import Foundation
import Testing
@testable import Runtime

@Suite struct MatmulTuningCacheTests {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-tuning-\(UUID().uuidString)").path

    func entry(_ algorithm: String?, _ us: Double = 10) -> MatmulTuningCache.Entry {
        MatmulTuningCache.Entry(algorithm: algorithm, heuristicMicroseconds: us, bestMicroseconds: us * 0.9, candidates: 8)
    }

    @Test func aSavedCacheReadsBackTheSame() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/sub/matmul-tuning.json"  // the folder is created
        let algorithm = MatmulTuningCache.hex((0..<8).map { UInt64($0) * 0x0101_0101_0101_0101 })
        let key = MatmulTuningCache.key(device: "GPU (sm_90)", library: "13.1.0", m: 4096, n: 128, k: 14336, output: "f32",
                                        accumulate: true, workspaceBytes: 1 << 25)
        let cache = MatmulTuningCache(entries: [key: entry(algorithm), "other": entry(nil)])
        try cache.save(path: path)
        #expect(try MatmulTuningCache.load(path: path) == cache)
        #expect(algorithm.count == 128 && algorithm.hasPrefix("0000000000000000" + "0101010101010101"))
        // No temporary file is left beside it.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder + "/sub") == ["matmul-tuning.json"])
    }

    @Test func keysSeparateEverythingAChoiceDependsOn() {
        func key(_ device: String = "A", _ library: String = "13.1.0", n: Int = 128, output: String = "bf16", accumulate: Bool = false,
                 workspace: Int = 1 << 25, splitK: Bool = false) -> String {
            MatmulTuningCache.key(device: device, library: library, m: 6144, n: n, k: 4096, output: output, accumulate: accumulate,
                                  workspaceBytes: workspace, splitK: splitK)
        }
        let keys = [key(), key("B"), key("A", "13.0.2"), key(n: 144), key(output: "f32"), key(accumulate: true), key(workspace: 1 << 24),
                    key(splitK: true)]
        #expect(Set(keys).count == keys.count)
    }

    @Test func aMissingFileIsAnEmptyCache() throws {
        #expect(try MatmulTuningCache.load(path: folder + "/absent.json").entries.isEmpty)
    }

    @Test func savingKeepsEntriesAnotherProcessWrote() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/t.json"
        try MatmulTuningCache(entries: ["theirs": entry(nil, 5), "both": entry(nil, 6)]).save(path: path)
        try MatmulTuningCache(entries: ["mine": entry(nil, 7), "both": entry(nil, 8)]).save(path: path)
        let read = try MatmulTuningCache.load(path: path)
        #expect(read.entries.keys.sorted() == ["both", "mine", "theirs"])
        #expect(read.entries["both"]?.heuristicMicroseconds == 8)
    }

    @Test func aBadFileIsRefusedByName() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        func write(_ text: String) throws -> String {
            let path = folder + "/bad.json"
            try Data(text.utf8).write(to: URL(fileURLWithPath: path))
            return path
        }
        for (text, expected) in [("{not json", "not a tuning cache"), (#"{"format": 7, "entries": {}}"#, "format 7"),
                                 (#"{"format": 1, "entries": {"k": {"algorithm": "zz", "heuristicMicroseconds": 1, "bestMicroseconds": 1, "candidates": 2}}}"#,
                                  "not 64 bytes of hex")] {
            let path = try write(text)
            do {
                _ = try MatmulTuningCache.load(path: path)
                Issue.record("\(text) was read as a cache")
            } catch let error as MatmulTuningCacheError {
                #expect("\(error)".contains(path) && "\(error)".contains(expected), "\(error)")
            }
        }
    }

    @Test func aPathThatCannotBeWrittenSaysSo() throws {
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let file = folder + "/plain-file"
        try Data("x".utf8).write(to: URL(fileURLWithPath: file))
        // A folder that is a file.
        #expect(throws: MatmulTuningCacheError.self) { try MatmulTuningCache(entries: ["k": entry(nil)]).save(path: file + "/t.json") }
    }

    @Test func theDefaultPathFollowsTheEnvironment() {
        #expect(MatmulTuningCache.defaultPath(environment: ["VTENSOR_CACHE_DIR": "/c", "XDG_CACHE_HOME": "/x", "HOME": "/h"])
                == "/c/matmul-tuning.json")
        #expect(MatmulTuningCache.defaultPath(environment: ["XDG_CACHE_HOME": "/x", "HOME": "/h"]) == "/x/vtensor/matmul-tuning.json")
        #expect(MatmulTuningCache.defaultPath(environment: ["HOME": "/h"]) == "/h/.cache/vtensor/matmul-tuning.json")
        #expect(MatmulTuningCache.defaultPath(environment: [:]) == nil)
    }
}
