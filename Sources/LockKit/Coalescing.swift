import Foundation
import Hiredis
import Logging
import Synchronization

/// In-flight request coalescing (dlock's `push` and `fanout`): one run of a job across
/// every process sharing the channel, its outcome handed to every caller.
extension CallbackQueue {
    struct CoalesceEntry {
        var waiters: [UInt64: Waiter] = [:]
        var driver: Task<Void, Never>?
        /// The job was found held by another owner: this process waits for its outcome.
        var heldElsewhere = false
        /// This process took the job's lock: one waiter is the leader's own caller (for the
        /// coalesced-callers metric, whichever path delivers the outcome).
        var ledHere = false
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

    /// Hands `result` to every local waiter of `id`, once. Every waiter but the leader's own
    /// caller (when this process led) counts as coalesced.
    func deliver(_ id: String, _ result: Result<[UInt8], any Error>) {
        guard let entry = entries.removeValue(forKey: id) else { return }
        let coalesced = entry.waiters.count - (entry.ledHere ? 1 : 0)
        if coalesced > 0 { metrics.coalesced.increment(by: coalesced) }
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

    /// Whether this process's callers of `id` wait for another owner's outcome.
    func waitsForAnotherOwner(_ id: String) -> Bool { entries[id]?.heldElsewhere == true }

    private func markHeldElsewhere(_ id: String) { entries[id]?.heldElsewhere = true }

    private func markLed(_ id: String) { entries[id]?.ledHere = true }

    nonisolated func coalesceSignal(_ id: String) -> String { "outcome:" + id }
    nonisolated func lockKey(_ id: String) -> String { options.lockPrefix + id }
    nonisolated func outcomeKey(_ id: String) -> String { sameSlot(lockKey(id), ":outcome") }
    /// How long an outcome stays readable after it was published: 3 re-checks of the lock
    /// timeout's pace (each min(timeout/3, 1 s)), at least 1 s; 3 s by default. Kept on the
    /// lock timeout, not on the faster keep-alive re-checks, so that a caller arriving just
    /// after a job completed (or stalled a second) still gets its outcome.
    nonisolated func outcomeTTL(_ lock: LockOptions) -> Duration { max(min(lock.timeout / 3, .seconds(1)) * 3, .seconds(1)) }

    /// Reads a stored outcome of `id`, if any.
    nonisolated func storedOutcome(_ id: String) async throws -> Result<[UInt8], any Error>? {
        guard let bytes = try await client.send("GET", outcomeKey(id)).decode(RedisBytes?.self)?.bytes else { return nil }
        return try JSONDecoder().decode(WireOutcome.self, from: Data(bytes)).result(options.errorTypes)
    }

    enum JobClaim {
        case lock(Lock)
        case held
        case completed(Result<[UInt8], any Error>)
    }

    /// One attempt to become the job's leader: refused when the job's outcome is already
    /// stored (it just completed) or its lock is held. The leader's lock has the short
    /// ``LockOptions/keepAliveLease``, extended by a watchdog while the job runs: when the
    /// leader dies, a waiter takes over within about that lease.
    nonisolated func claimJob(_ id: String, lock options: LockOptions) async throws -> JobClaim {
        let redisKey = lockKey(id)
        let token = OwnerToken.next()
        let reply: RedisReply
        do {
            reply = try await client.run(
                Scripts.acquireJob, keys: [redisKey, sameSlot(redisKey, ":fence"), outcomeKey(id)],
                arguments: [token, options.keepAliveLease.redisMilliseconds])
        } catch {
            abandon([redisKey], token: token, ttl: options.keepAliveLease)
            throw error
        }
        switch try reply.decode(Int64.self) {
        case -1:
            if let outcome = try await storedOutcome(id) { return .completed(outcome) }
            return .held  // expired between the two reads: look again later
        case 0:
            return .held
        case let fence:
            logger.debug("leading a job", metadata: ["id": "\(id)", "fencingToken": "\(fence)"])
            return .lock(Lock(key: id, redisKey: redisKey, token: token, fencingToken: fence,
                              timeout: options.keepAliveLease, connection: client))
        }
    }

    /// Publishes the outcome of `id` if `lock` still owns the job; returns whether it did.
    nonisolated func publish(_ id: String, lock: Lock, options lockOptions: LockOptions, result: Result<[UInt8], any Error>) async throws -> Bool {
        let outcome = WireOutcome(result, options.errorTypes)
        let stored = try JSONEncoder().encode(outcome)
        let message = try JSONEncoder().encode(WireMessage(kind: .outcome, key: id, outcome: outcome))
        let reply = try await client.run(
            Scripts.complete, keys: [lock.redisKey, outcomeKey(id)],
            arguments: [lock.token, outcomeTTL(lockOptions).redisMilliseconds, options.channel, Array(message), Array(stored)])
        lock.markLost()  // released by the script (or lost)
        return try reply.decode(Int.self) == 1
    }

    /// The per-id loop of this process: reads a stored outcome, takes the job's lock when it
    /// is free (runs `job` if there is one), or waits for a message or the next re-check.
    /// A waiter takes over when the leader's lock expired without an outcome.
    ///
    /// A Redis error while the job is being claimed (before it was found held by another
    /// process) is every local caller's outcome at once, as in dlock. Once the job is known
    /// to run elsewhere, a failed re-check is logged and retried: the leader's outcome may
    /// still arrive, and each caller's own timeout bounds the wait.
    nonisolated func drive(_ id: String, lock options: LockOptions, job: (@Sendable () async throws -> [UInt8])?) async {
        var heldElsewhere = job == nil
        while !Task.isCancelled, await hasWaiters(id) {
            do {
                if job == nil {
                    if let outcome = try await storedOutcome(id) {
                        await deliver(id, outcome)
                        return
                    }
                } else if let job {
                    switch try await claimJob(id, lock: options) {
                    case .completed(let outcome):
                        await deliver(id, outcome)
                        return
                    case .lock(let lock):
                        await lead(id, lock: lock, options: options, job: job)
                        return
                    case .held:
                        if !heldElsewhere { await markHeldElsewhere(id) }
                        heldElsewhere = true
                    }
                }
            } catch is CancellationError {
                return
            } catch where !heldElsewhere {
                logger.warning("claiming a job failed", metadata: ["id": "\(id)", "error": "\(error)"])
                await deliver(id, .failure(error))
                return
            } catch {
                logger.warning("coalescing check failed", metadata: ["id": "\(id)", "error": "\(error)"])
            }
            await waitForSignal(coalesceSignal(id), timeout: recheckInterval(options) * Double.random(in: 0.8...1.2))
        }
    }

    /// Runs `job` holding `lock` (extended by a watchdog), then publishes its outcome.
    nonisolated func lead(_ id: String, lock: Lock, options: LockOptions, job: @escaping @Sendable () async throws -> [UInt8]) async {
        let result: Result<[UInt8], any Error>
        metrics.fanoutRuns.increment()
        await markLed(id)
        do {
            result = .success(try await Self.runGuarded(
                key: lock.key, lease: lock.timeout, logger: logger, metrics: (metrics, .fanout),
                extend: { try await lock.extend() }, body: job))
        } catch is CancellationError {
            await lock.releaseSoon()
            return
        } catch {
            result = .failure(error)
        }
        await finish(id, lock: lock, options: options, result: result)
    }

    /// Publishes the outcome (if the lease is still held) and hands it to local waiters;
    /// returns whether it was broadcast.
    @discardableResult
    nonisolated func finish(_ id: String, lock: Lock, options: LockOptions, result: Result<[UInt8], any Error>) async -> Bool {
        var broadcast = false
        var delay: Duration = .milliseconds(25)
        while true {
            do {
                broadcast = try await publish(id, lock: lock, options: options, result: result)
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
    /// ``RemoteJobError``. When Redis fails while the job is being claimed, `push` throws
    /// that error and every local caller's `onComplete` gets it at once.
    ///
    /// - Parameters:
    ///   - id: the job's identity: callers of the same `id` share one run.
    ///   - payload: the outcome's type (`Codable`: it crosses processes as JSON).
    ///   - timeout: how long `onComplete` may wait for the outcome; `nil` for twice the
    ///     lock timeout.
    ///   - options: this call's lock options (the job lock's lease, the claim's retries);
    ///     `nil` uses the queue's. The caller that claims the job decides them.
    ///   - onComplete: runs once with the job's outcome, in every caller.
    /// - Throws: ``LockAcquisitionError`` when another caller runs the job; `RedisError`
    ///   when Redis failed; `RedisError` `invalidArgument` for an empty id, a timeout that
    ///   is not positive, or invalid options, before anything is sent.
    public func push<Payload: Codable & Sendable>(
        _ id: String, as payload: Payload.Type = Payload.self, timeout: Duration? = nil, options: LockOptions? = nil,
        onComplete: @escaping @Sendable (Result<Payload, any Error>) -> Void
    ) async throws -> Completion<Payload> {
        let lock = try lockOptions(options)
        try validateKey(id, "job id")
        let timeout = timeout ?? lock.timeout * 2
        guard timeout > .zero else { throw RedisError.invalidArgument("the push timeout must be positive") }
        try await ensureListening()
        let (waiterID, existed) = addWaiter(id, timeout: timeout) { onComplete(decodePayload($0)) }
        if existed { throw LockAcquisitionError(key: id, reason: "job is already running") }
        do {
            return try await claimOrWait(id, lock: lock)
        } catch let error as LockAcquisitionError {
            throw error
        } catch is CancellationError {
            removeWaiter(id, waiterID, with: .failure(CancellationError()))
            throw CancellationError()
        } catch {
            // Redis failed while claiming: every local caller of `id` gets the error now (the
            // ones refused as "already running" too), rather than waiting out its timeout.
            logger.warning("claiming a job failed", metadata: ["id": "\(id)", "error": "\(error)"])
            deliver(id, .failure(error))
            throw error
        }
    }

    private func claimOrWait<Payload: Codable & Sendable>(_ id: String, lock options: LockOptions) async throws -> Completion<Payload> {
        var attempt = 0
        while true {
            switch try await claimJob(id, lock: options) {
            case .completed(let outcome):
                deliver(id, outcome)
                throw LockAcquisitionError(key: id, reason: "job already completed")
            case .lock(let lock):
                let lost = LeaseLoss()
                metrics.fanoutRuns.increment()
                markLed(id)
                let watchdog = Task { [logger, metrics] in
                    await Self.watch(lease: lock.timeout, key: lock.key, logger: logger, metrics: (metrics, .fanout)) {
                        try await lock.extend()
                    }
                    if !Task.isCancelled { lost.mark() }
                }
                return Completion<Payload>(id: id, queue: self, lock: lock, options: options, watchdog: watchdog, lost: lost)
            case .held:
                break
            }
            // Delivered by the leader's broadcast meanwhile, or out of retries: wait for it.
            guard attempt < options.retries, hasWaiters(id) else { break }
            attempt += 1
            try await Task.sleep(for: options.jitteredDelay())
            guard hasWaiters(id) else { break }
        }
        if hasWaiters(id) { setDriver(id, Task { await self.drive(id, lock: options, job: nil) }) }
        throw LockAcquisitionError(key: id, reason: "held by another owner")
    }

    /// dlock's `fanout`: `job` runs once across the fleet for concurrent callers of the same
    /// `id`, and every caller returns its value or throws its error (``RemoteJobError``
    /// from another process). Throws ``FanoutTimeoutError`` after `timeout` (default: twice
    /// the lock timeout) even if the lock was never acquired. When the process running the
    /// job dies, its lock expires and a waiting process takes over and runs the job.
    ///
    /// - Parameters:
    ///   - id: the job's identity: concurrent callers of the same `id` share one run.
    ///   - timeout: how long to wait for the outcome; `nil` for twice the lock timeout.
    ///   - options: this call's lock options (the job lock's lease, the re-check interval);
    ///     `nil` uses the queue's. The first local caller of `id` decides them.
    ///   - job: the work, run by one caller in the fleet; its value (or error) reaches all.
    /// - Throws: the job's error; ``FanoutTimeoutError``; `RedisError` when Redis failed
    ///   while the job was being claimed (every local caller of `id` gets it at once);
    ///   `RedisError` `invalidArgument` for an empty id, a timeout that is not positive, or
    ///   invalid options, before anything is sent.
    public nonisolated func fanout<T: Codable & Sendable>(
        _ id: String, timeout: Duration? = nil, options: LockOptions? = nil, job: @escaping @Sendable () async throws -> T
    ) async throws -> T {
        let lock = try lockOptions(options)
        try validateKey(id, "job id")
        let timeout = timeout ?? lock.timeout * 2
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
                            await self.drive(id, lock: lock) { try JSONEncoder().encode(try await job()).map { $0 } }
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

/// The first caller's handle of a ``CallbackQueue/push(_:as:timeout:options:onComplete:)`` job.
/// Its lock is extended in the background until `complete` is called (or the completion
/// is dropped).
public final class Completion<Payload: Codable & Sendable>: Sendable {
    /// The job's id, as given to ``CallbackQueue/push(_:as:timeout:options:onComplete:)``:
    /// callers of the same id share one run.
    public let id: String
    let queue: CallbackQueue
    let lock: Lock
    let options: LockOptions
    let watchdog: Task<Void, Never>
    let lost: LeaseLoss
    private let completed = Mutex(false)

    init(id: String, queue: CallbackQueue, lock: Lock, options: LockOptions, watchdog: Task<Void, Never>, lost: LeaseLoss) {
        self.id = id
        self.queue = queue
        self.lock = lock
        self.options = options
        self.watchdog = watchdog
        self.lost = lost
    }

    /// A completion dropped without `complete` stops keeping its job's lock alive: the lock
    /// runs out after its keep-alive lease and another caller can take the job over.
    deinit { watchdog.cancel() }

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
        let broadcast = await queue.finish(id, lock: lock, options: options, result: bytes)
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

/// A job's outcome on the wire (JSON): its value, or its error's type name and message,
/// plus the error itself, encoded, when its type is registered
/// (``CallbackQueueOptions/register(_:as:)``).
struct WireOutcome: Codable {
    var value: Data?
    var errorType: String?
    var errorMessage: String?
    /// The name the error's type is registered under.
    var errorName: String?
    /// The error, encoded by its registered type.
    var error: Data?

    init(_ result: Result<[UInt8], any Error>, _ errorTypes: [CodableErrorType]) {
        switch result {
        case .success(let bytes): value = Data(bytes)
        case .failure(let error):
            let remote = RemoteJobError(describing: error)
            errorType = remote.typeName
            errorMessage = remote.message
            for type in errorTypes {
                guard let encoded = try? type.encode(error) else { continue }
                errorName = type.name
                self.error = encoded
                break
            }
        }
    }

    /// The outcome; an error whose type is registered here under the same name comes back
    /// as that type, any other as ``RemoteJobError``.
    func result(_ errorTypes: [CodableErrorType]) -> Result<[UInt8], any Error> {
        if let value { return .success(Array(value)) }
        if let errorName, let error, let type = errorTypes.last(where: { $0.name == errorName }),
           let decoded = try? type.decode(error) {
            return .failure(decoded)
        }
        return .failure(RemoteJobError(typeName: errorType ?? "Error", message: errorMessage ?? ""))
    }
}
