import Foundation
import Hiredis
import Logging
import Synchronization

/// fs-job-store in Swift: jobs move from pending (workers may pull them) to fulfilled (a
/// worker resolved them to a value), and targets waiting for a job's value are notified.
/// Three workflows, each recovered on its own after a crash: creation, fulfilment and
/// notification.
///
/// Two backends with the same behaviour: ``FileJobStore`` (one host, many processes, a
/// shared directory) and ``RedisJobStore`` (many hosts).
///
/// A fulfilled job is kept for the store's retention (default 1 hour) once no target waits
/// for it and no lease is held on it, then removed: ``state(_:)`` reports it
/// ``JobState/unknown`` and calls naming it throw ``JobStoreError/Code/unknownJob``.
public protocol JobStore<Target>: Sendable {
    /// Who waits for a job's value (an HTTP callback, a user id…); stored as JSON.
    associatedtype Target: Codable & Sendable

    /// Stores a new pending job and returns its id. Does not lease it.
    func create(request: [UInt8]) async throws -> JobID

    /// An exclusive lease on one pending job, or `nil` when every pending job is leased or
    /// there is none. The lease renews itself; call ``JobLease/release()`` after the work.
    func pullWork() async throws -> JobLease?

    /// Resolves a pending job to `value`. The first fulfil wins; a later one throws
    /// ``JobStoreError/Code/alreadyFulfilled`` (or ``JobStoreError/Code/unknownJob`` once
    /// the job was removed after its retention). With a `respond` handler, the waiting
    /// targets are notified before this returns; a handler's failure is reported, not thrown.
    func fulfill(_ id: JobID, value: [UInt8]) async throws

    /// Adds a target to be told the job's value. When the job is fulfilled already and a
    /// `respond` handler is configured, the target is notified before this returns (and
    /// stays queued when the handler returns `false` or throws). Throws
    /// ``JobStoreError/Code/unknownJob`` for a job that does not exist (or was removed).
    func queue(_ id: JobID, target: Target) async throws

    /// Removes a waiting target (nothing happens when it is not waiting).
    func unqueue(_ id: JobID, target: Target) async throws

    /// Removes several waiting targets.
    func unqueueAll(_ id: JobID, targets: [Target]) async throws

    /// An exclusive lease on one fulfilled job with waiting targets, or `nil`.
    func pullNotification() async throws -> NotificationLease<Target>?

    /// Replaces the request of a pending job whose version is `expectedVersion` (0 for a job
    /// never updated); returns the new version (`expectedVersion + 1`).
    ///
    /// - Throws: ``JobStoreError/Code/versionMismatch`` when the job is at another version
    ///   (or another update won the race), ``JobStoreError/Code/alreadyFulfilled`` when it
    ///   was fulfilled, ``JobStoreError/Code/unknownJob`` when there is no such job.
    @discardableResult
    func update(_ id: JobID, expectedVersion: Int, request: [UInt8]) async throws -> Int

    /// Where the job is, for introspection: ``JobState/unknown`` for a job never created or
    /// removed after its retention.
    func state(_ id: JobID) async throws -> JobState

    /// Removes up to `limit` fulfilled jobs whose retention has run out, with no target
    /// waiting and no lease held on them (``pullWork()`` and ``pullNotification()`` also
    /// remove a few on every call). `limit` bounds the jobs looked at: a job found leased is
    /// looked at again a retention later; one with a target waiting once its targets are
    /// gone. Returns how many were removed; does nothing for a store that keeps jobs for ever.
    ///
    /// - Throws: `RedisError` `invalidArgument` when `limit` is not positive; the backend's
    ///   errors (Redis, or ``JobStoreError/Code/io``).
    @discardableResult
    func removeExpired(limit: Int) async throws -> Int
}

extension JobStore {
    /// Removes up to 100 expired jobs; see ``removeExpired(limit:)``.
    @discardableResult
    public func removeExpired() async throws -> Int {
        try await removeExpired(limit: 100)
    }

    /// Stores a new pending job whose request is `request` encoded as JSON.
    public func create<Request: Encodable>(request: Request) async throws -> JobID {
        try await create(request: Array(try JSONEncoder().encode(request)))
    }

    /// Stores a new pending job whose request is the UTF-8 of `request`.
    public func create(request: String) async throws -> JobID {
        try await create(request: Array(request.utf8))
    }

    /// Fulfils with the UTF-8 of `value`.
    public func fulfill(_ id: JobID, value: String) async throws {
        try await fulfill(id, value: Array(value.utf8))
    }
}

/// A job's id: a lowercase UUID.
public struct JobID: Hashable, Sendable, Codable, CustomStringConvertible {
    /// The id as text: a lowercase UUID.
    public let rawValue: String

    /// The job id `rawValue`, a UUID in any case (kept in lowercase).
    ///
    /// - Throws: `JobStoreError` `.unknownJob` when `rawValue` is not a job id.
    public init(_ rawValue: String) throws {
        guard let uuid = UUID(uuidString: rawValue), uuid.uuidString.lowercased() == rawValue.lowercased() else {
            throw JobStoreError(.unknownJob, "\"\(rawValue.prefix(64))\" is not a job id")
        }
        self.rawValue = rawValue.lowercased()
    }

    init() { rawValue = UUID().uuidString.lowercased() }

    public var description: String { rawValue }
}

/// Where a job is.
public enum JobState: Sendable, Hashable {
    /// Waiting to be worked on; `version` counts the updates of its request: 0 at creation,
    /// as fs-job-store's, and one more with every successful
    /// ``JobStore/update(_:expectedVersion:request:)``.
    case pending(version: Int)
    /// Fulfilled: its value is stored (targets may still wait to be notified).
    case fulfilled
    /// No such job: never created, or removed by retention.
    case unknown
}

/// Why a job store call was refused.
public struct JobStoreError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong; new codes may be added, so a `switch` needs a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case unknownJob, alreadyFulfilled, versionMismatch, leaseCompromised, invalidStore, io
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// No job with that id.
        public static let unknownJob = Code(.unknownJob)
        /// The job was fulfilled already (the first fulfil wins).
        public static let alreadyFulfilled = Code(.alreadyFulfilled)
        /// `update` expected another version.
        public static let versionMismatch = Code(.versionMismatch)
        /// The lease expired, was taken over, or could not be renewed in time.
        public static let leaseCompromised = Code(.leaseCompromised)
        /// The store's directory is missing, not a directory, or not writable.
        public static let invalidStore = Code(.invalidStore)
        /// A filesystem call failed.
        public static let io = Code(.io)
        public var description: String { base.rawValue }
    }

    /// What kind of refusal this is.
    public var code: Code
    /// A human-readable explanation.
    public var message: String

    /// An error of kind `code`, explained by `message`.
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "JobStoreError.\(code): \(message)" }
}

/// Tells a lease holder that its lease is gone. Await ``wait()`` beside the work, or poll
/// ``isCompromised``.
public final class LeaseSignal: Sendable {
    private let shot = OneShotSignal()

    init() {}

    /// Whether the lease was lost.
    public var isCompromised: Bool { shot.isFired }

    /// Returns once the lease is lost (or the calling task is cancelled).
    public func wait() async { await shot.wait() }

    /// Fires; `onFirst` runs before any waiter resumes, for the call that fired it.
    func fire(onFirst: () -> Void = {}) { shot.fire(onFirst: onFirst) }
}

/// Fires once; waiters resume then, or at once after it fired, or when cancelled.
final class OneShotSignal: Sendable {
    private struct State {
        var fired = false
        var waiters: [UInt64: CheckedContinuation<Void, Never>] = [:]
        var next: UInt64 = 0
    }
    private let state = Mutex(State())

    var isFired: Bool { state.withLock { $0.fired } }

    func wait() async {
        let id = state.withLock { state -> UInt64 in
            state.next += 1
            return state.next
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if state.fired || Task.isCancelled { return true }
                    state.waiters[id] = continuation
                    return false
                }
                if now { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.resume()
        }
    }

    /// Fires; `onFirst` runs before any waiter resumes, for the call that fired it.
    func fire(onFirst: () -> Void = {}) {
        let (first, waiters) = state.withLock { state -> (Bool, [CheckedContinuation<Void, Never>]) in
            let first = !state.fired
            state.fired = true
            defer { state.waiters = [:] }
            return (first, Array(state.waiters.values))
        }
        if first { onFirst() }
        for waiter in waiters { waiter.resume() }
    }
}

/// Renews a lease every third of its timeout until released; fires the signal when a
/// renewal finds the lease gone, or when no renewal succeeded for a whole timeout.
final class LeaseKeeper: Sendable {
    let signal = LeaseSignal()
    /// Counts the loss (once) and the targets a notification lease removes.
    let metrics: JobStoreMetrics
    private let renewal = Mutex<Task<Void, Never>?>(nil)
    private let released = Mutex(false)
    private let releaseAction: @Sendable () async throws -> Bool

    init(timeout: Duration, metrics: JobStoreMetrics, renew: @escaping @Sendable () async throws -> Bool,
         release: @escaping @Sendable () async throws -> Bool) {
        self.releaseAction = release
        self.metrics = metrics
        let signal = self.signal
        let task = Task {
            let clock = ContinuousClock()
            var lastRenewal = clock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: timeout / 3)
                if Task.isCancelled { return }
                do {
                    // The lease runs from when the renewal was sent, not answered.
                    let sent = clock.now
                    if try await renew() {
                        lastRenewal = sent
                    } else {
                        signal.fire { metrics.leaseLost.increment() }
                        return
                    }
                } catch {
                    if clock.now - lastRenewal >= timeout {
                        signal.fire { metrics.leaseLost.increment() }
                        return
                    }
                }
            }
        }
        renewal.withLock { $0 = task }
    }

    deinit {
        renewal.withLock { $0?.cancel() }
    }

    /// Stops renewing and gives the lease up. Throws `.leaseCompromised` when it had been
    /// lost; a second call does nothing.
    func release() async throws {
        let first = released.withLock { released -> Bool in
            defer { released = true }
            return !released
        }
        guard first else { return }
        // No renewal may land after the release (it could re-take the lease).
        let running = renewal.withLock { $0 }
        running?.cancel()
        await running?.value
        let held = try await Task { try await releaseAction() }.value
        if !held || signal.isCompromised {
            signal.fire { metrics.leaseLost.increment() }
            throw JobStoreError(.leaseCompromised, "the lease had been lost before it was released")
        }
    }
}

/// An exclusive lease on one pending job (``JobStore/pullWork()``).
public final class JobLease: Sendable {
    /// The job's id.
    public let id: JobID
    /// The job's request, as stored (see ``request(as:)`` to decode it).
    public let request: [UInt8]
    /// The request's version: 0 for a job never updated (for
    /// ``JobStore/update(_:expectedVersion:request:)``).
    public let version: Int
    /// Increases with every lease taken in the store (Redis), or with every takeover of
    /// this job's lease (file).
    public let fencingToken: Int64
    let keeper: LeaseKeeper

    init(id: JobID, request: [UInt8], version: Int, fencingToken: Int64, keeper: LeaseKeeper) {
        self.id = id
        self.request = request
        self.version = version
        self.fencingToken = fencingToken
        self.keeper = keeper
    }

    /// Fires when the lease is lost (expired, taken over, store unreachable).
    public var compromised: LeaseSignal { keeper.signal }

    /// The request decoded from JSON.
    public func request<Request: Decodable>(as type: Request.Type) throws -> Request {
        try JSONDecoder().decode(type, from: Data(request))
    }

    /// Gives the lease up. Call it after the work; a second call does nothing.
    ///
    /// - Throws: ``JobStoreError/Code/leaseCompromised`` when the lease had been lost.
    public func release() async throws { try await keeper.release() }
}

/// An exclusive lease on one fulfilled job with waiting targets
/// (``JobStore/pullNotification()``).
public final class NotificationLease<Target: Codable & Sendable>: Sendable {
    /// The job's id.
    public let id: JobID
    /// The job's value, as fulfilled.
    public let value: [UInt8]
    /// The targets waiting when the lease was taken.
    public let waiting: [Target]
    let keeper: LeaseKeeper
    private let remove: @Sendable ([Target]) async throws -> Void

    init(id: JobID, value: [UInt8], waiting: [Target], keeper: LeaseKeeper,
         remove: @escaping @Sendable ([Target]) async throws -> Void) {
        self.id = id
        self.value = value
        self.waiting = waiting
        self.keeper = keeper
        self.remove = remove
    }

    /// Fires when the lease is lost.
    public var compromised: LeaseSignal { keeper.signal }

    /// The value decoded from JSON.
    public func value<Value: Decodable>(as type: Value.Type) throws -> Value {
        try JSONDecoder().decode(type, from: Data(value))
    }

    /// Removes the targets that were notified and releases the lease. Targets not removed
    /// (and any queued meanwhile) stay for the next ``JobStore/pullNotification()``.
    ///
    /// - Throws: ``JobStoreError/Code/leaseCompromised`` when the lease had been lost (the
    ///   targets are removed all the same: they were notified). When removing fails, the
    ///   lease is released all the same and the removal's error is thrown: the targets stay
    ///   and the next pull notifies them again (at least once), rather than after the lease.
    public func done(removing notified: [Target]) async throws {
        var removalError: (any Error)?
        if !notified.isEmpty {
            do {
                try await remove(notified)
                keeper.metrics.notified.increment(by: notified.count)
            } catch {
                removalError = error
            }
        }
        do {
            try await keeper.release()
        } catch {
            throw removalError ?? error  // the first failure is the one to report
        }
        if let removalError { throw removalError }
    }
}

/// The handler that notifies a target of a job's value: return `true` when it was notified
/// (the target is then removed), `false` to leave it for ``JobStore/pullNotification()``
/// ("not now"). A handler that throws leaves the target queued as `false` does, and the
/// failure is reported: logged at `error` level through the store's logger, and passed to
/// the store's ``JobResponseFailureHandler`` (fs-job-store's `onresponsefailure`).
public typealias JobResponder<Target> = @Sendable (_ target: Target, _ id: JobID, _ value: [UInt8]) async throws -> Bool

/// Told when a ``JobResponder`` threw for `target` of job `id`; the target stays queued and
/// comes back through ``JobStore/pullNotification()``. Called on the task that was
/// notifying: keep it short and do not block.
public typealias JobResponseFailureHandler<Target> = @Sendable (_ target: Target, _ id: JobID, _ error: any Error) -> Void

/// A store's `respond` handler with its failure reporting.
struct Responder<Target: Sendable>: Sendable {
    let respond: JobResponder<Target>
    let onFailure: JobResponseFailureHandler<Target>?
    let logger: Logger

    init?(_ respond: JobResponder<Target>?, onFailure: JobResponseFailureHandler<Target>?, logger: Logger) {
        guard let respond else { return nil }
        self.respond = respond
        self.onFailure = onFailure
        self.logger = logger
    }

    /// Whether `target` was notified; a failure is reported (once) and counts as not notified.
    func notify(_ target: Target, _ id: JobID, _ value: [UInt8]) async -> Bool {
        do {
            return try await respond(target, id, value)
        } catch {
            logger.error("respond handler failed; the target stays queued", metadata: ["job": "\(id)", "error": "\(error)"])
            onFailure?(target, id, error)
            return false
        }
    }
}

/// How many expired jobs a `pullWork` or `pullNotification` removes at most, on the way.
let opportunisticRemovals = 20

/// - Throws: `RedisError` `invalidArgument` for a retention that is not positive.
func validateRetention(_ retention: Duration?) throws {
    if let retention, retention <= .zero {
        throw RedisError.invalidArgument("retention must be positive (nil keeps jobs for ever)")
    }
}

/// Targets as canonical JSON (sorted keys), so equal targets have equal bytes.
func encodeTarget<Target: Encodable>(_ target: Target) throws -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    return Array(try encoder.encode(target))
}

func decodeTarget<Target: Decodable>(_ bytes: [UInt8], as type: Target.Type) throws -> Target {
    try JSONDecoder().decode(type, from: Data(bytes))
}

/// Notifies every waiting target of a leased job through `responder`, then removes those
/// notified and releases the lease; a target whose handler failed stays queued.
func deliver<Target>(_ lease: NotificationLease<Target>, _ responder: Responder<Target>) async throws {
    var notified: [Target] = []
    for target in lease.waiting where await responder.notify(target, lease.id, lease.value) {
        notified.append(target)
    }
    try await lease.done(removing: notified)
}
