import Foundation
import Hiredis
import Synchronization

extension CallbackQueue {
    /// A counting semaphore shared by every process: at most `permits` holders at once.
    ///
    /// - Throws: `invalidArgument` for an empty key or fewer than one permit.
    public nonisolated func semaphore(_ key: String, permits: Int = 1) throws -> Semaphore {
        try validateKey(key, "semaphore key")
        guard permits >= 1 else { throw RedisError.invalidArgument("a semaphore needs at least one permit") }
        return Semaphore(key: key, permits: permits, queue: self)
    }
}

/// A distributed counting semaphore. Permits are members of a sorted set scored by their
/// expiry (server clock): a holder that dies loses its permit after the lock timeout.
/// Waiters are woken over pub/sub when a permit is returned, and re-check on a timer, so a
/// lost message never strands them. There is no FIFO order across processes.
///
/// ```swift
/// let printer = try queue.semaphore("printer", permits: 2)
/// try await printer.withPermit { _ in try await printReport() }
/// ```
public final class Semaphore: Sendable {
    public let key: String
    public let permits: Int
    let queue: CallbackQueue
    let redisKey: String
    private let held = Mutex<[SemaphorePermit]>([])

    init(key: String, permits: Int, queue: CallbackQueue) {
        self.key = key
        self.permits = permits
        self.queue = queue
        redisKey = sameSlot(queue.options.lockPrefix + key, ":permits")
    }

    /// Waits for a permit.
    ///
    /// - Parameter timeout: give up after this long with ``LockAcquisitionError``; `nil`
    ///   waits until cancelled.
    @discardableResult
    public func take(timeout: Duration? = nil) async throws -> SemaphorePermit {
        try await queue.ensureListening()
        let token = OwnerToken.next()
        let ttl = queue.options.lock.timeout
        let clock = ContinuousClock()
        let deadline = timeout.map { clock.now + $0 }
        while true {
            try Task.checkCancellation()
            let reply = try await queue.client.run(
                Scripts.take, keys: [redisKey], arguments: [token, permits, ttl.milliseconds])
            if try reply.decode(Int.self) == 1 {
                let permit = SemaphorePermit(semaphore: self, token: token)
                held.withLock { $0.append(permit) }
                return permit
            }
            var wait = queue.recheckInterval * Double.random(in: 0.8...1.2)
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
    /// If the permit is lost, `body` is cancelled and ``LockLostError`` is thrown.
    public func withPermit<T: Sendable>(_ body: @escaping @Sendable (SemaphorePermit) async throws -> T) async throws -> T {
        let permit = try await take()
        do {
            let value = try await CallbackQueue.runGuarded(
                key: key, lease: queue.options.lock.timeout, logger: queue.logger,
                extend: { try await permit.extend() }, body: { try await body(permit) })
            try? await permit.leave()
            return value
        } catch {
            try? await permit.leave()
            throw error
        }
    }

    var wakeSignal: String { "semaphore:" + key }

    func forget(_ permit: SemaphorePermit) {
        held.withLock { $0.removeAll { $0 === permit } }
    }
}

/// One permit of a ``Semaphore``.
public final class SemaphorePermit: Sendable {
    public let token: String
    let semaphore: Semaphore
    private let holding = Mutex(true)

    init(semaphore: Semaphore, token: String) {
        self.semaphore = semaphore
        self.token = token
    }

    /// Extends the permit's lease to the lock timeout from now.
    /// - Throws: ``LockExtendError`` when it had expired.
    public func extend() async throws {
        let queue = semaphore.queue
        let reply = try await queue.client.run(
            Scripts.extendPermit, keys: [semaphore.redisKey], arguments: [token, queue.options.lock.timeout.milliseconds])
        if try reply.decode(Int.self) != 1 {
            holding.withLock { $0 = false }
            throw LockExtendError(key: semaphore.key)
        }
    }

    /// Returns the permit and wakes waiters in every process.
    /// - Throws: ``LockReleaseError`` when it had expired or was returned already.
    public func leave() async throws {
        semaphore.forget(self)
        guard holding.withLock({ was in defer { was = false }; return was }) else { throw LockReleaseError(key: semaphore.key) }
        let queue = semaphore.queue
        let message = try JSONEncoder().encode(WireMessage(kind: .wake, key: semaphore.wakeSignal, outcome: nil))
        let reply = try await queue.client.run(
            Scripts.leave, keys: [semaphore.redisKey], arguments: [token, queue.options.channel, Array(message)])
        await queue.signal(semaphore.wakeSignal)
        if try reply.decode(Int.self) != 1 { throw LockReleaseError(key: semaphore.key) }
    }
}
