import Foundation
import Testing
@testable import VTensorBench

/// The throughput benchmark's request lengths: ranges, random draws, and the ShareGPT pairs file.
@Suite struct ThroughputWorkloadTests {
    @Test func rangesParseOrSayWhatIsWrong() throws {
        #expect(try ThroughputWorkload.parseRange("128", flag: "--input-len") == 128...128)
        #expect(try ThroughputWorkload.parseRange("128-1024", flag: "--input-len") == 128...1024)
        for bad in ["0", "-5", "9-3", "a", "1-2-3", ""] {
            #expect(throws: (any Error).self) { try ThroughputWorkload.parseRange(bad, flag: "--input-len") }
        }
    }

    @Test func randomLengthsStayInTheirRangesAndRepeatWithTheSeed() {
        let a = ThroughputWorkload.random(count: 500, input: 128...1024, output: 128...512, seed: 3)
        let b = ThroughputWorkload.random(count: 500, input: 128...1024, output: 128...512, seed: 3)
        #expect(a.shapes == b.shapes)
        #expect(a.shapes.allSatisfy { (128...1024).contains($0.input) && (128...512).contains($0.output) })
        #expect(Set(a.shapes.map(\.input)).count > 100, "lengths spread over the range")
    }

    /// The committed ShareGPT sample: 1000 pairs within vLLM's filters (prompt <= 1024, total <= 2048, both >= 4).
    @Test func theCommittedShareGPTPairs() throws {
        let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../scripts/data/sharegpt_v3_lengths.tsv").path
        let workload = try ThroughputWorkload.pairs(path: path, count: 1000)
        #expect(workload.shapes.count == 1000)
        #expect(workload.shapes.allSatisfy { $0.input >= 4 && $0.output >= 4 && $0.input <= 1024 && $0.input + $0.output <= 2048 })
        let meanInput = Double(workload.shapes.reduce(0) { $0 + $1.input }) / 1000
        #expect(meanInput > 200 && meanInput < 260, "ShareGPT's mean prompt is about 230 tokens, got \(meanInput)")
        // More requests than pairs: the pairs repeat in order.
        let longer = try ThroughputWorkload.pairs(path: path, count: 1500)
        #expect(Array(longer.shapes[1000..<1500]) == Array(workload.shapes[0..<500]))
    }

    @Test func malformedPairsAreNamed() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("vtensor-pairs-\(UUID().uuidString).tsv").path
        try "# comment\ninput_tokens\toutput_tokens\n12\t7\n5 x\n".write(toFile: path, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            _ = try ThroughputWorkload.pairs(path: path, count: 3)
            Issue.record("a malformed line was accepted")
        } catch {
            #expect(String(describing: error).contains("line 4"))
        }
    }
}
