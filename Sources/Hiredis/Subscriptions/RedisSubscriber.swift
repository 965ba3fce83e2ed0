import Dispatch
import Logging

/// A message received on a subscribed channel.
public struct RedisPubSubMessage: Sendable, Hashable {
    /// The channel it was published to.
    public var channel: String
    /// The pattern that matched, for pattern subscriptions.
    public var pattern: String?
    /// The published bytes.
    public var payload: [UInt8]
    /// The payload as UTF-8 text.
    public var string: String { String(decoding: payload, as: UTF8.self) }

    /// A message as the server delivers it (for tests and adapters).
    public init(channel: String, pattern: String? = nil, payload: [UInt8]) {
        self.channel = channel
        self.pattern = pattern
        self.payload = payload
    }
}

/// The messages of one ``RedisSubscriber/subscribe(_:)`` or ``RedisSubscriber/psubscribe(_:)``
/// call. Dropping it (or cancelling the task that iterates it) unsubscribes.
///
/// Besides messages it yields ``Event/gap`` after the subscriber lost its connection and
/// subscribed again: messages published in between were not received, so a consumer that
/// keeps state should re-read it from the keys. Pub/sub is a wake-up, not the truth.
public struct RedisSubscription: AsyncSequence, Sendable {
    /// What a subscription yields.
    public enum Event: Sendable, Hashable {
        /// A message published to a subscribed channel (or matching a pattern).
        case message(RedisPubSubMessage)
        /// The connection was lost and re-established; messages may have been missed.
        case gap
    }

    public typealias Element = Event
    let stream: AsyncThrowingStream<Event, any Error>

    public func makeAsyncIterator() -> AsyncThrowingStream<Event, any Error>.Iterator {
        stream.makeAsyncIterator()
    }
}

/// A connection in subscribe mode (RESP2 needs one of its own) that hands messages out as
/// async sequences, re-subscribes after a reconnect and reports the gap.
///
/// ```swift
/// let subscriber = try await RedisSubscriber.connect(configuration)
/// let news = try await subscriber.subscribe(["news"])   // confirmed by the server
/// for try await event in news {
///     switch event {
///     case .message(let message): print(message.string)
///     case .gap: reloadState()
///     }
/// }
/// ```
public final actor RedisSubscriber {
    let connection: RedisConnection
    private var targets: [Target: TargetState] = [:]
    private var listeners: [UInt64: Listener] = [:]
    private var nextListenerID: UInt64 = 0
    private var nextWaiterID: UInt64 = 0
    private var closed = false

    /// Runs on the connection's queue, like the connection itself.
    public nonisolated var unownedExecutor: UnownedSerialExecutor { connection.unownedExecutor }

    private enum Target: Hashable, CustomStringConvertible {
        case channel(String)
        case pattern(String)
        var name: String {
            switch self { case .channel(let n), .pattern(let n): return n }
        }
        var description: String {
            switch self {
            case .channel(let n): return "channel \(n)"
            case .pattern(let n): return "pattern \(n)"
            }
        }
    }

    private enum Phase: Equatable {
        case subscribing
        case subscribed
        /// UNSUBSCRIBE sent; `resubscribe` when a new listener arrived meanwhile.
        case unsubscribing(resubscribe: Bool)
    }

    private struct TargetState {
        var phase: Phase
        var listeners: Set<UInt64> = []
        var waiters: [(id: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    private struct Listener {
        var continuation: AsyncThrowingStream<RedisSubscription.Event, any Error>.Continuation
        var targets: [Target]
        var awaitingGap = false
    }

    /// Connects a subscriber. Throws as ``RedisConnection/connect(_:)`` does.
    public static func connect(_ configuration: RedisConfiguration) async throws -> RedisSubscriber {
        try configuration.validate()
        let connection = RedisConnection(configuration: configuration, role: .subscriber)
        let subscriber = RedisSubscriber(connection: connection)
        await subscriber.installHandlers()
        try await connection.start()
        return subscriber
    }

    private init(connection: RedisConnection) {
        self.connection = connection
    }

    deinit {
        for listener in listeners.values {
            listener.continuation.finish(throwing: RedisError.closed("the subscriber was released"))
        }
    }

    private func installHandlers() {
        connection.assumeIsolated { connection in
            connection.pushHandler = { [weak self] reply in
                self?.assumeIsolated { $0.received(reply) }
            }
            connection.readyHandler = { [weak self] reconnected in
                guard reconnected else { return }
                self?.assumeIsolated { $0.resubscribeAll() }
            }
            connection.closedHandler = { [weak self] error in
                self?.assumeIsolated { $0.finishAll(RedisError.closed("the subscriber's connection was lost: \(error.message)")) }
            }
        }
    }

    /// Subscribes to channels; returns once the server confirmed every one.
    ///
    /// - Throws: ``RedisError/Code/invalidArgument`` for an empty list or name (nothing
    ///   sent), ``RedisError/Code/timeout`` when the confirmation does not arrive within the
    ///   command timeout, ``RedisError/Code/connectionClosed`` after ``close()``.
    public func subscribe(_ channels: [String]) async throws -> RedisSubscription {
        try await listen(channels.map(Target.channel))
    }

    /// Subscribes to glob-style patterns (`PSUBSCRIBE`); messages carry the pattern.
    public func psubscribe(_ patterns: [String]) async throws -> RedisSubscription {
        try await listen(patterns.map(Target.pattern))
    }

    /// Unsubscribes everything, ends every subscription's sequence, and closes the connection.
    public func close() async {
        finishAll(nil)
        await connection.close()
    }

    // MARK: Internals

    private func listen(_ wanted: [Target]) async throws -> RedisSubscription {
        guard !wanted.isEmpty else { throw RedisError.invalidArgument("subscribe needs at least one channel or pattern") }
        if let empty = wanted.first(where: { $0.name.isEmpty }) {
            throw RedisError.invalidArgument("an empty \(empty) name cannot be subscribed")
        }
        guard !closed else { throw RedisError.closed("the subscriber is closed") }
        let unique = Array(Set(wanted))
        let (stream, continuation) = AsyncThrowingStream<RedisSubscription.Event, any Error>.makeStream()
        nextListenerID += 1
        let id = nextListenerID
        listeners[id] = Listener(continuation: continuation, targets: unique)
        let queue = connection.executor.queue
        continuation.onTermination = { [weak self] _ in
            queue.async { [weak self] in self?.assumeIsolated { $0.removeListener(id) } }
        }
        var toSend: [Target] = []
        for target in unique {
            if var state = targets[target] {
                state.listeners.insert(id)
                if case .unsubscribing = state.phase { state.phase = .unsubscribing(resubscribe: true) }
                targets[target] = state
            } else {
                targets[target] = TargetState(phase: .subscribing, listeners: [id])
                toSend.append(target)
            }
        }
        send(subscribe: true, toSend)
        do {
            for target in unique where targets[target]?.phase != .subscribed {
                try await waitForConfirmation(of: target)
            }
        } catch {
            removeListener(id)
            throw error
        }
        return RedisSubscription(stream: stream)
    }

    private func waitForConfirmation(of target: Target) async throws {
        nextWaiterID += 1
        let waiterID = nextWaiterID
        let timeout = connection.configuration.commandTimeout ?? connection.configuration.connectTimeout
        let timer = DispatchWorkItem { [weak self] in
            self?.assumeIsolated { subscriber in
                guard var state = subscriber.targets[target],
                      let index = state.waiters.firstIndex(where: { $0.id == waiterID }) else { return }
                let waiter = state.waiters.remove(at: index)
                subscriber.targets[target] = state
                waiter.continuation.resume(throwing: RedisError(.timeout, "the server did not confirm the subscription to \(target) within \(timeout)"))
            }
        }
        connection.executor.queue.asyncAfter(deadline: .now() + timeout.dispatch, execute: timer)
        defer { timer.cancel() }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            targets[target, default: TargetState(phase: .subscribing)].waiters.append((waiterID, continuation))
        }
    }

    private func send(subscribe: Bool, _ list: [Target]) {
        let channels = list.compactMap { if case .channel(let n) = $0 { return n } else { return nil } }
        let patterns = list.compactMap { if case .pattern(let n) = $0 { return n } else { return nil } }
        // Not connected: nothing to do now, `resubscribeAll` runs after the reconnect.
        if !channels.isEmpty {
            _ = connection.assumeIsolated { $0.sendSubscription(RedisCommand(subscribe ? "SUBSCRIBE" : "UNSUBSCRIBE", arguments: channels)) }
        }
        if !patterns.isEmpty {
            _ = connection.assumeIsolated { $0.sendSubscription(RedisCommand(subscribe ? "PSUBSCRIBE" : "PUNSUBSCRIBE", arguments: patterns)) }
        }
    }

    private func removeListener(_ id: UInt64) {
        guard let listener = listeners.removeValue(forKey: id) else { return }
        listener.continuation.finish()
        var toUnsubscribe: [Target] = []
        for target in listener.targets {
            guard var state = targets[target] else { continue }
            state.listeners.remove(id)
            if state.listeners.isEmpty {
                switch state.phase {
                case .subscribed:
                    state.phase = .unsubscribing(resubscribe: false)
                    toUnsubscribe.append(target)
                case .unsubscribing:
                    state.phase = .unsubscribing(resubscribe: false)
                case .subscribing:
                    break  // unsubscribed when the confirmation arrives
                }
            }
            targets[target] = state
        }
        send(subscribe: false, toUnsubscribe)
    }

    private func received(_ reply: RedisReply) {
        guard case .array(let parts) = reply, parts.count >= 2, case .bulk(let kindBytes) = parts[0] else { return }
        let kind = String(decoding: kindBytes, as: UTF8.self).lowercased()
        func text(_ i: Int) -> String? {
            guard i < parts.count, case .bulk(let b) = parts[i] else { return nil }
            return String(decoding: b, as: UTF8.self)
        }
        switch kind {
        case "message":
            guard let channel = text(1), parts.count >= 3, case .bulk(let payload) = parts[2] else { return }
            deliver(RedisPubSubMessage(channel: channel, pattern: nil, payload: payload), to: .channel(channel))
        case "pmessage":
            guard let pattern = text(1), let channel = text(2), parts.count >= 4, case .bulk(let payload) = parts[3] else { return }
            deliver(RedisPubSubMessage(channel: channel, pattern: pattern, payload: payload), to: .pattern(pattern))
        case "subscribe", "psubscribe":
            guard let name = text(1) else { return }
            confirmed(kind == "subscribe" ? .channel(name) : .pattern(name))
        case "unsubscribe", "punsubscribe":
            guard let name = text(1) else { return }
            unsubscribed(kind == "unsubscribe" ? .channel(name) : .pattern(name))
        default:
            break
        }
    }

    private func deliver(_ message: RedisPubSubMessage, to target: Target) {
        guard let state = targets[target] else { return }
        for id in state.listeners {
            listeners[id]?.continuation.yield(.message(message))
        }
    }

    private func confirmed(_ target: Target) {
        guard var state = targets[target] else { return }
        guard state.phase == .subscribing else { return }
        state.phase = .subscribed
        let waiters = state.waiters
        state.waiters = []
        if state.listeners.isEmpty {
            state.phase = .unsubscribing(resubscribe: false)
            targets[target] = state
            send(subscribe: false, [target])
        } else {
            targets[target] = state
        }
        for waiter in waiters { waiter.continuation.resume() }
        reportGaps()
    }

    private func unsubscribed(_ target: Target) {
        guard let state = targets[target], case .unsubscribing = state.phase else { return }
        if !state.listeners.isEmpty {
            targets[target]?.phase = .subscribing
            send(subscribe: true, [target])
        } else {
            targets[target] = nil
        }
    }

    /// After a reconnect: subscribe again to everything somebody listens to, and tell each
    /// listener about the gap once all of its targets are confirmed.
    private func resubscribeAll() {
        var again: [Target] = []
        for (target, var state) in targets {
            if state.listeners.isEmpty && state.waiters.isEmpty {
                targets[target] = nil
                continue
            }
            state.phase = .subscribing
            targets[target] = state
            again.append(target)
        }
        for id in listeners.keys { listeners[id]?.awaitingGap = true }
        connection.logger.info("re-subscribing after reconnect", metadata: ["count": "\(again.count)"])
        send(subscribe: true, again)
    }

    private func reportGaps() {
        for (id, listener) in listeners where listener.awaitingGap {
            if listener.targets.allSatisfy({ targets[$0]?.phase == .subscribed }) {
                listeners[id]?.awaitingGap = false
                listener.continuation.yield(.gap)
            }
        }
    }

    private func finishAll(_ error: RedisError?) {
        closed = true
        for (_, state) in targets {
            for waiter in state.waiters {
                waiter.continuation.resume(throwing: error ?? RedisError.closed("the subscriber was closed"))
            }
        }
        targets = [:]
        let all = listeners
        listeners = [:]
        for listener in all.values {
            if let error { listener.continuation.finish(throwing: error) } else { listener.continuation.finish() }
        }
    }
}
