import Foundation
import Support

/// What the engine counted since it started: request transitions, steps, tokens and waits.
/// Plain data, copied out under the engine's lock (the server's /metrics reads it).
public struct EngineStatistics: Sendable, Codable, Equatable {
    // Request lifecycle transitions.
    public var requestsAdded = 0
    public var requestsRejected = 0
    /// waiting -> running, the first time.
    public var admitted = 0
    /// running -> preempted.
    public var preemptions = 0
    /// preempted -> running.
    public var resumptions = 0
    /// running -> finished, by cause.
    public var finishedEOS = 0
    public var finishedStopToken = 0
    public var finishedStopString = 0
    /// Ended because the request's grammar was complete (structured output).
    public var finishedGrammar = 0
    public var finishedLength = 0
    /// waiting, running or preempted -> aborted.
    public var aborted = 0
    /// Requests whose step failed (they end aborted, with the error).
    public var failed = 0

    // Steps.
    public var steps = 0
    /// Prompt tokens of requests that generated their first token, counted then, cached ones
    /// included (vLLM's `prompt_tokens`: what usage reports for them).
    public var promptTokens = 0
    public var promptTokensComputed = 0
    /// Prompt tokens computed again after a preemption.
    public var recomputedTokens = 0
    public var generatedTokens = 0
    public var decodeRows = 0
    public var prefillRows = 0
    public var maxRowsInStep = 0
    public var maxTokensInStep = 0
    /// Steps queued while the step before them still ran (the pipelined step), and rows computed
    /// for requests that had already finished by then (an end-of-sequence or stop the host saw
    /// only after the next step was queued): their picks are dropped.
    public var pipelinedSteps = 0
    public var discardedRows = 0
    /// Steps whose planning waited for the step before to finish, because a request's draw needs
    /// the previous pick on the host (penalties).
    public var synchronizedSteps = 0
    /// Pipelined steps whose draws were queued after their forward pass (`EngineOptions.lateDraws`).
    public var lateDrawSteps = 0
    /// Structured output: draws made under a grammar, and the time spent finding their masks.
    public var constrainedDraws = 0
    public var grammarMaskSeconds = 0.0

    /// Waiting requests given their first chunk's KV a step before admission, how many of those
    /// were admitted with it, and how many gave it back for memory a running request needed.
    public var prefetches = 0
    public var prefetchesUsed = 0
    public var prefetchesReleased = 0
    /// Of the prefetches, those further back than the next step that aliased their cached prefix
    /// ahead (`EngineOptions.aliasAheadChunks`).
    public var aliasedAhead = 0

    // Waits on the mapper before a step could run: all of them, and those that blocked.
    public var mappingWaits = 0
    public var blockedMappingWaits = 0
    /// Of the blocked waits, those in steps with only decode rows (steady state: should be 0).
    public var blockedDecodeOnlyWaits = 0
    public var mappingWaitSeconds = 0.0
    public var maxMappingWaitSeconds = 0.0
    /// The longest blocked waits, longest first (at most `MappingWait.kept`): where a run's
    /// waits come from, since a few long ones can outweigh many short ones.
    public var longestMappingWaits: [MappingWait] = []

    // Time on the engine thread: planning and bookkeeping, and inside the model's step.
    public var hostSeconds = 0.0
    public var modelSeconds = 0.0

    // KV memory, in chunks, as the engine committed it.
    public var peakCommittedChunks = 0

    // The prefix cache: tokens of admitted requests looked up and found cached; chunks it kept
    // from requests that left or took from running ones, gave back (evicted), and holds now.
    public var prefixQueriedTokens = 0
    public var prefixHitTokens = 0
    public var prefixKeptChunks = 0
    /// Of the kept chunks, those taken from running requests (their computed prompt chunks,
    /// while requests waited).
    public var prefixSharedRunningChunks = 0
    public var prefixEvictedChunks = 0
    /// Of those, evicted a step early to keep a step's growth free (`EngineOptions.evictAhead`).
    public var chunksEvictedAhead = 0
    public var prefixHeldChunks = 0
    /// Chunks given back inside a slab run whose other chunks are still held (a holder's
    /// evicted tail, say): mapped until the rest goes, counted as committed (now, not a total).
    public var strandedChunks = 0
    /// Cached prefixes found but not aliased (computed again), running requests' chunks the
    /// store would not share, and the last such error: each should stay 0 / nil.
    public var prefixAttachFailures = 0
    public var prefixPublishFailures = 0
    /// Prefixes the cache packed into a slab (a publish waiting requests share, or a cached stretch
    /// running requests map, copied at its next hit), and the chunks copied.
    public var prefixPacks = 0
    /// Packs refused with an error (the prefix stayed unpacked; `prefixLastFailure` says why).
    public var prefixPackFailures = 0
    public var prefixPackedChunks = 0
    public var prefixLastFailure: String?
    /// Hit tokens over queried tokens (0 with nothing queried).
    public var prefixHitRate: Double { prefixQueriedTokens > 0 ? Double(prefixHitTokens) / Double(prefixQueriedTokens) : 0 }

    public var finished: Int { finishedEOS + finishedStopToken + finishedStopString + finishedGrammar + finishedLength }

    mutating func countFinish(_ cause: StopCause) {
        switch cause {
        case .eos: finishedEOS += 1
        case .stopToken: finishedStopToken += 1
        case .stopString: finishedStopString += 1
        case .length: finishedLength += 1
        case .grammarComplete: finishedGrammar += 1
        }
    }
}

/// The queues right now, for gauges.
public struct EngineSnapshot: Sendable, Equatable {
    public var waiting: Int
    public var running: Int
    /// KV chunks committed to requests, and the chunks the budget leaves for them.
    public var committedChunks: Int
    public var capacityChunks: Int
    public var chunkSize: Int
    /// Prompt tokens of waiting and running requests whose K/V is not computed yet (a long
    /// prompt is computed over several steps: progress for the user).
    public var promptTokensLeft = 0
    /// Chunks the prefix cache holds (counted in `committedChunks`), and those of them no
    /// request uses: free for the taking (eviction gives them back on demand).
    public var prefixCacheChunks = 0
    public var evictableChunks = 0

    /// Committed chunks that requests use, over the chunks left for them (vLLM's
    /// `kv_cache_usage_perc`, which also counts cached blocks nobody uses as free).
    public var usage: Double {
        capacityChunks > 0 ? Double(committedChunks - evictableChunks) / Double(capacityChunks) : 0
    }
}

/// A blocked wait on the mapper before a step could run, and what the step and the step in flight
/// (whose end the mapping may have had to wait for) held.
public struct MappingWait: Sendable, Codable, Equatable {
    /// How many of the longest waits the statistics keep.
    public static let kept = 8
    public var step: Int
    public var seconds: Double
    public var rows: Int
    public var promptTokens: Int
    /// Prompt tokens of the step queued before this one and still in flight (nil: none was).
    public var promptTokensInFlight: Int?
    /// Whether the mapping asked for a step ahead (the look-ahead) was unfinished.
    public var aheadUnfinished: Bool
    /// Chunks this step's own job had left to map when it was submitted.
    public var ownChunks: Int
    /// Chunks free in the KV budget after the plan.
    public var freeChunks: Int

    public init(step: Int, seconds: Double, rows: Int, promptTokens: Int, promptTokensInFlight: Int?,
                aheadUnfinished: Bool, ownChunks: Int, freeChunks: Int) {
        self.step = step
        self.seconds = seconds
        self.rows = rows
        self.promptTokens = promptTokens
        self.promptTokensInFlight = promptTokensInFlight
        self.aheadUnfinished = aheadUnfinished
        self.ownChunks = ownChunks
        self.freeChunks = freeChunks
    }

    /// `waits` with `more` in, the longest `kept`, longest first.
    static func longest(_ waits: [MappingWait], _ more: [MappingWait]) -> [MappingWait] {
        waits.keepingLargest(more, limit: kept) { ($0.seconds, $1.step) > ($1.seconds, $0.step) }
    }
}

/// Where the stepping thread's time went in the step that queued step `step`: taking in new
/// requests and aborts (and, unpipelined, collecting the step before), planning (scheduling and
/// eviction ahead), queueing (admissions, mapping, of which the waits on the mapper that found it
/// busy, and the model's planning and launches), and collecting the step in flight (its wait on
/// the device and the outputs' bookkeeping: finishes, publishing to the prefix cache).
public struct StepTrace: Sendable, Codable, Equatable {
    public var step = 0
    public var beforePlanMs = 0.0
    public var planMs = 0.0
    public var queueMs = 0.0
    public var blockedMappingMs = 0.0
    /// Of the queueing: mapping memory in all (this step's, then the look-ahead for the next
    /// ones: prefetched admissions, prefixes aliased ahead), and its waits on the mapper.
    public var mapMs = 0.0
    public var mapWaitMs = 0.0
    public var modelQueueMs = 0.0
    public var collectMs = 0.0
    public var totalMs = 0.0
    public init() {}

    /// One line for reports.
    public var summary: String {
        func ms(_ value: Double) -> String { String(format: "%.1f", value) }
        return "before plan \(ms(beforePlanMs)), plan \(ms(planMs)), queue \(ms(queueMs)) (map \(ms(mapMs)), of which waits \(ms(mapWaitMs)); "
            + "model \(ms(modelQueueMs))), collect \(ms(collectMs)), all \(ms(totalMs)) ms"
    }
}
