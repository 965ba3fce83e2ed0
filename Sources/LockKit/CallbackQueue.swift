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
    public nonisolated let client: RedisConnection
    public nonisolated let pubsub: RedisSubscriber
    public nonisolated let options: CallbackQueueOptions
    nonisolated var logger: Logger { options.logger }

    private var listener: Task<Void, Never>?
    private var entries: [String: CoalesceEntry] = [:]
    private var signals: [String: [UInt64: CheckedContinuation<Void, Never>]] = [:]
    private var nextID: UInt64 = 0

    /// - Throws: ``Hiredis/RedisError`` `invalidArgument` for an empty channel or bad lock options.
    public init(client: RedisConnection, pubsub: RedisSubscriber, options: CallbackQueueOptions) throws {
        guard !options.channel.isEmpty else { throw RedisError.invalidArgument("the pub/sub channel is required") }
        try options.lock.validate()
        self.client = client
        self.pubsub = pubsub
        self.options = options
    }

    /// Stops listening on the channel. Waiters still pending get their timeouts.
    public func close() {
        listener?.cancel()
        listener = nil
    }

    // MARK: Locks

    /// Takes the lock on `key` (`SET key token NX PX timeout`, atomically with its fencing
    /// token), retrying `lock.retries` times `lock.delay` apart.
    ///
    /// - Throws: ``LockAcquisitionError`` when it stayed held; `RedisError` when Redis
    ///   failed (never reported as contention); `invalidArgument` for an empty key.
    public nonisolated func once(_ key: String) async throws -> Lock {
        try validateKey(key)
        let locks = try await acquire([key], retries: options.lock.retries)
        return locks[0]
    }

    /// Takes several locks, all or nothing: when one is held, the ones taken are released
    /// and ``MultiLockError`` says which failed. Keys sharing a hash tag are taken in one
    /// script; groups are taken in a fixed order, so overlapping contenders cannot livelock.
    public nonisolated func multi(_ keys: String...) async throws -> MultiLock {
        try await multi(keys)
    }

    /// The array form of ``multi(_:)-(String...)``. Empty strings are dropped; duplicates merged.
    public nonisolated func multi(_ keys: [String]) async throws -> MultiLock {
        var unique: [String] = []
        for key in keys where !key.isEmpty && !unique.contains(key) { unique.append(key) }
        guard !unique.isEmpty else { throw RedisError.invalidArgument("multi needs at least one non-empty key") }
        do {
            return MultiLock(locks: try await acquire(unique, retries: options.lock.retries))
        } catch let error as LockAcquisitionError {
            // `error.key` is the key held at the last attempt; nothing is left taken.
            throw MultiLockError(errors: [error.key: error], locks: [])
        }
    }

    /// Runs `body` holding the lock on `key`: extends the lease every third of the timeout
    /// while it runs (when `autoExtend`), releases it afterwards (also on throw and on
    /// cancellation), and, if the lease is lost, cancels `body` and throws ``LockLostError``.
    public nonisolated func withLock<T: Sendable>(
        _ key: String, autoExtend: Bool = true, _ body: @escaping @Sendable (Lock) async throws -> T
    ) async throws -> T {
        let lock = try await once(key)
        return try await hold(lock, autoExtend: autoExtend, body)
    }

    nonisolated func acquire(_ keys: [String], retries: Int) async throws -> [Lock] {
        let ttl = options.lock.timeout
        var attempt = 0
        var heldKey = keys[0]
        while true {
            // A token per attempt: a background release left over from an earlier attempt
            // (its reply was lost) can then never delete a lock taken by a later one.
            switch try await tryAcquire(keys, token: OwnerToken.next(), ttl: ttl) {
            case .success(let locks): return locks
            case .failure(let held): heldKey = held.key
            }
            guard attempt < retries else { break }
            attempt += 1
            try await Task.sleep(for: options.lock.jitteredDelay())
        }
        throw LockAcquisitionError(key: heldKey, reason: "held by another owner")
    }

    /// One attempt: every slot group in a fixed order; on a held key, releases what it took
    /// and says which key was held.
    nonisolated func tryAcquire(
        _ keys: [String], token: String, ttl: Duration
    ) async throws -> Result<[Lock], LockAcquisitionError> {
        let redisKeys = keys.map { options.lockPrefix + $0 }
        var taken: [Lock] = []
        for indices in groupBySlot(Array(redisKeys.indices), redisKey: { redisKeys[$0] }) {
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
                var position = 0
                if values.count > 1 { position = Int(values[1]) - 1 }
                position = min(max(position, 0), indices.count - 1)
                let heldKey: String = keys[indices[position]]
                return .failure(LockAcquisitionError(key: heldKey, reason: "held by another owner"))
            }
            for (position, index) in indices.enumerated() {
                taken.append(Lock(key: keys[index], redisKey: redisKeys[index], token: token,
                                  fencingToken: values[position], timeout: ttl, connection: client))
            }
        }
        if options.lock.minReplicas > 0 {
            // The locks (and their fencing counters) reach the replicas before anyone
            // relies on them, or they are given back.
            let acknowledged: Int
            do {
                acknowledged = try await client.send("WAIT", options.lock.minReplicas, options.lock.replicationTimeout.redisMilliseconds)
                    .decode(Int.self)
            } catch {
                for lock in taken { await lock.releaseSoon() }
                throw error
            }
            if acknowledged < options.lock.minReplicas {
                for lock in taken { await lock.releaseSoon() }
                throw LockAcquisitionError(key: keys[0], reason:
                    "only \(acknowledged) of \(options.lock.minReplicas) replicas acknowledged the lock within \(options.lock.replicationTimeout)")
            }
        }
        // Back in the order the keys were given.
        if taken.count == 1 { return .success(taken) }
        let position = Dictionary(uniqueKeysWithValues: keys.enumerated().map { ($1, $0) })
        return .success(taken.sorted { position[$0.key]! < position[$1.key]! })
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
                value = try await Self.runGuarded(key: lock.key, lease: lock.timeout, logger: logger,
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
        key: String, lease: Duration, logger: Logger,
        extend: @escaping @Sendable () async throws -> Void,
        body: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                await watch(lease: lease, key: key, logger: logger, extend: extend)
                return nil
            }
            defer { group.cancelAll() }
            if let first = try await group.next(), let value = first { return value }
            throw LockLostError(key: key)
        }
    }

    /// Extends a lease every third of its length until cancelled; returns when the lease is
    /// lost (an extension refused, or no extension succeeded before the lease ran out).
    static func watch(lease: Duration, key: String, logger: Logger, extend: @Sendable () async throws -> Void) async {
        let clock = ContinuousClock()
        var expires = clock.now + lease
        while !Task.isCancelled {
            let pause = clock.now < expires - lease * 2 / 3 ? lease / 3 : max((expires - clock.now) / 4, .milliseconds(5))
            do { try await Task.sleep(for: pause) } catch { return }
            let started = clock.now
            do {
                try await extend()
                expires = started + lease
            } catch is CancellationError {
                return
            } catch is LockExtendError {
                logger.warning("lease lost", metadata: ["key": "\(key)"])
                return
            } catch {
                // Redis unreachable: keep trying until the lease would have run out.
                logger.warning("lease extension failed", metadata: ["key": "\(key)", "error": "\(error)"])
                if clock.now >= expires { return }
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
            if let outcome = message.outcome { deliver(message.key, outcome.result) }
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

    /// How often waiters re-check state in Redis when no message arrives.
    nonisolated var recheckInterval: Duration { min(options.lock.timeout / 3, .seconds(1)) }

    // MARK: Coalescing (push / fanout)

    struct CoalesceEntry {
        var waiters: [UInt64: Waiter] = [:]
        var driver: Task<Void, Never>?
    }

    struct Waiter {
        var deadline: ContinuousClock.Instant
        var deliver: @Sendable (Result<[UInt8], any Error>) -> Void
        var timer: Task<Void, Never>?
    }

    /// Registers a waiter for `id`; returns its id and whether the entry already existed.
    func addWaiter(_ id: String, timeout: Duration, deliver: @escaping @Sendable (Result<[UInt8], any Error>) -> Void) -> (UInt64, Bool) {
        nextID += 1
        let waiterID = nextID
        let existed = entries[id] != nil
        let timer = Task { [weak self] in
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            await self?.removeWaiter(id, waiterID, with: .failure(FanoutTimeoutError(id: id)))
        }
        entries[id, default: CoalesceEntry()].waiters[waiterID] = Waiter(
            deadline: ContinuousClock.now + timeout, deliver: deliver, timer: timer)
        return (waiterID, existed)
    }

    /// Removes one waiter, handing it `result`; the entry ends when it was the last one.
    func removeWaiter(_ id: String, _ waiterID: UInt64, with result: Result<[UInt8], any Error>) {
        guard let waiter = entries[id]?.waiters.removeValue(forKey: waiterID) else { return }
        waiter.timer?.cancel()
        waiter.deliver(result)
        if entries[id]?.waiters.isEmpty == true {
            entries.removeValue(forKey: id)?.driver?.cancel()
        }
    }

    /// Hands `result` to every local waiter of `id`, once.
    func deliver(_ id: String, _ result: Result<[UInt8], any Error>) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        entry.driver?.cancel()
        for waiter in entry.waiters.values {
            waiter.timer?.cancel()
            waiter.deliver(result)
        }
        signal(coalesceSignal(id))
    }

    func setDriver(_ id: String, _ driver: Task<Void, Never>) {
        if entries[id] != nil { entries[id]?.driver = driver } else { driver.cancel() }
    }

    func hasWaiters(_ id: String) -> Bool { entries[id] != nil }

    nonisolated func coalesceSignal(_ id: String) -> String { "outcome:" + id }
    nonisolated func lockKey(_ id: String) -> String { options.lockPrefix + id }
    nonisolated func outcomeKey(_ id: String) -> String { sameSlot(lockKey(id), ":outcome") }
    /// How long an outcome stays readable after it was published: long enough for a waiter
    /// that missed the message to find it at its next re-check.
    nonisolated var outcomeTTL: Duration { max(recheckInterval * 3, .seconds(1)) }

    /// Reads a stored outcome of `id`, if any.
    nonisolated func storedOutcome(_ id: String) async throws -> Result<[UInt8], any Error>? {
        guard let bytes = try await client.send("GET", outcomeKey(id)).decode(RedisBytes?.self)?.bytes else { return nil }
        return try JSONDecoder().decode(WireOutcome.self, from: Data(bytes)).result
    }

    enum JobClaim {
        case lock(Lock)
        case held
        case completed(Result<[UInt8], any Error>)
    }

    /// One attempt to become the job's leader: refused when the job's outcome is already
    /// stored (it just completed) or its lock is held.
    nonisolated func claimJob(_ id: String) async throws -> JobClaim {
        let redisKey = lockKey(id)
        let token = OwnerToken.next()
        let reply: RedisReply
        do {
            reply = try await client.run(
                Scripts.acquireJob, keys: [redisKey, sameSlot(redisKey, ":fence"), outcomeKey(id)],
                arguments: [token, options.lock.timeout.redisMilliseconds])
        } catch {
            abandon([redisKey], token: token, ttl: options.lock.timeout)
            throw error
        }
        switch try reply.decode(Int64.self) {
        case -1:
            if let outcome = try await storedOutcome(id) { return .completed(outcome) }
            return .held  // expired between the two reads: look again later
        case 0:
            return .held
        case let fence:
            return .lock(Lock(key: id, redisKey: redisKey, token: token, fencingToken: fence,
                              timeout: options.lock.timeout, connection: client))
        }
    }

    /// Publishes the outcome of `id` if `lock` still owns the job; returns whether it did.
    nonisolated func publish(_ id: String, lock: Lock, result: Result<[UInt8], any Error>) async throws -> Bool {
        let outcome = WireOutcome(result)
        let stored = try JSONEncoder().encode(outcome)
        let message = try JSONEncoder().encode(WireMessage(kind: .outcome, key: id, outcome: outcome))
        let reply = try await client.run(
            Scripts.complete, keys: [lock.redisKey, outcomeKey(id)],
            arguments: [lock.token, outcomeTTL.redisMilliseconds, options.channel, Array(message), Array(stored)])
        lock.markLost()  // released by the script (or lost)
        return try reply.decode(Int.self) == 1
    }

    /// The per-id loop of this process: reads a stored outcome, takes the job's lock when it
    /// is free (runs `job` if there is one), or waits for a message or the next re-check.
    /// A waiter takes over when the leader's lock expired without an outcome.
    nonisolated func drive(_ id: String, job: (@Sendable () async throws -> [UInt8])?) async {
        while !Task.isCancelled, await hasWaiters(id) {
            do {
                if job == nil {
                    if let outcome = try await storedOutcome(id) {
                        await deliver(id, outcome)
                        return
                    }
                } else if let job {
                    switch try await claimJob(id) {
                    case .completed(let outcome):
                        await deliver(id, outcome)
                        return
                    case .lock(let lock):
                        await lead(id, lock: lock, job: job)
                        return
                    case .held:
                        break
                    }
                }
            } catch is CancellationError {
                return
            } catch {
                logger.warning("coalescing check failed", metadata: ["id": "\(id)", "error": "\(error)"])
            }
            await waitForSignal(coalesceSignal(id), timeout: recheckInterval * Double.random(in: 0.8...1.2))
        }
    }

    /// Runs `job` holding `lock` (extended by a watchdog), then publishes its outcome.
    nonisolated func lead(_ id: String, lock: Lock, job: @escaping @Sendable () async throws -> [UInt8]) async {
        let result: Result<[UInt8], any Error>
        do {
            result = .success(try await Self.runGuarded(
                key: lock.key, lease: lock.timeout, logger: logger, extend: { try await lock.extend() }, body: job))
        } catch is CancellationError {
            await lock.releaseSoon()
            return
        } catch {
            result = .failure(error)
        }
        await finish(id, lock: lock, result: result)
    }

    /// Publishes the outcome (if the lease is still held) and hands it to local waiters;
    /// returns whether it was broadcast.
    @discardableResult
    nonisolated func finish(_ id: String, lock: Lock, result: Result<[UInt8], any Error>) async -> Bool {
        var broadcast = false
        var delay: Duration = .milliseconds(25)
        while true {
            do {
                broadcast = try await publish(id, lock: lock, result: result)
                if !broadcast {
                    logger.warning("job finished after its lock was lost; outcome not broadcast", metadata: ["id": "\(id)"])
                }
                break
            } catch {
                // A dropped connection or a stalled server: the lease still holds the job for
                // us, so keep trying until it runs out (a retry whose first try did land
                // finds its own outcome stored); otherwise every waiter would run it again.
                if let error = error as? RedisError, error.isTransient, !Task.isCancelled,
                   ContinuousClock.now + delay < lock.leaseDeadline {
                    try? await Task.sleep(for: delay)
                    delay = min(delay * 2, .milliseconds(500))
                    continue
                }
                logger.warning("publishing an outcome failed", metadata: ["id": "\(id)", "error": "\(error)"])
                await lock.releaseSoon()
                break
            }
        }
        await deliver(id, result)
        return broadcast
    }

    /// In-flight request coalescing, dlock's `push`.
    ///
    /// The first caller for `id` across every process sharing the channel gets a
    /// ``Completion`` and must call it once with the job's outcome; every caller's
    /// `onComplete` (the first one's too) runs once with that outcome. Every other caller
    /// gets ``LockAcquisitionError`` from `push`, but its `onComplete` still fires. When no
    /// outcome arrives within `timeout` (default: twice the lock timeout), `onComplete`
    /// gets ``FanoutTimeoutError``. Outcomes from other processes' failures arrive as
    /// ``RemoteJobError``.
    public func push<Payload: Codable & Sendable>(
        _ id: String, as payload: Payload.Type = Payload.self, timeout: Duration? = nil,
        onComplete: @escaping @Sendable (Result<Payload, any Error>) -> Void
    ) async throws -> Completion<Payload> {
        try validateKey(id, "job id")
        let timeout = timeout ?? options.lock.timeout * 2
        guard timeout > .zero else { throw RedisError.invalidArgument("the push timeout must be positive") }
        try await ensureListening()
        let (waiterID, existed) = addWaiter(id, timeout: timeout) { onComplete(decodePayload($0)) }
        if existed { throw LockAcquisitionError(key: id, reason: "job is already running") }
        do {
            return try await claimOrWait(id)
        } catch let error as LockAcquisitionError {
            throw error
        } catch {
            // Redis failed (or the task was cancelled): nobody will look for this outcome.
            removeWaiter(id, waiterID, with: .failure(error))
            throw error
        }
    }

    private func claimOrWait<Payload: Codable & Sendable>(_ id: String) async throws -> Completion<Payload> {
        var attempt = 0
        while true {
            switch try await claimJob(id) {
            case .completed(let outcome):
                deliver(id, outcome)
                throw LockAcquisitionError(key: id, reason: "job already completed")
            case .lock(let lock):
                let lost = LeaseLoss()
                let watchdog = Task { [logger] in
                    await Self.watch(lease: lock.timeout, key: lock.key, logger: logger) { try await lock.extend() }
                    if !Task.isCancelled { lost.mark() }
                }
                return Completion<Payload>(id: id, queue: self, lock: lock, watchdog: watchdog, lost: lost)
            case .held:
                break
            }
            // Delivered by the leader's broadcast meanwhile, or out of retries: wait for it.
            guard attempt < options.lock.retries, hasWaiters(id) else { break }
            attempt += 1
            try await Task.sleep(for: options.lock.jitteredDelay())
            guard hasWaiters(id) else { break }
        }
        if hasWaiters(id) { setDriver(id, Task { await self.drive(id, job: nil) }) }
        throw LockAcquisitionError(key: id, reason: "held by another owner")
    }

    /// dlock's `fanout`: `job` runs once across the fleet for concurrent callers of the same
    /// `id`, and every caller returns its value or throws its error (``RemoteJobError``
    /// from another process). Throws ``FanoutTimeoutError`` after `timeout` (default: twice
    /// the lock timeout) even if the lock was never acquired. When the process running the
    /// job dies, its lock expires and a waiting process takes over and runs the job.
    public nonisolated func fanout<T: Codable & Sendable>(
        _ id: String, timeout: Duration? = nil, job: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        try validateKey(id, "job id")
        let timeout = timeout ?? options.lock.timeout * 2
        guard timeout > .zero else { throw RedisError.invalidArgument("the fanout timeout must be positive") }
        try await ensureListening()
        let box = WaiterBox()
        let result: Result<[UInt8], any Error> = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Result<[UInt8], any Error>, Never>) in
                Task {
                    let (waiterID, existed) = await self.addWaiter(id, timeout: timeout) { continuation.resume(returning: $0) }
                    box.set(waiterID)
                    if !existed {
                        await self.setDriver(id, Task {
                            await self.drive(id) { try JSONEncoder().encode(try await job()).map { $0 } }
                        })
                    }
                }
            }
        } onCancel: {
            Task { if let waiterID = box.get() { await self.removeWaiter(id, waiterID, with: .failure(CancellationError())) } }
        }
        return try decodePayload(result).get()
    }
}

/// The first caller's handle of a ``CallbackQueue/push(_:as:timeout:onComplete:)`` job.
/// Its lock is extended in the background until `complete` is called.
public final class Completion<Payload: Codable & Sendable>: Sendable {
    public let id: String
    let queue: CallbackQueue
    let lock: Lock
    let watchdog: Task<Void, Never>
    let lost: LeaseLoss
    private let completed = Mutex(false)

    init(id: String, queue: CallbackQueue, lock: Lock, watchdog: Task<Void, Never>, lost: LeaseLoss) {
        self.id = id
        self.queue = queue
        self.lock = lock
        self.watchdog = watchdog
        self.lost = lost
    }

    /// The job's fencing token.
    public var fencingToken: Int64 { lock.fencingToken }

    /// `true` once the job's lease was lost (an extension was refused, or Redis could not
    /// be reached before the lease ran out): another process may take the job over.
    public var isLeaseLost: Bool { lost.isMarked }

    /// Broadcasts the outcome to every waiting caller and releases the lock. A second call
    /// is ignored (and logged). This process's callers get the outcome in any case.
    ///
    /// - Throws: ``LockLostError`` when the lease had been lost, so the outcome was not
    ///   broadcast.
    public func complete(_ result: Result<Payload, any Error>) async throws {
        guard completed.withLock({ done in defer { done = true }; return !done }) else {
            queue.logger.warning("a job was completed twice; the second outcome is ignored", metadata: ["id": "\(id)"])
            return
        }
        watchdog.cancel()
        let bytes: Result<[UInt8], any Error> = result.flatMap { value in
            Result { Array(try JSONEncoder().encode(value)) }
        }
        let broadcast = await queue.finish(id, lock: lock, result: bytes)
        if !broadcast { throw LockLostError(key: id) }
    }

    /// `complete(.success(value))`.
    public func complete(_ value: Payload) async throws { try await complete(.success(value)) }
    /// `complete(.failure(error))`.
    public func fail(_ error: any Error) async throws { try await complete(.failure(error)) }
}

/// Set by a watchdog that gave up.
final class LeaseLoss: Sendable {
    private let flag = Mutex(false)
    func mark() { flag.withLock { $0 = true } }
    var isMarked: Bool { flag.withLock { $0 } }
}

/// Holds the waiter id set by the registering task, for the cancellation handler.
final class WaiterBox: Sendable {
    private let value = Mutex<UInt64?>(nil)
    func set(_ id: UInt64) { value.withLock { $0 = id } }
    func get() -> UInt64? { value.withLock { $0 } }
}

func decodePayload<T: Decodable>(_ result: Result<[UInt8], any Error>) -> Result<T, any Error> {
    result.flatMap { bytes in Result { try JSONDecoder().decode(T.self, from: Data(bytes)) } }
}

/// What travels on the channel: an outcome, or a wake-up for semaphore waiters.
struct WireMessage: Codable {
    enum Kind: String, Codable { case outcome, wake }
    var kind: Kind
    var key: String
    var outcome: WireOutcome?
}

struct WireOutcome: Codable {
    var value: Data?
    var errorType: String?
    var errorMessage: String?

    init(_ result: Result<[UInt8], any Error>) {
        switch result {
        case .success(let bytes): value = Data(bytes)
        case .failure(let error):
            let remote = RemoteJobError(describing: error)
            errorType = remote.typeName
            errorMessage = remote.message
        }
    }

    var result: Result<[UInt8], any Error> {
        if let value { return .success(Array(value)) }
        return .failure(RemoteJobError(typeName: errorType ?? "Error", message: errorMessage ?? ""))
    }
}
