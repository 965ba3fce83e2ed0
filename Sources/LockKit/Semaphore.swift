import Foundation
import Hiredis
import Synchronization

extension CallbackQueue {
    /// A counting semaphore shared by every process: at most `permits` holders at once.
    ///
    /// - Parameters:
    ///   - key: the semaphore's name.
    ///   - permits: how many holders it allows at once (at least 1; every process must use
    ///     the same number).
    ///   - options: the semaphore's lock options (the permit lease, the re-check interval);
    ///     `nil` uses the queue's.
    /// - Throws: `RedisError` `invalidArgument` for an empty key, fewer than one permit, or
    ///   invalid options.
    public nonisolated func semaphore(_ key: String, permits: Int = 1, options: LockOptions? = nil) throws -> Semaphore {
        let lock = try lockOptions(options)
        try validateKey(key, "semaphore key")
        guard permits >= 1 else { throw RedisError.invalidArgument("a semaphore needs at least one permit") }
        return Semaphore(key: key, permits: permits, options: lock, queue: self)
    }
}

/// A distributed counting semaphore. Permits are members of a sorted set scored by their
/// expiry (server clock), with the short ``LockOptions/keepAliveLease`` (1 s by default)
/// that a watchdog renews while the permit is held: a holder that dies loses its permit
/// within about that lease.
/// Waiters are woken over pub/sub when a permit is returned, and re-check on a timer, so a
/// lost message never strands them. Within one process (one ``CallbackQueue``) waiters are
/// served first come, first served; there is no FIFO order across processes.
///
/// ```swift
/// let printer = try queue.semaphore("printer", permits: 2)
/// try await printer.withPermit { _ in try await printReport() }
/// ```
public final class Semaphore: Sendable {
    /// The semaphore's name (without the prefix).
    public let key: String
    /// How many holders it allows at once.
    public let permits: Int
    /// The lock options its permits are taken with.
    public let options: LockOptions
    let queue: CallbackQueue
    let redisKey: String
    /// Where the number of permits is recorded for ``LockInspector`` (same slot).
    let limitKey: String
    private let held = Mutex<[SemaphorePermit]>([])

    init(key: String, permits: Int, options: LockOptions, queue: CallbackQueue) {
        self.key = key
        self.permits = permits
        self.options = options
        self.queue = queue
        redisKey = sameSlot(queue.options.lockPrefix + key, ":permits")
        limitKey = sameSlot(queue.options.lockPrefix + key, ":limit")
    }

    /// Waits for a permit. The permit is kept alive in the background (its lease renewed
    /// every third of ``LockOptions/keepAliveLease``) until ``SemaphorePermit/leave()``,
    /// ``leave()``, or the end of the process; if it is lost meanwhile (Redis unreachable
    /// for a whole lease), ``SemaphorePermit/isHeld`` turns `false`.
    ///
    /// This process's takers of the semaphore (through any ``Semaphore`` of the same key
    /// and queue) are served in the order they called: only the oldest one asks Redis, the
    /// next one as soon as it is served. A transient Redis error (`RedisError.isTransient`:
    /// a dropped connection, a timeout, a failover) is logged and the take tried again,
    /// until `timeout`.
    ///
    /// - Parameter timeout: give up after this long with ``LockAcquisitionError``; `nil`
    ///   waits until cancelled.
    /// - Throws: ``LockAcquisitionError`` when no permit freed within `timeout`; the last
    ///   transient `RedisError` when Redis kept failing until `timeout`; any other
    ///   `RedisError` at once; `CancellationError`.
    @discardableResult
    public func take(timeout: Duration? = nil) async throws -> SemaphorePermit {
        let permit = try await acquire(timeout: timeout)
        permit.keepAlive()
        return permit
    }

    /// Waits for a permit, without keeping it alive.
    func acquire(timeout: Duration?) async throws -> SemaphorePermit {
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = timeout.map { clock.now + $0 }
        guard let ticket = try await queue.waitForTurn(redisKey, until: deadline) else {
            throw LockAcquisitionError(key: key, reason: "no permit free")
        }
        do {
            let permit = try await acquireInTurn(until: deadline)
            await queue.endTurn(redisKey, ticket)
            queue.metrics.acquired(.semaphore, waited: clock.now - started)
            return permit
        } catch {
            await queue.endTurn(redisKey, ticket)
            throw error
        }
    }

    /// The oldest local taker's loop: asks Redis, waits for a wake-up or the re-check.
    private func acquireInTurn(until deadline: ContinuousClock.Instant?) async throws -> SemaphorePermit {
        let ttl = options.keepAliveLease
        let clock = ContinuousClock()
        var backoff: Duration = .milliseconds(25)
        while true {
            try Task.checkCancellation()
            // A token per attempt: a background return of an attempt whose reply was lost
            // can never remove a permit taken by a later one.
            let token = OwnerToken.next()
            let reply: RedisReply
            do {
                try await queue.ensureListening()
                reply = try await queue.client.run(
                    Scripts.take, keys: [redisKey, limitKey], arguments: [token, permits, ttl.redisMilliseconds])
            } catch {
                // The script may have run and taken a permit that nobody knows it holds,
                // which would keep it from every process for a whole lease: give it back.
                abandon(token, ttl: ttl)
                guard (error as? RedisError)?.isTransient == true else { throw error }
                var pause = backoff
                if let deadline {
                    guard clock.now < deadline else { throw error }
                    pause = min(pause, deadline - clock.now)
                }
                queue.logger.warning("taking a permit failed; trying again",
                                     metadata: ["key": "\(key)", "error": "\(error)", "retryIn": "\(pause)"])
                try await Task.sleep(for: pause)   // a backoff while Redis cannot be asked
                backoff = min(backoff * 2, queue.recheckInterval(options))
                continue
            }
            backoff = .milliseconds(25)
            if try reply.decode(Int.self) == 1 {
                queue.logger.trace("permit taken", metadata: ["key": "\(key)"])
                let permit = SemaphorePermit(semaphore: self, token: token, lease: ttl)
                remember(permit)
                return permit
            }
            queue.metrics.contended(.semaphore)
            var wait = queue.recheckInterval(options) * Double.random(in: 0.8...1.2)
            if let deadline {
                guard clock.now < deadline else { throw LockAcquisitionError(key: key, reason: "no permit free") }
                wait = min(wait, deadline - clock.now)
            }
            await queue.waitForSignal(wakeSignal, timeout: wait)
        }
    }

    /// Returns the oldest permit this instance holds.
    ///
    /// - Throws: ``LockReleaseError`` when this instance holds none, or its permit had expired.
    public func leave() async throws {
        guard let permit = held.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) else {
            throw LockReleaseError(key: key)
        }
        try await permit.leave()
    }

    /// Runs `body` holding a permit, extending it while `body` runs and returning it after.
    /// If the permit is lost, `body` is cancelled and ``LockLostError`` is thrown. `body`
    /// does not escape: it has finished when `withPermit` returns.
    ///
    /// - Throws: what ``take(timeout:)`` throws (it waits without a timeout);
    ///   ``LockLostError`` when the permit was lost while `body` ran; otherwise whatever
    ///   `body` throws.
    public func withPermit<T: Sendable>(_ body: @Sendable (SemaphorePermit) async throws -> T) async throws -> T {
        let permit = try await acquire(timeout: nil)
        return try await withoutActuallyEscaping(body) { body in
            try await hold(permit, body)
        }
    }

    /// Runs `body` under `permit` with the watchdog, then returns the permit.
    private func hold<T: Sendable>(_ permit: SemaphorePermit, _ body: @escaping @Sendable (SemaphorePermit) async throws -> T) async throws -> T {
        do {
            let value = try await CallbackQueue.runGuarded(
                key: key, lease: options.keepAliveLease, logger: queue.logger, metrics: (queue.metrics, .semaphore),
                extend: { try await permit.extend() }, body: { try await body(permit) })
            await permit.leaveSoon()
            return value
        } catch {
            if error is LockLostError { permit.markLost() }
            await permit.leaveSoon()
            throw error
        }
    }

    var wakeSignal: String { "semaphore:" + key }

    /// The `leave` script's arguments for `token`: it removes the permit and wakes waiters.
    func leaveArguments(_ token: String) throws -> [any RedisArgument] {
        let message = try JSONEncoder().encode(WireMessage(kind: .wake, key: wakeSignal, outcome: nil))
        return [token, queue.options.channel, Array(message)]
    }

    /// Removes the permit `token` may hold, in the background if Redis cannot be asked now.
    func abandon(_ token: String, ttl: Duration) {
        let deadline = ContinuousClock.now + ttl
        Task {
            await giveBack(until: { deadline }) {
                try await self.queue.client.run(Scripts.leave, keys: [self.redisKey], arguments: try self.leaveArguments(token))
            }
        }
    }

    func remember(_ permit: SemaphorePermit) {
        held.withLock { $0.append(permit) }
    }

    func forget(_ permit: SemaphorePermit) {
        held.withLock { $0.removeAll { $0 === permit } }
    }
}

/// One permit of a ``Semaphore``.
public final class SemaphorePermit: Sendable {
    /// The permit's owner token (what Redis holds for it).
    public let token: String
    let semaphore: Semaphore
    private let holding = Mutex(true)
    /// The background watchdog of a permit from `take`.
    private let watchdog = Mutex<Task<Void, Never>?>(nil)
    /// When the lease runs out if nobody extends it (as this process sees it).
    private let leaseEnd: Mutex<ContinuousClock.Instant>

    init(semaphore: Semaphore, token: String, lease: Duration) {
        self.semaphore = semaphore
        self.token = token
        leaseEnd = Mutex(.now + lease)
    }

    /// `false` once returned, or once an extend or a return found it lost.
    public var isHeld: Bool { holding.withLock { $0 } }

    /// Extends the permit's lease to ``LockOptions/keepAliveLease`` from now (a permit from
    /// `take` is extended in the background already).
    /// - Throws: ``LockExtendError`` when it had expired; `RedisError` when Redis could not
    ///   be asked.
    public func extend() async throws {
        let queue = semaphore.queue
        let lease = semaphore.options.keepAliveLease
        let sent = ContinuousClock.now
        let reply = try await queue.client.run(
            Scripts.extendPermit, keys: [semaphore.redisKey, semaphore.limitKey], arguments: [token, lease.redisMilliseconds])
        if try reply.decode(Int.self) != 1 {
            markLost()
            throw LockExtendError(key: semaphore.key)
        }
        leaseEnd.withLock { $0 = sent + lease }
    }

    /// Returns the permit and wakes waiters in every process.
    /// - Throws: ``LockReleaseError`` when it had expired or was returned already;
    ///   `RedisError` when Redis could not be asked (the permit then still counts as held,
    ///   and `leave()` can be called again, here or on the semaphore).
    public func leave() async throws {
        semaphore.forget(self)
        guard holding.withLock({ was in defer { was = false }; return was }) else { throw LockReleaseError(key: semaphore.key) }
        let queue = semaphore.queue
        let reply: RedisReply
        do {
            reply = try await queue.client.run(
                Scripts.leave, keys: [semaphore.redisKey], arguments: try semaphore.leaveArguments(token))
        } catch {
            holding.withLock { $0 = true }
            semaphore.remember(self)
            throw error
        }
        stopKeepingAlive()
        await queue.signal(semaphore.wakeSignal)
        if try reply.decode(Int.self) != 1 { throw LockReleaseError(key: semaphore.key) }
    }

    /// Starts the watchdog that renews the lease until the permit is returned or lost.
    func keepAlive() {
        let semaphore = semaphore
        let task = Task { [weak self] in
            let permit = WeakPermit(self)
            await CallbackQueue.watch(lease: semaphore.options.keepAliveLease, key: semaphore.key, logger: semaphore.queue.logger,
                                      metrics: (semaphore.queue.metrics, .semaphore)) {
                // Dropped by everyone (its semaphore too): nothing to keep alive.
                guard let permit = permit.value else { throw CancellationError() }
                try await permit.extend()
            }
            if !Task.isCancelled { permit.value?.markLost() }
        }
        watchdog.withLock { $0 = task }
    }

    func stopKeepingAlive() {
        watchdog.withLock { $0 }?.cancel()
    }

    /// Returns the permit on the caller's behalf (`withPermit`), in the background until
    /// its lease would have run out when Redis cannot be asked now.
    func leaveSoon() async {
        await giveBack(until: { self.leaseEnd.withLock { $0 } }, while: { self.isHeld }, expired: { self.markLost() }) {
            try await self.leave()
        }
    }

    func markLost() {
        holding.withLock { $0 = false }
        stopKeepingAlive()
        semaphore.forget(self)
    }
}

/// A permit its own watchdog does not keep from being freed.
private struct WeakPermit: Sendable {
    weak let value: SemaphorePermit?
    init(_ value: SemaphorePermit?) { self.value = value }
}
