import ArgumentParser
import Testing
@testable import VTensorBench

/// `bench serve`'s flags: bad values are refused before anything is sent, with a message that
/// names the flag.
@Suite struct ServeCommandLineTests {
    func message(_ arguments: [String]) -> String? {
        do {
            _ = try BenchServeCommand.parse(arguments)
            return nil
        } catch {
            return BenchServeCommand.message(for: error)
        }
    }

    @Test func badValuesAreNamed() {
        let cases: [([String], String)] = [
            (["--random-range-ratio", "1"], "--random-range-ratio must be in [0, 1)"),
            (["--random-input-len", "0"], "--random-input-len"),
            (["--num-prompts", "-3"], "--num-prompts must be at least 1, got -3"),
            (["--request-rate", "0"], "--request-rate takes a positive number"),
            (["--request-rate", "fast"], "--request-rate takes a positive number"),
            (["--sweep-rates", "1,x,inf"], "--sweep-rates takes a positive number"),
            (["--burstiness", "0"], "--burstiness must be positive"),
            (["--max-concurrency", "0"], "--max-concurrency must be at least 1"),
            (["--percentiles", "50,101"], "--percentiles takes numbers in (0, 100]"),
            (["--goodput", "ttft=200"], "--goodput takes NAME:MILLISECONDS pairs"),
            (["--goodput", "speed:3"], "unknown metric \"speed\""),
            (["--base-url", "https://example.test"], "https is not supported"),
            (["--base-url", "localhost:8000"], "must start with http://"),
            (["--dataset", "custom"], "--dataset custom needs --dataset-path"),
            (["--dataset", "shared-prefix", "--num-prompts", "5"], "--num-prompts does not apply to --dataset shared-prefix"),
            (["--dataset", "random", "--dataset-path", "x.json"], "--dataset-path applies to --dataset sharegpt and custom"),
            (["--endpoint", "/v1/embeddings"], "/v1/embeddings"),
            (["--timeout", "-1"], "--timeout must be positive"),
        ]
        for (arguments, expected) in cases {
            let got = message(arguments)
            #expect(got?.contains(expected) == true, "\(arguments): \(got ?? "accepted")")
        }
    }

    @Test func goodFlagsParse() throws {
        let command = try BenchServeCommand.parse(["--base-url", "http://127.0.0.1:9000/api", "--endpoint", "/v1/chat/completions",
                                                   "--sweep-rates", "1,2.5,inf", "--goodput", "ttft:200", "tpot:50", "--ignore-eos",
                                                   "--percentiles", "50,99.9"])
        #expect(command.endpoint == .chat && command.ignoreEOS)
        #expect(try command.rates == [1, 2.5, .infinity])
        #expect(try command.percentileList == [50, 99.9])
        #expect(try GoodputTargets(command.goodput) == { var g = GoodputTargets(); g.ttft = 200; g.tpot = 50; return g }())
        #expect(ServeReport.percentileWord(99.9) == "p99.9" && ServeReport.percentileWord(50) == "p50")
    }
}
