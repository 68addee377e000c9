#if canImport(FoundationEssentials)
import FoundationEssentials
#else
import Foundation
#endif
import Testing
@testable import Models

/// Writes a two-shard checkpoint: a.weight (F32 [2]) in shard 1, b.weight (U8 [3]) in shard 2.
func writeShardedCheckpoint(index: String? = nil, skipShard2: Bool = false) -> String {
    let dir = stTempDir()
    let s1 = "model-00001-of-00002.safetensors", s2 = "model-00002-of-00002.safetensors"
    stWrite(safetensorsBytes(header: #"{"a.weight":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#, data: stBytes([Float(1.5), 2.5])), to: dir + "/" + s1)
    if !skipShard2 {
        stWrite(safetensorsBytes(header: #"{"b.weight":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}"#, data: [9, 8, 7]), to: dir + "/" + s2)
    }
    let json = index ?? #"{"metadata":{"total_size":11},"weight_map":{"a.weight":"\#(s1)","b.weight":"\#(s2)"}}"#
    stWrite(Array(json.utf8), to: dir + "/model.safetensors.index.json")
    return dir
}

func checkpointError(_ dir: String) -> ModelFileError? {
    do { _ = try SafeTensorsCheckpoint(directory: dir); return nil } catch let e as ModelFileError { return e } catch {
        Issue.record("unexpected \(error)"); return nil
    }
}

@Test func shardedCheckpointFindsTensorsAcrossShards() throws {
    let ckpt = try SafeTensorsCheckpoint(directory: writeShardedCheckpoint())
    #expect(ckpt.tensorNames == ["a.weight", "b.weight"])
    #expect(ckpt.shards.count == 2)
    let a = try ckpt.tensor(named: "a.weight")
    #expect(Array(a.bytes.bindMemory(to: Float.self)) == [1.5, 2.5])
    #expect(Array(try ckpt.tensor(named: "b.weight").bytes) == [9, 8, 7])
    do { _ = try ckpt.tensor(named: "c.weight"); Issue.record("found") } catch let e as ModelFileError {
        #expect(e.problem.contains("tensor 'c.weight' not found"))
    }
}

@Test func singleFileCheckpoint() throws {
    let dir = stTempDir()
    stWrite(safetensorsBytes(header: #"{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#, data: [5]), to: dir + "/model.safetensors")
    let ckpt = try SafeTensorsCheckpoint(directory: dir)
    #expect(ckpt.tensorNames == ["x"])
    #expect(Array(try ckpt.tensor(named: "x").bytes) == [5])
}

@Test func checkpointErrorsAreNamed() {
    #expect(checkpointError(stTempDir())?.problem.contains("no model.safetensors.index.json or model.safetensors") == true)
    let missing = checkpointError(writeShardedCheckpoint(skipShard2: true))
    #expect(missing?.problem.contains("missing shard file 'model-00002-of-00002.safetensors'") == true)
    #expect(missing?.path.hasSuffix("model-00002-of-00002.safetensors") == true)
    let wrong = #"{"weight_map":{"a.weight":"model-00002-of-00002.safetensors"}}"#
    #expect(checkpointError(writeShardedCheckpoint(index: wrong))?.problem.contains("listed in the index for this shard but not in it") == true)
    #expect(checkpointError(writeShardedCheckpoint(index: #"{"metadata":{}}"#))?.problem.contains("missing key 'weight_map'") == true)
    #expect(checkpointError(writeShardedCheckpoint(index: "nope"))?.problem.contains("not valid JSON") == true)
}
