import Engine
import Testing
@testable import Server

/// The /metrics writer against the text format 0.0.4, line by line.
@Suite struct PrometheusTextTests {
    @Test func gaugeAndLabelledCounter() {
        var text = PrometheusText(commonLabels: [(name: "model_name", value: "m")])
        text.gauge("vllm:num_requests_running", help: "Running.", 3)
        text.counter("vllm:request_success_total", help: "Ended.",
                     [(labels: [(name: "finished_reason", value: "stop")], value: 2),
                      (labels: [(name: "finished_reason", value: "length")], value: 0)])
        #expect(text.text == """
            # HELP vllm:num_requests_running Running.
            # TYPE vllm:num_requests_running gauge
            vllm:num_requests_running{model_name="m"} 3.0
            # HELP vllm:request_success_total Ended.
            # TYPE vllm:request_success_total counter
            vllm:request_success_total{model_name="m",finished_reason="stop"} 2.0
            vllm:request_success_total{model_name="m",finished_reason="length"} 0.0

            """)
    }

    /// Buckets are cumulative, end with `+Inf` equal to `_count`, and `le` reads as vLLM's.
    @Test func histogramLines() {
        var histogram = Histogram(upperBounds: [0.001, 1.0, 2560.0])
        for value in [0.0005, 0.5, 0.75, 3000] { histogram.observe(value) }
        var text = PrometheusText()
        text.histogram("vllm:e2e_request_latency_seconds", help: "Latency.", histogram)
        #expect(text.text == """
            # HELP vllm:e2e_request_latency_seconds Latency.
            # TYPE vllm:e2e_request_latency_seconds histogram
            vllm:e2e_request_latency_seconds_bucket{le="0.001"} 1.0
            vllm:e2e_request_latency_seconds_bucket{le="1.0"} 3.0
            vllm:e2e_request_latency_seconds_bucket{le="2560.0"} 3.0
            vllm:e2e_request_latency_seconds_bucket{le="+Inf"} 4.0
            vllm:e2e_request_latency_seconds_sum \(PrometheusText.number(0.0005 + 0.5 + 0.75 + 3000))
            vllm:e2e_request_latency_seconds_count 4.0

            """)
    }

    @Test func escapingAndNumbers() {
        #expect(PrometheusText.escapeLabel("a\"b\\c\nd\r\ne") == #"a\"b\\c\nd"# + "\r" + #"\ne"#)
        #expect(PrometheusText.escapeHelp("say \"hi\"\\\n") == #"say "hi"\\\n"#)
        #expect(PrometheusText.number(.infinity) == "+Inf" && PrometheusText.number(-.infinity) == "-Inf")
        #expect(PrometheusText.number(.nan) == "NaN")
        #expect(PrometheusText.number(0.00001) == "1e-05")
        #expect(PrometheusText.isValidName("vllm:kv_cache_usage_perc") && PrometheusText.isValidName("_x1"))
        #expect(!PrometheusText.isValidName("1x") && !PrometheusText.isValidName("a-b") && !PrometheusText.isValidName(""))
    }
}
