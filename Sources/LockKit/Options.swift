import CoreMetrics
import Foundation
import Hiredis
import Logging

/// How locks are taken.
public struct LockOptions: Sendable, Hashable {
    /// The lease of the locks handed to the caller (``CallbackQueue/once(_:options:)``,
    /// ``CallbackQueue/withLock(_:options:autoExtend:_:)``, `CallbackQueue.multi`):
    /// a lock not extended or released within this time expires (server clock). Also sets
    /// the default push/fanout timeout (twice this).
    public var timeout: Duration = .seconds(10)
    /// The short lease of what a watchdog keeps alive for as long as its holder lives: a
    /// push/fanout job's leader lock (while the job runs) and a semaphore permit (from
    /// `take` until `leave`). Default 1 s: when the holder's process dies, a waiting
    /// process takes the job over, or gets the permit, within about this time. A holder
    /// whose process stalls (or cannot reach Redis) for longer loses it: a few seconds suit
    /// busy hosts and expensive jobs (see <doc:RequestCoalescing>). At least 30 ms.
    public var keepAliveLease: Duration = .seconds(1)
    /// Further attempts after the first one fails because the lock is held.
    public var retries: Int = 2
    /// The pause between attempts.
    public var delay: Duration = .milliseconds(100)
    /// The fraction (0...1) of `delay` that is randomised, so contenders do not retry in step.
    public var jitter: Double = 0.2
    /// With replicas (Sentinel), wait after taking a lock until this many replicas have
    /// the write (`WAIT`); if fewer acknowledge within ``replicationTimeout``, the lock is
    /// released and acquisition fails. 0 (the default) does not wait. It narrows, but
    /// cannot close, the window in which a failover loses a lock: see the README.
    public var minReplicas: Int = 0
    /// How long `WAIT` may take for ``minReplicas`` (default 1 s).
    public var replicationTimeout: Duration = .seconds(1)

    /// Options with dlock's defaults: a 10 s lease, 2 retries 100 ms apart with 20 % jitter,
    /// and a 1 s keep-alive lease for the records that mark a live holder.
    public init(timeout: Duration = .seconds(10), retries: Int = 2, delay: Duration = .milliseconds(100), jitter: Double = 0.2,
                keepAliveLease: Duration = .seconds(1)) {
        self.timeout = timeout
        self.retries = retries
        self.delay = delay
        self.jitter = jitter
        self.keepAliveLease = keepAliveLease
    }

    func validate() throws {
        guard timeout >= .milliseconds(1) else { throw RedisError.invalidArgument("lock timeout must be at least 1 ms") }
        guard keepAliveLease >= .milliseconds(30) else { throw RedisError.invalidArgument("keepAliveLease must be at least 30 ms") }
        guard retries >= 0 else { throw RedisError.invalidArgument("lock retries must not be negative") }
        guard delay >= .zero else { throw RedisError.invalidArgument("lock delay must not be negative") }
        guard (0...1).contains(jitter) else { throw RedisError.invalidArgument("lock jitter must be in 0...1") }
        guard minReplicas >= 0 else { throw RedisError.invalidArgument("minReplicas must not be negative") }
        guard replicationTimeout >= .milliseconds(1) else { throw RedisError.invalidArgument("replicationTimeout must be at least 1 ms") }
    }

    /// `delay`, randomised by ±`jitter`/2.
    func jitteredDelay() -> Duration {
        delay * (1 + jitter * (Double.random(in: 0..<1) - 0.5))
    }
}

/// Options of a ``CallbackQueue``.
public struct CallbackQueueOptions: Sendable {
    /// The pub/sub channel on which outcomes and wake-ups are broadcast. Every process that
    /// coalesces the same jobs must use the same channel and prefix.
    public var channel: String
    /// Prepended to every key (no separator, as in dlock; default `dlock:`). Keep hash-tag
    /// braces out of it: each lock, semaphore and job then has its keys in its own cluster
    /// slot (its lock key and its `{…}:fence`, `{…}:permits`, `{…}:outcome` companions share
    /// one), so that on Redis Cluster the fleet's locks spread over every primary. Put a
    /// hash tag in a key itself (`"{tenant:7}:report"`) to keep several locks in one slot.
    public var lockPrefix: String = "dlock:"
    /// Lock timing.
    public var lock: LockOptions = LockOptions()
    /// Where the queue logs; silent by default.
    public var logger: Logger = Logger(label: "lockkit", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Where the queue's metrics go (acquisitions, contention, wait time, lost leases,
    /// watchdog extensions, fanout runs and coalesced callers; see the README's metrics
    /// table); `nil`, the default, is the app's bootstrapped `MetricsSystem`.
    public var metricsFactory: (any MetricsFactory)?
    /// Dimensions added to each of the queue's metrics (e.g. `[("service", "billing")]`).
    public var metricsDimensions: [(String, String)] = []
    /// The job error types that cross processes as themselves (see ``register(_:as:)``).
    public private(set) var errorTypes: [CodableErrorType] = []

    /// Options for the queue on `channel` (the same in every cooperating process), keys
    /// prefixed with `lockPrefix`, and `lock` as every call's default lock options.
    public init(channel: String, lockPrefix: String = "dlock:", lock: LockOptions = LockOptions()) {
        self.channel = channel
        self.lockPrefix = lockPrefix
        self.lock = lock
    }
}

extension CallbackQueueOptions {
    /// Lets push/fanout job errors of type `E` cross processes as `E`.
    ///
    /// A job that fails with an `E` has it JSON-encoded into its outcome, under `name`;
    /// every process whose queue registered a type under the same `name` gets the error
    /// decoded as that type, with the same fields. Errors of other types, or whose name is
    /// not registered on the receiving side (or that do not decode), arrive as
    /// ``RemoteJobError``. Callers in the process that ran the job always get the original
    /// error. Registering a name again replaces the earlier type.
    ///
    /// - Parameters:
    ///   - type: the error type (`Codable`, so that it crosses processes as JSON).
    ///   - name: a name stable across processes and versions. The default, the type's
    ///     qualified name (`Module.Type`), suits processes that share the module. An empty
    ///     name is refused by ``CallbackQueue/init(client:pubsub:options:)``.
    public mutating func register<E: Error & Codable & Sendable>(_ type: E.Type, as name: String = String(reflecting: E.self)) {
        errorTypes.removeAll { $0.name == name }
        errorTypes.append(CodableErrorType(type, name: name))
    }
}

/// A job error type registered to cross processes as itself (``CallbackQueueOptions/register(_:as:)``).
public struct CodableErrorType: Sendable {
    /// The name it travels under.
    public let name: String
    /// Encodes an error of this type; `nil` for an error of another type.
    let encode: @Sendable (any Error) throws -> Data?
    let decode: @Sendable (Data) throws -> any Error

    init<E: Error & Codable & Sendable>(_ type: E.Type, name: String) {
        self.name = name
        encode = { error in
            guard let typed = error as? E else { return nil }
            return try JSONEncoder().encode(typed)
        }
        decode = { data in try JSONDecoder().decode(E.self, from: data) }
    }
}

/// The lock is held by someone else (after every retry).
public struct LockAcquisitionError: Error, Sendable, CustomStringConvertible {
    /// The lock's name (without the prefix), or the job's id.
    public let key: String
    /// Why it was not acquired (for logs).
    public let reason: String
    public var description: String { "LockAcquisitionError: could not acquire lock on \(key) (\(reason))" }
}

/// Extending failed: the lock had expired or belongs to someone else. The lock is now
/// marked unlocked.
public struct LockExtendError: Error, Sendable, CustomStringConvertible {
    /// The lock's name (without the prefix).
    public let key: String
    public var description: String { "LockExtendError: lock on \(key) had expired or is held by another owner" }
}

/// Releasing failed: the lock had expired, belongs to someone else, or was released
/// already. The lock is now marked unlocked.
public struct LockReleaseError: Error, Sendable, CustomStringConvertible {
    /// The lock's name (without the prefix).
    public let key: String
    public var description: String { "LockReleaseError: lock on \(key) was not held by this owner" }
}

/// A scoped lock's lease was lost while its body ran; the body's task was cancelled.
public struct LockLostError: Error, Sendable, CustomStringConvertible {
    /// The lock's name (without the prefix).
    public let key: String
    public var description: String { "LockLostError: the lease on \(key) was lost while held" }
}

/// A multi-lock could not be taken or extended as a whole (dlock's aggregate error).
public struct MultiLockError: Error, Sendable, CustomStringConvertible {
    /// The error of every key that failed, by key: from `multi`, a ``LockAcquisitionError``
    /// for each key found held in the last attempt (every held key of the slot group that
    /// failed, and of the groups after it); from ``MultiLock/extend(by:)``, a
    /// ``LockExtendError`` for each lock that was lost.
    public let errors: [String: any Error]
    /// From `multi`: the locks the last attempt had taken before it found a key held, given
    /// back again. From ``MultiLock/extend(by:)``: all of the multi-lock's locks (released).
    public let locks: [Lock]
    public var description: String {
        "MultiLockError: " + errors.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: "; ")
    }
}

/// Nobody delivered the job's outcome in time ("queue-no-response" in dlock).
public struct FanoutTimeoutError: Error, Sendable, CustomStringConvertible {
    /// The job's id.
    public let id: String
    public var description: String { "FanoutTimeoutError: queue-no-response for job \(id)" }
}

/// A job failed in another process with an error whose type is not registered on this
/// queue (``CallbackQueueOptions/register(_:as:)``): its type name and message.
public struct RemoteJobError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The error's type, as `String(reflecting:)` named it in the process that ran the job.
    public let typeName: String
    /// The error's description in that process.
    public let message: String
    public var description: String { "\(typeName): \(message)" }

    /// How an error travels: its dynamic type's name and its description.
    public init(describing error: any Error) {
        if let remote = error as? RemoteJobError {
            self = remote
        } else {
            typeName = String(describing: type(of: error))
            message = String(describing: error)
        }
    }

    init(typeName: String, message: String) {
        self.typeName = typeName
        self.message = message
    }
}

func validateKey(_ key: String, _ what: String = "key") throws {
    guard !key.isEmpty else { throw RedisError.invalidArgument("the lock \(what) is empty") }
}

/// A key in the same cluster slot as `base`: `base` + suffix when it has a hash tag,
/// otherwise `{base}` + suffix (the slot of `{x}…` is the slot of `x`).
func sameSlot(_ base: String, _ suffix: String) -> String {
    hashTag(base) != nil ? base + suffix : "{\(base)}" + suffix
}

/// The hash tag of a key, as Redis Cluster computes it (the text between the first `{`
/// and the next `}`, if not empty).
func hashTag(_ key: String) -> Substring? {
    // By bytes, as Redis does (and without the cost of walking characters).
    let utf8 = key.utf8
    guard let open = utf8.firstIndex(of: UInt8(ascii: "{")) else { return nil }
    let start = utf8.index(after: open)
    guard let close = utf8[start...].firstIndex(of: UInt8(ascii: "}")), close > start else { return nil }
    return key[start..<close]
}
