import Engine
import Hummingbird
import NIOCore
import Synchronization

// A client that goes away must free its request's place in the engine at once, also while the
// request waits in the queue and nothing is written to it (a write to a closed socket is the
// only sign Hummingbird gives otherwise). Each connection's pipeline carries a `ConnectionWatch`,
// which hears the client close its side (the server allows half-closure, so that is an
// `inputClosed` event, not an inactive channel) or the connection drop; a request registers what
// to do then, and withdraws it when it is done. Like uvicorn under vLLM, a client that shuts its
// sending side while it waits for the answer counts as gone.

/// Whether a connection's client is still there, and what to run when it leaves.
final class ClientPresence: Sendable {
    private struct State {
        var gone = false
        var next = 0
        var actions: [Int: @Sendable () -> Void] = [:]
    }
    private let state = Mutex(State())

    /// Runs `action` once when the client leaves (at once if it has); returns a token for `withdraw`.
    func onGone(_ action: @escaping @Sendable () -> Void) -> Int {
        let token = state.withLock { s -> Int? in
            guard !s.gone else { return nil }
            s.next += 1
            s.actions[s.next] = action
            return s.next
        }
        guard let token else {
            action()
            return 0
        }
        return token
    }

    func withdraw(_ token: Int) {
        _ = state.withLock { $0.actions.removeValue(forKey: token) }
    }

    fileprivate func leave() {
        let actions = state.withLock { s -> [@Sendable () -> Void] in
            guard !s.gone else { return [] }
            s.gone = true
            defer { s.actions.removeAll() }
            return Array(s.actions.values)
        }
        for action in actions { action() }
    }
}

/// The pipeline handler that tells a connection's `ClientPresence` when the client leaves.
final class ConnectionWatch: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = Never
    let presence = ClientPresence()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        context.fireChannelRead(data)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .some(.inputClosed) = event as? ChannelEvent { presence.leave() }
        context.fireUserInboundEventTriggered(event)
    }

    func channelInactive(context: ChannelHandlerContext) {
        presence.leave()
        context.fireChannelInactive()
    }
}

/// Hummingbird's basic context plus the connection, to find its `ConnectionWatch`.
extension ServerRequestContext {
    /// Aborts every request of `choices` still running if this request's client leaves before `Watch.end()`.
    func abortWhenClientLeaves(_ choices: ChoiceStream, log: CompletionLog) async -> Watch {
        let presence = try? await channel.pipeline.handler(type: ConnectionWatch.self).get().presence
        return Watch(presence: presence, token: presence?.onGone { if choices.abortAll() { log.clientWentAway() } })
    }
}

/// One request's registration with its connection's presence.
struct Watch: Sendable {
    let presence: ClientPresence?
    let token: Int?

    func end() {
        if let presence, let token { presence.withdraw(token) }
    }
}
