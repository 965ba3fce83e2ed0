/// The connection lifecycle as a value type: each event is a `mutating func` that returns
/// what the connection must do. It never touches a socket, so it is unit-tested line by line.
///
/// ```
/// idle ─start→ connecting ─connected→ handshaking ─handshakeSucceeded→ ready
///                  │                      │                               │ connectionLost
///                  └────── failed ────────┴──→ (first time) closed        ↓
///                                           (later) waitingToReconnect ←──┘
///                                                 │ reconnectTimerFired → connecting
/// ready ─close→ closing ─disconnected→ closed
/// ```
struct ConnectionStateMachine: Sendable {
    enum State: Equatable, Sendable {
        case idle
        /// A TCP/unix connect is in progress (`attempt` counts reconnect attempts; 0 = first connect).
        case connecting(attempt: Int)
        /// Connected; AUTH/SELECT/CLIENT SETNAME sent, replies pending.
        case handshaking(attempt: Int)
        case ready
        /// Lost; a timer will start attempt number `attempt`.
        case waitingToReconnect(attempt: Int)
        /// `close()` was called; pending replies drain, then the socket closes.
        case closing
        case closed
    }

    enum Action: Equatable, Sendable {
        case none
        /// Open a new hiredis context.
        case connect
        /// Send AUTH/SELECT/CLIENT SETNAME (or report ready at once when there is nothing to send).
        case sendHandshake
        /// The connection is usable: send queued commands. `reconnected` is true after a loss.
        case becomeReady(reconnected: Bool)
        /// The very first connect failed: report it to `connect()`'s caller and close.
        case failFirstConnect(RedisError)
        /// Fail the commands in flight on the lost socket, then wait before attempt `attempt`.
        case failInFlightAndScheduleReconnect(RedisError, attempt: Int)
        /// A reconnect attempt failed: wait before attempt `attempt` (queued commands keep waiting).
        case scheduleReconnect(attempt: Int)
        /// Give up: fail everything in flight or queued, and close.
        case failAllAndClose(RedisError)
        /// Close requested while connected: let pending replies drain, then disconnect.
        case disconnectGracefully
        /// Close requested while not connected: drop the attempt or timer, fail what is queued.
        case abortAndClose
        /// The socket closed after a graceful close.
        case finishClose
    }

    private(set) var state: State = .idle
    private let policy: ReconnectPolicy

    init(policy: ReconnectPolicy) {
        self.policy = policy
    }

    var isReady: Bool { state == .ready }
    var isClosed: Bool { state == .closed || state == .closing }

    mutating func start() -> Action {
        guard case .idle = state else { preconditionFailure("start() called in state \(state)") }
        state = .connecting(attempt: 0)
        return .connect
    }

    mutating func connected() -> Action {
        guard case .connecting(let attempt) = state else { return .none }
        state = .handshaking(attempt: attempt)
        return .sendHandshake
    }

    mutating func handshakeSucceeded() -> Action {
        guard case .handshaking(let attempt) = state else { return .none }
        state = .ready
        return .becomeReady(reconnected: attempt > 0)
    }

    /// A connect or its handshake failed (refused, timed out, authentication refused).
    mutating func connectFailed(_ error: RedisError) -> Action {
        switch state {
        case .connecting(let attempt), .handshaking(let attempt):
            if attempt == 0 {
                state = .closed
                return .failFirstConnect(error)
            }
            if let maximum = policy.maximumAttempts, attempt >= maximum {
                state = .closed
                return .failAllAndClose(error)
            }
            state = .waitingToReconnect(attempt: attempt + 1)
            return .scheduleReconnect(attempt: attempt + 1)
        case .closing:
            state = .closed
            return .finishClose
        case .idle, .ready, .waitingToReconnect, .closed:
            return .none
        }
    }

    /// An established connection went away without `close()`.
    mutating func connectionLost(_ error: RedisError) -> Action {
        switch state {
        case .ready:
            guard policy.enabled else {
                state = .closed
                return .failAllAndClose(error)
            }
            state = .waitingToReconnect(attempt: 1)
            return .failInFlightAndScheduleReconnect(error, attempt: 1)
        case .connecting, .handshaking:
            return connectFailed(error)
        case .closing:
            state = .closed
            return .finishClose
        case .idle, .waitingToReconnect, .closed:
            return .none
        }
    }

    mutating func reconnectTimerFired() -> Action {
        guard case .waitingToReconnect(let attempt) = state else { return .none }
        state = .connecting(attempt: attempt)
        return .connect
    }

    mutating func closeRequested() -> Action {
        switch state {
        case .ready:
            state = .closing
            return .disconnectGracefully
        case .idle, .connecting, .handshaking, .waitingToReconnect:
            state = .closed
            return .abortAndClose
        case .closing, .closed:
            return .none
        }
    }

    /// The socket closed cleanly (after `disconnectGracefully`).
    mutating func disconnected() -> Action {
        switch state {
        case .closing:
            state = .closed
            return .finishClose
        case .ready:
            return connectionLost(.closed("the server closed the connection"))
        default:
            return .none
        }
    }
}
