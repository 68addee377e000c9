import Foundation

/// The choices of the cuBLASLt autotune (`GPUModel.Options.matmulAutotune`) kept in a JSON file,
/// so a later load on the same device and cuBLASLt runs the same algorithms without timing them
/// again: its outputs are the same from one start to the next, and its load is shorter.
///
/// A key names everything a choice depends on: the device, its compute capability, the
/// cuBLASLt version, the product's shape and types, and the workspace the algorithms may use.
/// An entry is a hint, never trusted blindly: the model uses a cached algorithm only if the
/// heuristic still offers exactly that algorithm for the product, and times again otherwise.
public struct MatmulTuningCache: Codable, Sendable, Equatable {
    public struct Entry: Codable, Sendable, Equatable {
        /// The chosen algorithm's opaque 64 bytes as 16 hex digits a word, 8 words; nil: the
        /// heuristic's own pick was fastest (or not beaten by enough).
        public var algorithm: String?
        /// The heuristic's pick and the fastest candidate, microseconds a run, when timed.
        public var heuristicMicroseconds: Double
        public var bestMicroseconds: Double
        /// How many candidates were timed.
        public var candidates: Int

        public init(algorithm: String?, heuristicMicroseconds: Double, bestMicroseconds: Double, candidates: Int) {
            self.algorithm = algorithm
            self.heuristicMicroseconds = heuristicMicroseconds
            self.bestMicroseconds = bestMicroseconds
            self.candidates = candidates
        }
    }

    /// The file's layout; a file of another version is ignored and rewritten.
    public static let formatVersion = 1
    public var format = MatmulTuningCache.formatVersion
    public var entries: [String: Entry] = [:]

    public init(entries: [String: Entry] = [:]) { self.entries = entries }

    /// The key of one product's choice.
    /// - Parameters:
    ///   - device: the device's name and compute capability, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
    ///   - library: the cuBLASLt version, e.g. "13.1.0".
    ///   - m, n, k: the product's shape (D is m x n; n is the bucketed token count).
    ///   - output: the type of D ("bf16", "f32").
    ///   - accumulate: D += product (beta 1) rather than D = product.
    ///   - workspaceBytes: the workspace the algorithms may use.
    ///   - splitK: whether the candidates included split-K variants (a choice made without them
    ///     is not the answer of a search with them).
    public static func key(device: String, library: String, m: Int, n: Int, k: Int, output: String, accumulate: Bool,
                           workspaceBytes: Int, splitK: Bool = false) -> String {
        "\(device) | cuBLASLt \(library) | \(m)x\(n)x\(k) bf16 -> \(output)\(accumulate ? " accumulate" : "") | workspace \(workspaceBytes)"
            + (splitK ? " | split-K" : "")
    }

    /// The words of a cuBLASLt algorithm value as the hex an entry stores.
    public static func hex(_ words: [UInt64]) -> String {
        words.map { word in
            let digits = String(word, radix: 16)
            return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
        }.joined()
    }

    /// Reads the cache at `path`. A missing file is an empty cache; a file that is not a cache of
    /// this format throws `MatmulTuningCacheError.unreadable`, naming the path and the problem.
    public static func load(path: String) throws -> MatmulTuningCache {
        let url = URL(fileURLWithPath: path)
        guard FileManager.default.fileExists(atPath: path) else { return MatmulTuningCache() }
        let data: Data
        do { data = try Data(contentsOf: url) } catch {
            throw MatmulTuningCacheError.unreadable(path: path, reason: "cannot read it: \(error.localizedDescription)")
        }
        let cache: MatmulTuningCache
        do { cache = try JSONDecoder().decode(MatmulTuningCache.self, from: data) } catch {
            throw MatmulTuningCacheError.unreadable(path: path, reason: "not a tuning cache (\(error))")
        }
        guard cache.format == formatVersion else {
            throw MatmulTuningCacheError.unreadable(path: path, reason: "format \(cache.format), this build reads \(formatVersion)")
        }
        for (key, entry) in cache.entries {
            if let algorithm = entry.algorithm, algorithm.count != 128 || !algorithm.allSatisfy(\.isHexDigit) {
                throw MatmulTuningCacheError.unreadable(path: path, reason: "entry \"\(key)\" has an algorithm that is not 64 bytes of hex")
            }
        }
        return cache
    }

    /// Writes the cache to `path` (its folder created if missing) through a temporary file
    /// renamed over it, so a reader never sees half a file. Entries already in the file that
    /// this cache lacks (another process's products) are kept.
    public func save(path: String) throws {
        let url = URL(fileURLWithPath: path)
        var merged = (try? Self.load(path: path)) ?? MatmulTuningCache()
        merged.entries.merge(entries) { _, mine in mine }
        do {
            try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).\(getpid()).tmp")
            try encoder.encode(merged).write(to: temporary)
            if rename(temporary.path, path) != 0 {
                let code = errno
                try? FileManager.default.removeItem(at: temporary)
                throw MatmulTuningCacheError.unwritable(path: path, reason: String(cString: strerror(code)))
            }
        } catch let error as MatmulTuningCacheError {
            throw error
        } catch {
            throw MatmulTuningCacheError.unwritable(path: path, reason: error.localizedDescription)
        }
    }

    /// Where the cache lives by default: `$VTENSOR_CACHE_DIR`, else `$XDG_CACHE_HOME/vtensor`, else
    /// `$HOME/.cache/vtensor`, then `matmul-tuning.json`; nil with none of them set.
    public static func defaultPath(environment: [String: String]) -> String? {
        let folder: String
        if let dir = environment["VTENSOR_CACHE_DIR"], !dir.isEmpty {
            folder = dir
        } else if let dir = environment["XDG_CACHE_HOME"], !dir.isEmpty {
            folder = dir + "/vtensor"
        } else if let home = environment["HOME"], !home.isEmpty {
            folder = home + "/.cache/vtensor"
        } else {
            return nil
        }
        return folder + "/matmul-tuning.json"
    }
}

public enum MatmulTuningCacheError: Error, CustomStringConvertible, Equatable {
    case unreadable(path: String, reason: String)
    case unwritable(path: String, reason: String)

    public var description: String {
        switch self {
        case let .unreadable(path, reason): return "matmul tuning cache \(path) ignored: \(reason)"
        case let .unwritable(path, reason): return "matmul tuning cache \(path) not written: \(reason)"
        }
    }
}
