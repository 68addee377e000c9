import Engine
import Hummingbird

/// What GET /metrics reports: vLLM's metric names (gateways such as the Gateway API Inference
/// Extension's endpoint picker scrape them to route between replicas) and vtensor's own memory
/// gauges under `vtensor:`.
///
/// Read without waiting on a step: the counters and the queue and KV gauges come from the
/// statistics and snapshot the engine publishes under its lock at the end of each step; the
/// latency histograms from the loop; the physical chunk counts from the memory manager's lock,
/// which is held per chunk operation (read at scrape time, so they settle while the engine is
/// idle and no step publishes anything).
struct ServingMetrics {
    var modelName: String
    var statistics: EngineStatistics
    var snapshot: EngineSnapshot
    var latencies: RequestLatencies.Snapshot
    var prefixCaching: Bool
    var kvBlockTokens: Int
    var kvBlocks: Int
    /// The virtual-tensor pool (nil for the paged KV cache).
    var pool: (chunkBytes: Int, budgetChunks: Int, created: Int, inReserve: Int, inUse: Int)?
    /// Requests that took a cached holder's ranges over whole (virtual tensors only).
    var takeovers: Int?

    init(loop: EngineLoop, modelName: String) {
        let engine = loop.engine
        self.modelName = modelName
        statistics = engine.statistics
        snapshot = engine.snapshot
        latencies = loop.latencies.snapshot
        prefixCaching = engine.options.prefixCaching
        kvBlockTokens = engine.kvBlockTokens
        kvBlocks = engine.kvBlocks
        pool = engine.storage.virtualCache.map { cache in
            let counts = cache.memory.poolCounts
            return (counts.chunkSize, counts.budgetChunks, counts.created, counts.inReserve, counts.inUse)
        }
        takeovers = engine.storage.virtualCache?.takeovers
    }

    /// The text, in Prometheus's format 0.0.4.
    func exposition() -> String {
        var out = PrometheusText(commonLabels: [(name: "model_name", value: modelName)])
        let s = statistics

        out.gauge("vllm:num_requests_running", help: "Requests in the running batch.", Double(snapshot.running))
        out.gauge("vllm:num_requests_waiting", help: "Requests waiting to start, or to resume after a preemption.",
                  Double(snapshot.waiting))
        out.gauge("vllm:kv_cache_usage_perc",
                  help: "KV-cache usage from 0 to 1: chunks requests hold over those the budget leaves them (cached chunks no request uses count as free).",
                  snapshot.usage)
        out.gauge("vllm:cache_config_info", help: "The KV cache's block size in tokens and its blocks (value 1).", 1,
                  labels: [(name: "block_size", value: String(kvBlockTokens)), (name: "num_gpu_blocks", value: String(kvBlocks)),
                           (name: "enable_prefix_caching", value: prefixCaching ? "True" : "False")])

        out.counter("vllm:prompt_tokens_total", help: "Prompt tokens of requests that generated a token (cached tokens included).",
                    Double(s.promptTokens))
        out.counter("vllm:generation_tokens_total", help: "Generated tokens.", Double(s.generatedTokens))
        out.counter("vllm:request_success_total",
                    help: "Requests that ended, by reason: stop, length, abort (the client went away or the server stopped), error (a step failed).",
                    [(labels: [(name: "finished_reason", value: "stop")], value: Double(s.finishedEOS + s.finishedStopToken + s.finishedStopString + s.finishedGrammar)),
                     (labels: [(name: "finished_reason", value: "length")], value: Double(s.finishedLength)),
                     (labels: [(name: "finished_reason", value: "abort")], value: Double(s.aborted)),
                     (labels: [(name: "finished_reason", value: "error")], value: Double(s.failed))])
        out.counter("vllm:num_preemptions_total", help: "Running requests preempted to free KV memory.", Double(s.preemptions))
        out.counter("vllm:prefix_cache_queries_total", help: "Prefix cache queries, in tokens (the tokens of admitted requests).",
                    Double(s.prefixQueriedTokens))
        out.counter("vllm:prefix_cache_hits_total", help: "Prefix cache hits, in tokens.", Double(s.prefixHitTokens))

        out.histogram("vllm:time_to_first_token_seconds", help: "Time from arrival to the first generated token.",
                      latencies.timeToFirstToken)
        out.histogram("vllm:inter_token_latency_seconds",
                      help: "Time between two generated tokens (each of a request's gaps counted at its mean).", latencies.interToken)
        out.histogram("vllm:e2e_request_latency_seconds", help: "Time from arrival to the end of ended requests.", latencies.endToEnd)
        out.histogram("vllm:request_queue_time_seconds", help: "Time from arrival to the first step.", latencies.queue)

        if let pool {
            out.gauge("vtensor:kv_chunks_mapped",
                      help: "Physical KV chunks mapped into virtual tensors (the prefix cache's and retiring mappings included).",
                      Double(pool.inUse))
            out.gauge("vtensor:kv_chunks_reserve", help: "Physical chunks created and mapped nowhere: the warm reserve.",
                      Double(pool.inReserve))
            out.gauge("vtensor:kv_device_memory_bytes", help: "Device memory the KV pool holds: created chunks times the chunk size.",
                      Double(pool.created * pool.chunkBytes))
            out.gauge("vtensor:kv_chunk_bytes", help: "The size of one physical chunk.", Double(pool.chunkBytes))
            out.gauge("vtensor:kv_budget_chunks", help: "The most chunks the pool may create.", Double(pool.budgetChunks))
        }
        out.gauge("vtensor:prefix_cache_chunks", help: "KV chunks (or pages) the prefix cache holds.", Double(snapshot.prefixCacheChunks))
        if let takeovers {
            out.counter("vtensor:prefix_cache_takeovers_total",
                        help: "Requests that took a cached sequence's ranges over whole, mappings and all (a conversation's next round): no chunk mapped.",
                        Double(takeovers))
        }
        out.counter("vtensor:prompt_tokens_computed_total",
                    help: "Prompt tokens the model computed (cached prefixes not included; recomputation after a preemption included).",
                    Double(s.promptTokensComputed))
        out.counter("vtensor:prefix_cache_kept_chunks_total",
                    help: "KV chunks (or pages) the prefix cache kept, from requests that left or from running requests' computed prompts.",
                    Double(s.prefixKeptChunks))
        out.counter("vtensor:prefix_cache_evicted_chunks_total", help: "KV chunks (or pages) the prefix cache gave back.",
                    Double(s.prefixEvictedChunks))
        out.counter("vtensor:prefix_cache_attach_failures_total",
                    help: "Cached prefixes found but not reused: the request computed them again (should stay 0).",
                    Double(s.prefixAttachFailures))
        out.counter("vtensor:prefix_cache_publish_failures_total",
                    help: "Running requests' computed prompt chunks the cache could not share with waiting requests (should stay 0).",
                    Double(s.prefixPublishFailures))
        out.counter("vtensor:prefix_cache_packs_total",
                    help: "Published prefixes the cache took as a copy packed into one allocation (--pack-prefix-chunks).",
                    Double(s.prefixPacks))
        out.counter("vtensor:prefix_cache_packed_chunks_total", help: "KV chunks copied into packed prefixes.",
                    Double(s.prefixPackedChunks))
        out.counter("vtensor:prefix_cache_pack_failures_total",
                    help: "Prefixes the store refused to pack with an error (kept unpacked; should stay 0).", Double(s.prefixPackFailures))
        out.counter("vtensor:prefetches_total", help: "Waiting requests given their first prompt chunk's KV ahead of admission (virtual tensors).",
                    Double(s.prefetches))
        out.counter("vtensor:prefetches_released_total", help: "Prefetched requests that gave their KV back for memory a running request needed.",
                    Double(s.prefetchesReleased))
        out.counter("vtensor:prefetches_aliased_ahead_total",
                    help: "Prefetches further back than the next step that aliased their cached prefix ahead.", Double(s.aliasedAhead))
        out.counter("vtensor:mapping_waits_total", help: "Steps that waited for the mapper before running.", Double(s.mappingWaits))
        out.counter("vtensor:mapping_waits_blocked_total", help: "Steps whose mapping was not done when they needed it.",
                    Double(s.blockedMappingWaits))
        out.counter("vtensor:mapping_wait_seconds_total", help: "Time steps spent blocked on the mapper.", s.mappingWaitSeconds)
        out.counter("vtensor:synchronized_steps_total",
                    help: "Steps that waited for the step before them to finish (a draw needed its previous pick: penalties, min_tokens, a grammar).",
                    Double(s.synchronizedSteps))
        out.counter("vtensor:structured_output_draws_total", help: "Tokens drawn under a request's grammar (structured output).",
                    Double(s.constrainedDraws))
        out.counter("vtensor:structured_output_mask_seconds_total", help: "Time the engine's thread spent finding grammar masks.",
                    s.grammarMaskSeconds)
        return out.text
    }
}

extension OpenAIServer {
    /// GET /metrics. Open like /health (scrapers send no API key, as with vLLM's --api-key).
    func metrics() -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; version=0.0.4; charset=utf-8"
        let text = ServingMetrics(loop: loop, modelName: configuration.servedModelName).exposition()
        return Response(status: .ok, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }
}
