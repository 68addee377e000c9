import Engine
import Hummingbird
import Logging
import ServiceLifecycle

// How `vtensor serve` starts and stops: one ServiceGroup runs the engine and the HTTP application.
//
// SIGTERM or SIGINT starts a graceful shutdown, which the group hands to its services in reverse order:
// 1. HTTP (Hummingbird's graceful shutdown): the listening socket closes, so a new connection is
//    refused; idle keep-alive connections close; a request in flight, streaming or not, runs on and
//    its connection closes after the response. After `shutdownTimeout` the engine is stopped: requests
//    still generating end with finish_reason "abort" (a stream sends that chunk and [DONE]), and a
//    request that reaches the engine after that gets a 503 in OpenAI's error shape.
// 2. Engine, once the HTTP side has returned: its thread finishes the step under way and is joined.
// `run` then returns and the process exits 0. vLLM's `--shutdown-timeout` behaves the same way,
// with the same default of 0: abort at once.

extension OpenAIServer {
    /// The server's logger; request handlers log through `Logger.current`, which carries the request id.
    static let logger = Logger(label: "vtensor")

    /// Runs `app` and the engine until SIGTERM or SIGINT, then drains as described above.
    func serve(_ app: some ApplicationProtocol) async throws {
        let timeout = configuration.shutdownTimeout
        var group = ServiceGroupConfiguration(
            services: [
                .init(service: EngineService(loop: loop)),
                .init(service: HTTPService(app: app, loop: loop, drainTimeout: timeout, logger: Self.logger)),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Self.logger)
        // A backstop for a connection that never drains (a client that stopped reading): the
        // group cancels what is left. The engine's abort at `timeout` normally ends everything first.
        group.maximumGracefulShutdownDuration = timeout + .seconds(10)
        try await ServiceGroup(configuration: group).run()
    }
}

/// The Hummingbird application, and the drain deadline that stops the engine `drainTimeout`
/// after graceful shutdown began, unless every request finished first.
struct HTTPService: Service {
    let app: any Service
    let loop: EngineLoop
    let drainTimeout: Duration
    let logger: Logger

    func run() async throws {
        try await withThrowingTaskGroup(of: Bool.self) { group in
            group.addTask {
                try await app.run()
                return true
            }
            group.addTask { [loop, drainTimeout, logger] in
                try await gracefulShutdown()
                logger.info("shutting down: no new connections; requests in flight have \(seconds(drainTimeout)) to finish")
                try await Task.sleep(for: drainTimeout)
                if loop.engine.hasWork { logger.notice("shutdown timeout reached: aborting the requests still in flight") }
                loop.stop()
                return false
            }
            // The app returns once its connections have drained; the deadline has no more to do then.
            while let appReturned = try await group.next() {
                if appReturned {
                    group.cancelAll()
                    return
                }
            }
        }
    }
}

/// The engine thread, stopped and joined last, when nothing can submit to it any more.
struct EngineService: Service {
    let loop: EngineLoop

    func run() async throws {
        // Returns at graceful shutdown (after the HTTP side, by the group's reverse order) or on cancellation.
        try? await gracefulShutdown()
        // Blocks this pool thread for at most the step under way; the HTTP side is done by now.
        loop.shutdown()
    }
}

/// "1.500s": whole milliseconds, without Foundation's formatters (they pull in ICU).
func seconds(_ duration: Duration) -> String {
    let (whole, attoseconds) = duration.components
    let milliseconds = Int(whole) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
    let fraction = milliseconds % 1000
    let digits = fraction == 0 ? "" : "." + String(String(1000 + fraction).dropFirst())
    return "\(milliseconds / 1000)\(digits)s"
}
