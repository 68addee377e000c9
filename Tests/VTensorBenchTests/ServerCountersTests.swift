import Testing
@testable import VTensorBench

/// The server's counters over a run: Prometheus text summed by name, the counters that moved.
@Suite struct ServerCountersTests {
    @Test func parsesSamplesAndSumsLabelSets() {
        let text = """
            # HELP vllm:request_success_total Requests that finished.
            # TYPE vllm:request_success_total counter
            vllm:request_success_total{finished_reason="stop",model_name="m"} 3
            vllm:request_success_total{finished_reason="length",model_name="a } b"} 4
            vllm:num_requests_running 2
            vtensor:mapping_wait_seconds_total 0.25 1700000000
            broken_line_without_value
            vllm:odd NaN

            """
        let values = ServerCounters.parse(text)
        #expect(values == ["vllm:request_success_total": 7, "vllm:num_requests_running": 2, "vtensor:mapping_wait_seconds_total": 0.25])
    }

    @Test func deltasOfCountersThatMovedAndTheirSummary() {
        let before = ["vllm:prefix_cache_queries_total": 100.0, "vllm:prefix_cache_hits_total": 10, "vllm:num_requests_running": 5,
                      "vllm:num_preemptions_total": 2]
        let after = ["vllm:prefix_cache_queries_total": 1100.0, "vllm:prefix_cache_hits_total": 760, "vllm:num_requests_running": 0,
                     "vllm:num_preemptions_total": 2, "vtensor:prefix_cache_takeovers_total": 12, "vtensor:mapping_waits_total": 40,
                     "vtensor:mapping_waits_blocked_total": 3, "vtensor:mapping_wait_seconds_total": 0.012]
        let counters = ServerCounters(before: before, after: after)
        #expect(counters.deltas == ["vllm:prefix_cache_queries_total": 1000, "vllm:prefix_cache_hits_total": 750,
                                    "vtensor:prefix_cache_takeovers_total": 12, "vtensor:mapping_waits_total": 40,
                                    "vtensor:mapping_waits_blocked_total": 3, "vtensor:mapping_wait_seconds_total": 0.012])
        #expect(counters.summary == "server: prefix cache 75.0% of 1000 prompt tokens, 12 takeovers, 3 of 40 steps blocked on the mapper (12 ms)")
        #expect(ServerCounters(before: [:], after: [:]).summary.isEmpty)
        let structured = ServerCounters(before: ["vtensor:structured_output_draws_total": 10, "vtensor:structured_output_mask_seconds_total": 0.001],
                                        after: ["vtensor:structured_output_draws_total": 410, "vtensor:structured_output_mask_seconds_total": 0.021,
                                                "vtensor:synchronized_steps_total": 30])
        #expect(structured.summary == "server: 30 steps synchronized, 400 constrained draws (masks 20 ms, 50.0 us each)")
        let computed = ServerCounters(before: ["vtensor:prompt_tokens_computed_total": 50],
                                      after: ["vtensor:prompt_tokens_computed_total": 250, "vtensor:prefix_cache_attach_failures_total": 2,
                                              "vtensor:prefix_cache_publish_failures_total": 1])
        #expect(computed.summary == "server: 200 prompt tokens computed, 3 prefix cache failures (the server's log says why)")
    }
}
