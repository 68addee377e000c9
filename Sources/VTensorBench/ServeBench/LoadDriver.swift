import Glibc
import VTensor

/// What one run (one request rate) measured.
struct RunResult: Sendable {
    var records: [RequestRecord]
    /// Seconds from the first arrival to the last response.
    var duration: Double
    /// The client process's CPU time (user + system) over the run.
    var clientCPUSeconds: Double
    /// Seconds past its arrival time that each unit went out, for units that did not wait for
    /// a concurrency slot: the client's own lag, near zero unless the client is overloaded.
    var sendLags: [Double]
}

/// Sends a workload's units at their arrival times with at most `maxConcurrency` under way
/// (`vllm bench serve`'s semaphore: arrivals past the limit wait for a slot, in order).
enum LoadDriver {
    static func run(_ workload: Workload, arrivals: [Double], maxConcurrency: Int?, client: ServeClient,
                    progress: ServeProgress) async -> RunResult {
        let cpuBefore = processCPUSeconds()
        let start = monotonicNanos()
        var lags: [Double] = []
        // Kept in the order the units were sent (vLLM's per-request lists are in request order).
        let records = await withTaskGroup(of: (Int, [RequestRecord]).self) { group -> [RequestRecord] in
            var byUnit = [[RequestRecord]](repeating: [], count: workload.units.count)
            var inFlight = 0, waited = false
            for (index, unit) in workload.units.enumerated() {
                let due = start + UInt64(arrivals[index] * 1e9)
                let now = monotonicNanos()
                if due > now + 20_000 { try? await Task.sleep(nanoseconds: due - now) }
                if arrivals[index] > 0, !waited { lags.append(Double(Int64(bitPattern: monotonicNanos() &- due)) / 1e9) }
                waited = false
                if let maxConcurrency {
                    while inFlight >= maxConcurrency, let (unit, done) = await group.next() {
                        byUnit[unit] = done
                        inFlight -= 1
                        waited = true
                    }
                }
                group.addTask { (index, await client.run(unit) { progress.finished($0.succeeded) }) }
                inFlight += 1
            }
            for await (unit, done) in group { byUnit[unit] = done }
            return byUnit.flatMap { $0 }
        }
        let duration = Double(monotonicNanos() - start) / 1e9
        return RunResult(records: records, duration: duration, clientCPUSeconds: processCPUSeconds() - cpuBefore,
                         sendLags: lags.map { max(0, $0) })
    }

    /// Lifts the soft limit on open files to the hard one: without --max-concurrency, a run at
    /// rate inf opens a connection per request (vLLM's client does the same).
    static func raiseOpenFileLimit() {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }

    /// User plus system CPU seconds of this process.
    static func processCPUSeconds() -> Double {
        var usage = rusage()
        getrusage(__rusage_who_t(RUSAGE_SELF.rawValue), &usage)
        func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
        return seconds(usage.ru_utime) + seconds(usage.ru_stime)
    }
}
