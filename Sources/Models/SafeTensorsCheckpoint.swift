#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
#if canImport(Glibc)
import Glibc
#endif

/// A Hugging Face checkpoint directory: either sharded (`model.safetensors.index.json`
/// naming a shard per tensor) or a single `model.safetensors`. All shards are opened and
/// cross-checked against the index up front so a broken download fails at load, not mid-model.
public final class SafeTensorsCheckpoint: @unchecked Sendable {
    public let directory: String
    /// Every tensor in the checkpoint, sorted by name.
    public let tensorNames: [String]
    /// The opened shard files, keyed by file name.
    public let shards: [String: SafeTensorsFile]
    private let location: [String: String]

    private struct Index: Decodable {
        let weightMap: [String: String]
        enum CodingKeys: String, CodingKey { case weightMap = "weight_map" }
    }

    public init(directory: String) throws {
        self.directory = directory
        let indexPath = directory + "/model.safetensors.index.json"
        let singlePath = directory + "/model.safetensors"
        var shards: [String: SafeTensorsFile] = [:]
        var location: [String: String] = [:]
        if access(indexPath, F_OK) == 0 {
            let data = try readModelFile(indexPath)
            let index: Index
            do {
                index = try JSONDecoder().decode(Index.self, from: data)
            } catch let error as DecodingError {
                throw ModelFileError(path: indexPath, "index: \(describeDecodingError(error))")
            }
            for shard in Set(index.weightMap.values).sorted() {
                guard !shard.contains("/") else {
                    throw ModelFileError(path: indexPath, "shard name '\(shard)' must be a file name in the checkpoint directory")
                }
                let shardPath = directory + "/" + shard
                guard access(shardPath, F_OK) == 0 else {
                    throw ModelFileError(path: shardPath, "missing shard file '\(shard)' named by model.safetensors.index.json")
                }
                shards[shard] = try SafeTensorsFile(path: shardPath)
            }
            for (name, shard) in index.weightMap {
                guard shards[shard]!.contains(name) else {
                    throw ModelFileError(path: directory + "/" + shard, "tensor '\(name)' is listed in the index for this shard but not in it")
                }
                location[name] = shard
            }
        } else if access(singlePath, F_OK) == 0 {
            let file = try SafeTensorsFile(path: singlePath)
            shards["model.safetensors"] = file
            for name in file.tensorNames { location[name] = "model.safetensors" }
        } else {
            throw ModelFileError(path: directory, "no model.safetensors.index.json or model.safetensors found")
        }
        self.shards = shards
        self.location = location
        self.tensorNames = location.keys.sorted()
    }

    public func contains(_ name: String) -> Bool { location[name] != nil }

    public func tensor(named name: String) throws -> TensorView {
        guard let shard = location[name], let file = shards[shard] else {
            throw ModelFileError(path: directory, "tensor '\(name)' not found in checkpoint")
        }
        return try file.tensor(named: name)
    }
}

/// Reads a small file (index, config) whole, with a ModelFileError on failure.
func readModelFile(_ path: String) throws -> Data {
    let file = try MappedFile(path: path)
    return Data(file.bytes)
}
