import Foundation
import Hiredis
import Logging
import Synchronization

/// dlock in Swift: one action at a time across any number of processes and machines.
///
/// It needs two connections: `client` for locks (it can be shared with the rest of the
/// app) and `pubsub`, a subscriber for the broadcast of outcomes and wake-ups.
///
/// ```swift
/// let queue = try CallbackQueue(client: connection, pubsub: subscriber,
///                               options: CallbackQueueOptions(channel: "{jobs}"))
/// let lock = try await queue.once("report:2026-11")
/// defer { Task { try? await lock.release() } }
/// ```
public final actor CallbackQueue {
    /// Where locks are taken (a connection, a Sentinel-backed connection, or a cluster).
    public nonisolated let client: any RedisClient
    /// The subscriber that hears outcomes and wake-ups on ``CallbackQueueOptions/channel``.
    public nonisolated let pubsub: RedisSubscriber
    /// The queue's channel, key prefix and default lock options.
    public nonisolated let options: CallbackQueueOptions
    nonisolated var logger: Logger { options.logger }
    /// Made once per queue.
    nonisolated let metrics: LockMetrics

    private var listener: Task<Void, Never>?
    var entries: [String: CoalesceEntry] = [:]
    private var signals: [String: [UInt64: CheckedContinuation<Void, Never>]] = [:]
    var nextID: UInt64 = 0
    /// Local first-come first-served lines (semaphore takers), by line name: tickets, oldest first.
    var turnLines: [String: [UInt64]] = [:]
    var turnWaiters: [UInt64: CheckedContinuation<Void, Never>] = [:]

    /// Listens on `options.channel` through `pubsub`, and takes locks through `client`
    /// (a connection, a Sentinel-backed connection, or a cluster).
    ///
    /// - Throws: `RedisError` `invalidArgument` for an empty channel, bad lock
    ///   options, or an error type registered under an empty name.
    public init(client: any RedisClient, pubsub: RedisSubscriber, options: CallbackQueueOptions) throws {
        guard !options.channel.isEmpty else { throw RedisError.invalidArgument("the pub/sub channel is required") }
        guard options.errorTypes.allSatisfy({ !$0.name.isEmpty }) else {
            throw RedisError.invalidArgument("a registered error type's name is empty")
        }
        try options.lock.validate()
        self.client = client
        self.pubsub = pubsub
        self.options = options
        self.metrics = LockMetrics(factory: options.metricsFactory, dimensions: options.metricsDimensions)
    }

    /// Stops listening on the channel. Waiters still pending get their timeouts.
    public func close() {
        listener?.cancel()
        listener = nil
    }

    // MARK: Locks

    /// Takes the lock on `key` (`SET key token NX PX timeout`, atomically with its fencing
    /// token), retrying `retries` times `delay` apart.
    ///
    /// - Parameters:
    ///   - key: the lock's name (any non-empty string; the prefix is prepended).
    ///   - options: this call's lock options (lease, retries, delay, replicas); `nil` uses
    ///     the queue's ``CallbackQueueOptions/lock``.
    /// - Throws: ``LockAcquisitionError`` when it stayed held; `RedisError` when Redis
    ///   failed (never reported as contention); `RedisError` `invalidArgument` for an empty
    ///   key or invalid options, before anything is sent.
    public nonisolated func once(_ key: String, options: LockOptions? = nil) async throws -> Lock {
        let lock = try lockOptions(options)
        try validateKey(key)
        do {
            return try await acquire([key], lock: lock)[0]
        } catch let failure as AcquireFailure {
            throw failure.errors[0].error
        }
    }

    /// Takes several locks, all or nothing: when one is held, the ones taken are released
    /// and ``MultiLockError`` says which failed. Keys sharing a hash tag are taken in one
    /// script; groups are taken in a fixed order, so overlapping contenders cannot livelock.
    ///
    /// - Parameters:
    ///   - keys: the locks' names; duplicates and empty names are ignored.
    ///   - options: this call's lock options; `nil` uses the queue's.
    /// - Throws: ``MultiLockError`` when a key stayed held; `RedisError` when Redis failed;
    ///   `RedisError` `invalidArgument` for no non-empty key or invalid options.
    public nonisolated func multi(_ keys: String..., options: LockOptions? = nil) async throws -> MultiLock {
        try await multi(keys, options: options)
    }

    /// The array form of the variadic `multi(_:options:)`. Empty strings are dropped;
    /// duplicates merged.
    public nonisolated func multi(_ keys: [String], options: LockOptions? = nil) async throws -> MultiLock {
        let lock = try lockOptions(options)
        var unique: [String] = []
        for key in keys where !key.isEmpty && !unique.contains(key) { unique.append(key) }
        guard !unique.isEmpty else { throw RedisError.invalidArgument("multi needs at least one non-empty key") }
        do {
            return MultiLock(locks: try await acquire(unique, lock: lock))
        } catch let failure as AcquireFailure {
            // The last attempt's: every key found held, and the locks it had taken (given back).
            throw MultiLockError(errors: Dictionary(failure.errors, uniquingKeysWith: { first, _ in first }),
                                 locks: failure.released)
        }
    }

    /// Runs `body` holding the lock on `key`: extends the lease every third of the timeout
    /// while it runs (when `autoExtend`), releases it afterwards (also on throw and on
    /// cancellation), and, if the lease is lost, cancels `body` and throws ``LockLostError``.
    /// `body` does not escape: it has finished when `withLock` returns.
    ///
    /// - Parameters:
    ///   - key: the lock's name.
    ///   - options: this call's lock options; `nil` uses the queue's.
    ///   - autoExtend: whether the lease is extended while `body` runs (default `true`).
    ///   - body: the work done under the lock; it gets the ``Lock`` (its fencing token).
    /// - Throws: what ``once(_:options:)`` throws; ``LockLostError`` when the lease was lost
    ///   while `body` ran; otherwise whatever `body` throws.
    public nonisolated func withLock<T: Sendable>(
        _ key: String, options: LockOptions? = nil, autoExtend: Bool = true,
        _ body: @Sendable (Lock) async throws -> T
    ) async throws -> T {
        let lock = try await once(key, options: options)
        // The watchdog cancels `body` in a task group child, which waits for it to end:
        // it never outlives this call.
        return try await withoutActuallyEscaping(body) { body in
            try await hold(lock, autoExtend: autoExtend, body)
        }
    }

    /// `given` once validated, or the queue's lock options.
    nonisolated func lockOptions(_ given: LockOptions?) throws -> LockOptions {
        guard let given else { return options.lock }
        try given.validate()
        return given
    }

    /// Takes `keys` all or nothing, retrying while one is held.
    ///
    /// - Throws: ``AcquireFailure`` (the last attempt's) when a key stayed held or too few
    ///   replicas acknowledged; `RedisError` when Redis failed.
    nonisolated func acquire(_ keys: [String], lock options: LockOptions) async throws -> [Lock] {
        let retries = options.retries
        let started = ContinuousClock.now
        var attempt = 0
        while true {
            // A token per attempt: a background release left over from an earlier attempt
            // (its reply was lost) can then never delete a lock taken by a later one.
            switch try await tryAcquire(keys, token: OwnerToken.next(), lock: options, probe: attempt == retries) {
            case .success(let locks):
                metrics.acquired(.lock, waited: ContinuousClock.now - started)
                logger.trace("locks taken", metadata: ["keys": "\(keys)", "fencingToken": "\(locks[0].fencingToken)"])
                return locks
            case .failure(let failure):
                metrics.contended(.lock)
                guard attempt < retries else { throw failure }
            }
            attempt += 1
            try await Task.sleep(for: options.jitteredDelay())
        }
    }

    /// One attempt: every slot group in a fixed order; on a held key, releases what it took
    /// and says which keys were held: every held key of the failing group (one script
    /// checks them all) and, when `probe` (the last attempt), of the groups after it (one
    /// read-only script each, so the error names every key that is in the way).
    nonisolated func tryAcquire(
        _ keys: [String], token: String, lock lockOptions: LockOptions, probe: Bool
    ) async throws -> Result<[Lock], AcquireFailure> {
        let ttl = lockOptions.timeout
        let redisKeys = keys.map { options.lockPrefix + $0 }
        var taken: [Lock] = []
        let groups = groupBySlot(Array(redisKeys.indices), redisKey: { redisKeys[$0] })
        for (groupIndex, indices) in groups.enumerated() {
            let lockKeys = indices.map { redisKeys[$0] }
            let fenceKeys = lockKeys.map { sameSlot($0, ":fence") }
            let reply: RedisReply
            do {
                reply = try await client.run(lockKeys.count == 1 ? Scripts.acquireOne : Scripts.acquire,
                                             keys: lockKeys + fenceKeys, arguments: [token, ttl.redisMilliseconds])
            } catch {
                for lock in taken { await lock.releaseSoon() }
                abandon(lockKeys, token: token, ttl: ttl)
                throw error
            }
            let values = try reply.decode([Int64].self)
            if values.first == 0 {
                for lock in taken { await lock.releaseSoon() }
                var held = heldKeys(values.dropFirst(), of: indices, keys)
                if held.isEmpty { held = [keys[indices[0]]] }  // a reply without positions
                if probe {
                    for later in groups[(groupIndex + 1)...] {
                        do {
                            let found = try await client.run(Scripts.held, keys: later.map { redisKeys[$0] }).decode([Int64].self)
                            held += heldKeys(found[...], of: later, keys)
                        } catch {
                            // Known held keys are reported all the same.
                            logger.debug("checking further keys of a multi-lock failed", metadata: ["error": "\(error)"])
                        }
                    }
                }
                return .failure(AcquireFailure(
                    errors: held.map { ($0, LockAcquisitionError(key: $0, reason: "held by another owner")) }, released: taken))
            }
            for (position, index) in indices.enumerated() {
                taken.append(Lock(key: keys[index], redisKey: redisKeys[index], token: token,
                                  fencingToken: values[position], timeout: ttl, connection: client))
            }
        }
        if lockOptions.minReplicas > 0 {
            // The locks (and their fencing counters) reach the replicas before anyone
            // relies on them, or they are given back.
            var acknowledged = Int.max
            do {
                // WAIT on every primary that took a lock (one, unless on a cluster).
                for group in groups {
                    let wait = RedisCommand("WAIT", lockOptions.minReplicas, lockOptions.replicationTimeout.redisMilliseconds)
                    acknowledged = min(acknowledged, try await client.send(wait, routedBy: Array(redisKeys[group[0]].utf8), timeout: nil)
                        .decode(Int.self))
                }
            } catch {
                for lock in taken { await lock.releaseSoon() }
                throw error
            }
            if acknowledged < lockOptions.minReplicas {
                for lock in taken { await lock.releaseSoon() }
                let reason = "only \(acknowledged) of \(lockOptions.minReplicas) replicas acknowledged the lock within \(lockOptions.replicationTimeout)"
                throw AcquireFailure(errors: keys.map { ($0, LockAcquisitionError(key: $0, reason: reason)) }, released: taken)
            }
        }
        // Back in the order the keys were given.
        if taken.count == 1 { return .success(taken) }
        let position = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        return .success(taken.sorted { position[$0.key]! < position[$1.key]! })
    }

    /// The keys at the 1-based `positions` of a slot group (a script's reply), in order.
    nonisolated func heldKeys(_ positions: ArraySlice<Int64>, of indices: [Int], _ keys: [String]) -> [String] {
        positions.compactMap { position -> String? in
            let offset = Int(position) - 1
            return indices.indices.contains(offset) ? keys[indices[offset]] : nil
        }
    }

    /// An acquisition attempt that found keys held (or too few replicas acknowledging).
    struct AcquireFailure: Error {
        /// Every key that failed, in the order found; never empty.
        var errors: [(key: String, error: LockAcquisitionError)]
        /// The locks the attempt had taken, given back.
        var released: [Lock]
    }

    /// An attempt to take `redisKeys` under `token` failed without a reply: it may have run
    /// (a timeout, a dropped connection), leaving locks nobody knows it holds, which would
    /// block every contender for a whole lease. Releases them in the background; the token
    /// is this attempt's own, so nothing else can be released.
    nonisolated func abandon(_ redisKeys: [String], token: String, ttl: Duration) {
        let deadline = ContinuousClock.now + ttl
        for redisKey in redisKeys {
            Task {
                await giveBack(until: { deadline }) {
                    try await self.client.run(Scripts.release, keys: [redisKey], arguments: [token])
                }
            }
        }
    }

    /// Runs `body` under `lock` (with the watchdog when `autoExtend`), then releases it.
    nonisolated func hold<T: Sendable>(
        _ lock: Lock, autoExtend: Bool, _ body: @escaping @Sendable (Lock) async throws -> T
    ) async throws -> T {
        do {
            let value: T
            if autoExtend {
                value = try await Self.runGuarded(key: lock.key, lease: lock.timeout, logger: logger, metrics: (metrics, .lock),
                                                  extend: { try await lock.extend() }, body: { try await body(lock) })
            } else {
                value = try await body(lock)
            }
            await lock.releaseSoon()
            return value
        } catch {
            if error is LockLostError { lock.markLost() }
            if lock.isLocked { await lock.releaseSoon() }
            throw error
        }
    }

    /// Runs `body` beside a watchdog that extends the lease; when the lease is lost first,
    /// cancels `body` and throws ``LockLostError``.
    static func runGuarded<T: Sendable>(
        key: String, lease: Duration, logger: Logger, metrics: (LockMetrics, LockMetrics.Kind),
        extend: @escaping @Sendable () async throws -> Void,
        body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                await watch(lease: lease, key: key, logger: logger, metrics: metrics, extend: extend)
                return nil
            }
            defer { group.cancelAll() }
            if let first = try await group.next(), let value = first { return value }
            throw LockLostError(key: key)
        }
    }

    /// Extends a lease every third of its length until cancelled; returns when the lease is
    /// lost (an extension refused, or no extension succeeded before the lease ran out),
    /// counted in `metrics` as each extension is.
    static func watch(lease: Duration, key: String, logger: Logger, metrics: (LockMetrics, LockMetrics.Kind),
                      extend: @Sendable () async throws -> Void) async {
        let clock = ContinuousClock()
        var expires = clock.now + lease
        while !Task.isCancelled {
            let pause = clock.now < expires - lease * 2 / 3 ? lease / 3 : max((expires - clock.now) / 4, .milliseconds(5))
            do { try await Task.sleep(for: pause) } catch { return }
            let started = clock.now
            do {
                try await extend()
                expires = started + lease
                metrics.0.extended(metrics.1)
            } catch is CancellationError {
                return
            } catch is LockExtendError {
                logger.warning("lease lost", metadata: ["key": "\(key)"])
                metrics.0.leaseLost(metrics.1)
                return
            } catch {
                // Redis unreachable: keep trying until the lease would have run out.
                logger.warning("lease extension failed", metadata: ["key": "\(key)", "error": "\(error)"])
                if clock.now >= expires {
                    metrics.0.leaseLost(metrics.1)
                    return
                }
            }
        }
    }

    // MARK: Pub/sub

    /// Subscribes to the channel once; messages and gaps are routed to waiters.
    func ensureListening() async throws {
        if listener != nil { return }
        let subscription = try await pubsub.subscribe([options.channel])
        if listener != nil { return }
        listener = Task { [weak self] in
            do {
                for try await event in subscription {
                    guard let self else { return }
                    switch event {
                    case .message(let message): await self.route(message.payload)
                    case .gap: await self.wakeEverything()
                    }
                }
            } catch {
                self?.logger.warning("pub/sub listener ended", metadata: ["error": "\(error)"])
            }
            await self?.listenerEnded()
        }
    }

    private func listenerEnded() { listener = nil }

    private func route(_ payload: [UInt8]) {
        guard let message = try? JSONDecoder().decode(WireMessage.self, from: Data(payload)) else {
            logger.debug("ignored a malformed message")
            return
        }
        switch message.kind {
        case .outcome:
            if let outcome = message.outcome { deliver(message.key, outcome.result(options.errorTypes)) }
        case .wake:
            signal(message.key)
        }
    }

    private func wakeEverything() {
        for key in signals.keys { signal(key) }
    }

    /// Wakes every local waiter of `key`.
    func signal(_ key: String) {
        guard let waiters = signals.removeValue(forKey: key) else { return }
        for waiter in waiters.values { waiter.resume() }
    }

    /// Waits until `key` is signalled, `timeout` passes, or the task is cancelled.
    func waitForSignal(_ key: String, timeout: Duration) async {
        nextID += 1
        let id = nextID
        let timer = Task { [weak self] in
            try? await Task.sleep(for: timeout)
            await self?.resumeSignal(key, id)
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                signals[key, default: [:]][id] = continuation
            }
        } onCancel: {
            Task { await self.resumeSignal(key, id) }
        }
        timer.cancel()
    }

    private func resumeSignal(_ key: String, _ id: UInt64) {
        signals[key]?.removeValue(forKey: id)?.resume()
        if signals[key]?.isEmpty == true { signals[key] = nil }
    }

    /// How often waiters re-check state in Redis when no message arrives: at least every
    /// third of the keep-alive lease, so a dead holder's job or permit is noticed soon after
    /// its lease ran out.
    nonisolated func recheckInterval(_ lock: LockOptions) -> Duration {
        min(lock.timeout / 3, lock.keepAliveLease / 3, .seconds(1))
    }
}
