import Foundation
import Hiredis

/// How one enqueue call treats its tasks: the caller's id, when they become available, their
/// priority and their retry policy. Every field has a default that behaves as worqr did.
///
/// ```swift
/// try await queue.enqueue("emails", "to:ada", options: TaskOptions(id: "welcome-ada", delay: .seconds(30),
///                                                                  priority: 5, retry: .exponential(attempts: 5)))
/// ```
public struct TaskOptions: Sendable, Hashable {
    /// The task's id; `nil` (the default) lets the queue number it. A caller's id must be
    /// non-empty, at most 1,024 bytes, and not made of digits only (those are the queue's
    /// own ids). While a task with this id has a record in the queue (waiting, delayed,
    /// active, dead-lettered, or kept after it completed or failed) another enqueue of it
    /// is skipped and reported (``EnqueueResult/skipped``), or refused with
    /// ``DuplicatePolicy/fail``. Only for an enqueue of one task.
    public var id: String?
    /// Run the tasks no earlier than this long after the enqueue, by the server's clock.
    public var delay: Duration?
    /// Run the tasks no earlier than this time, by the server's clock (`TIME`). A time in
    /// the past makes them wait at once. Not together with ``delay``.
    public var at: Date?
    /// Higher first (default 0); first in, first out within one priority. From
    /// `-1_000_000` to `1_000_000`.
    public var priority: Int
    /// What happens when a handler throws or a worker dies; `nil` takes
    /// ``WorkQueueOptions/retry`` of the enqueuing instance.
    public var retry: RetryPolicy?

    /// The range of ``priority``.
    public static let priorities = -1_000_000...1_000_000

    /// Options for an enqueue; every default behaves as worqr did.
    public init(id: String? = nil, delay: Duration? = nil, at: Date? = nil, priority: Int = 0, retry: RetryPolicy? = nil) {
        self.id = id
        self.delay = delay
        self.at = at
        self.priority = priority
        self.retry = retry
    }

    /// - Throws: `invalidArgument` naming what is wrong.
    func validate(taskCount: Int) throws {
        if let id {
            try validateTaskID(id)
            guard taskCount == 1 else { throw RedisError.invalidArgument("a caller's task id is for an enqueue of one task, not \(taskCount)") }
        }
        if let delay, delay < .zero { throw RedisError.invalidArgument("the delay must not be negative") }
        if delay != nil, at != nil { throw RedisError.invalidArgument("give a delay or a time (at), not both") }
        if let at, !at.timeIntervalSince1970.isFinite || at.timeIntervalSince1970 < 0 {
            throw RedisError.invalidArgument("the time (at) must be after 1970")
        }
        guard Self.priorities.contains(priority) else {
            throw RedisError.invalidArgument("the priority \(priority) is outside \(Self.priorities)")
        }
        try retry?.validate()
    }
}

/// Task ids given by callers: non-empty, at most 1,024 bytes, not all digits.
func validateTaskID(_ id: String) throws {
    guard !id.isEmpty else { throw RedisError.invalidArgument("the task id must not be empty") }
    guard id.utf8.count <= 1024 else { throw RedisError.invalidArgument("the task id is longer than 1024 bytes") }
    guard !id.utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) else {
        throw RedisError.invalidArgument("the task id \"\(id)\" is all digits (reserved for the queue's own ids)")
    }
}

/// How often a task runs before it goes to the dead letters, and how long it waits between
/// attempts. A handler that throws, or a worker that dies holding the task, counts an
/// attempt; the task then waits out the backoff as a delayed task and runs again; after
/// ``attempts`` attempts it goes to the dead letters with its last error. ``Worker/stop(_:reason:)``
/// counts no attempt (the task goes back to the front).
///
/// The wait after the n-th failed attempt: `fixed` waits `delay`; `exponential` waits
/// `base · 2ⁿ⁻¹`; both at most `cap`, less a random part of up to `jitter` of it (so that
/// tasks that failed together do not come back together).
public struct RetryPolicy: Sendable, Hashable {
    /// How the wait between attempts grows.
    public enum Backoff: Sendable, Hashable {
        /// The same wait after every failed attempt.
        case fixed(Duration)
        /// `base`, doubled after every further failed attempt, at most `cap`.
        case exponential(base: Duration, cap: Duration)
    }

    /// Attempts in all, the first one included (at least 1).
    public var attempts: Int
    /// The wait after a failed attempt, before the next.
    public var backoff: Backoff
    /// The share of each wait (0…1) that may be taken off at random (default 0.2).
    public var jitter: Double

    /// A policy of `attempts` attempts in all, waiting `backoff` between them.
    public init(attempts: Int, backoff: Backoff, jitter: Double = 0.2) {
        self.attempts = attempts
        self.backoff = backoff
        self.jitter = jitter
    }

    /// `attempts` attempts, `delay` apart.
    public static func fixed(attempts: Int, delay: Duration, jitter: Double = 0.2) -> RetryPolicy {
        RetryPolicy(attempts: attempts, backoff: .fixed(delay), jitter: jitter)
    }

    /// `attempts` attempts; waits of 1 s, 2 s, 4 s… at most 1 hour by default.
    public static func exponential(attempts: Int, base: Duration = .seconds(1), cap: Duration = .seconds(3600),
                                   jitter: Double = 0.2) -> RetryPolicy {
        RetryPolicy(attempts: attempts, backoff: .exponential(base: base, cap: cap), jitter: jitter)
    }

    func validate() throws {
        guard attempts >= 1 else { throw RedisError.invalidArgument("a retry policy needs at least 1 attempt, not \(attempts)") }
        guard jitter >= 0, jitter <= 1 else { throw RedisError.invalidArgument("the jitter must be between 0 and 1") }
        switch backoff {
        case .fixed(let delay):
            guard delay >= .zero else { throw RedisError.invalidArgument("the retry delay must not be negative") }
        case .exponential(let base, let cap):
            guard base > .zero else { throw RedisError.invalidArgument("the exponential backoff's base must be positive") }
            guard cap >= base else { throw RedisError.invalidArgument("the backoff's cap must not be below its base") }
        }
    }

    /// `attempts,kind,base ms,cap ms,jitter` as the give-back script reads it.
    var encoded: String {
        switch backoff {
        case .fixed(let delay):
            return "\(attempts),f,\(delay.redisMilliseconds),\(delay.redisMilliseconds),\(jitter)"
        case .exponential(let base, let cap):
            return "\(attempts),e,\(base.redisMilliseconds),\(cap.redisMilliseconds),\(jitter)"
        }
    }
}

/// How long finished tasks' records are kept (``WorkQueue/task(_:_:)`` answers for them,
/// and a caller's id stays taken meanwhile). A record goes once it is older than `maxAge`
/// or more than `maxCount` newer ones of its kind exist; the finish or failure that adds a
/// record removes at most 100 old ones (bounded steps, no `KEYS`, no background job).
/// Records over `maxCount` are removed in batches, once they are a tenth of `maxCount` (at
/// most 100) too many: between batches a queue may keep that many more.
/// A `maxCount` of 0 keeps none: ``WorkQueue/task(_:_:)`` then returns `nil` for a
/// finished task, and a waiter gets ``WorkQueueError/Code/taskNotFound``.
public struct TaskRetention: Sendable, Hashable {
    /// Records older than this (since the task finished, server clock) are removed.
    public var maxAge: Duration
    /// At most this many of the newest records are kept per queue.
    public var maxCount: Int

    /// A retention of `maxCount` records, none older than `maxAge`.
    public init(maxAge: Duration, maxCount: Int) {
        self.maxAge = maxAge
        self.maxCount = maxCount
    }

    /// Completed tasks: 1 hour, the newest 1,000.
    public static let completedDefault = TaskRetention(maxAge: .seconds(3600), maxCount: 1000)
    /// Failed tasks: 7 days, the newest 10,000.
    public static let failedDefault = TaskRetention(maxAge: .seconds(7 * 86400), maxCount: 10_000)

    func validate(_ what: String) throws {
        guard maxAge >= .zero else { throw RedisError.invalidArgument("the \(what) retention's maxAge must not be negative") }
        guard maxCount >= 0 else { throw RedisError.invalidArgument("the \(what) retention's maxCount must not be negative") }
    }
}

/// A fleet-wide limit on how fast a queue's tasks start (``WorkQueue/setLimits(_:_:)``).
public struct RateLimit: Sendable, Hashable {
    /// Starts allowed within any window of length ``interval``.
    public var count: Int
    /// The window's length (at least 1 ms).
    public var interval: Duration

    /// At most `count` starts per `interval`.
    public init(_ count: Int, per interval: Duration) {
        self.count = count
        self.interval = interval
    }
}

/// Fleet-wide limits of one queue, kept in Redis and enforced by the dequeue script.
public struct QueueLimits: Sendable, Hashable {
    /// At most `count` starts within any window of `interval`, across all workers.
    public var rate: RateLimit?
    /// At most this many tasks in flight at once across all workers. A dead worker's
    /// tasks count until a peer recovers them.
    public var concurrency: Int?

    /// Limits; `nil` removes that limit.
    public init(rate: RateLimit? = nil, concurrency: Int? = nil) {
        self.rate = rate
        self.concurrency = concurrency
    }

    func validate() throws {
        if let rate {
            guard rate.count >= 1 else { throw RedisError.invalidArgument("a rate limit needs a count of at least 1") }
            guard rate.interval >= .milliseconds(1) else { throw RedisError.invalidArgument("a rate limit's interval must be at least 1 ms") }
        }
        if let concurrency, concurrency < 1 {
            throw RedisError.invalidArgument("the concurrency limit must be at least 1")
        }
    }
}

/// A handler's report of how far it got (``WorkQueue/reportProgress(_:_:)``).
public enum TaskProgress: Sendable, Hashable {
    /// A number (a fraction, a percentage, a count: the handler's choice).
    case number(Double)
    /// Bytes (JSON, text: the handler's choice), up to 512 MiB.
    case bytes([UInt8])

    var encoded: [UInt8] {
        switch self {
        case .number(let value): return Array("n:\(value)".utf8)
        case .bytes(let bytes): return Array("b:".utf8) + bytes
        }
    }

    init?(encoded: [UInt8]) {
        guard encoded.count >= 2, encoded[1] == UInt8(ascii: ":") else { return nil }
        switch encoded[0] {
        case UInt8(ascii: "n"):
            guard let value = Double(String(decoding: encoded.dropFirst(2), as: UTF8.self)) else { return nil }
            self = .number(value)
        case UInt8(ascii: "b"): self = .bytes(Array(encoded.dropFirst(2)))
        default: return nil
        }
    }
}

/// Thrown by a handler of ``Worker/run(_:concurrency:handler:)`` to fail its task for good:
/// no retry, no dead letter; the task's record becomes ``TaskState/failed`` with `reason`.
public struct PermanentFailure: Error, Sendable, Hashable, CustomStringConvertible {
    /// Kept as the task's ``TaskInfo/lastError``.
    public var reason: String
    /// A permanent failure for `reason`.
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}

/// Where a task is in its life.
public enum TaskState: String, Sendable, Hashable {
    /// Scheduled for later, or waiting out a retry's backoff.
    case delayed
    /// Waiting to be dequeued.
    case waiting
    /// Held by a worker.
    case active
    /// Finished (kept per ``WorkQueueOptions/completedRetention``).
    case completed
    /// Failed for good (``PermanentFailure``; kept per ``WorkQueueOptions/failedRetention``).
    case failed
    /// In the dead letters (after its last attempt, or ``WorkQueueOptions/maxDeliveries``).
    case dead

    /// Whether the task's life is over (it runs no more unless a dead letter is retried).
    public var isFinal: Bool { self == .completed || self == .failed || self == .dead }
}

/// What ``WorkQueue/task(_:_:)`` tells about a task. Times are the server's clock.
public struct TaskInfo: Sendable, Hashable {
    /// The task's id (``EnqueueResult/ids``).
    public let id: String
    /// The queue it belongs to.
    public let queue: String
    /// Where it is in its life.
    public let state: TaskState
    /// Its priority (``TaskOptions/priority``).
    public let priority: Int
    /// Attempts so far, a running one included (``Worker/stop(_:reason:)`` and shutdowns
    /// take theirs back).
    public let attempts: Int
    /// How many times the task was handed to a worker.
    public let deliveries: Int
    /// The task's bytes; `nil` once it completed or failed.
    public let task: [UInt8]?
    /// When it was enqueued.
    public let createdAt: Date?
    /// When its latest attempt started.
    public let startedAt: Date?
    /// When it completed, failed or was dead-lettered.
    public let finishedAt: Date?
    /// When the task fell or falls due, if it was ever delayed (by ``TaskOptions`` or a
    /// retry's backoff): its latest due time.
    public let dueAt: Date?
    /// The error of its latest failed attempt (or the reason it was last given back).
    public let lastError: String?
    /// What ``Worker/finish(_:result:)-(_,[UInt8]?)`` stored.
    public let result: [UInt8]?
    /// What its handler last reported (``WorkQueue/reportProgress(_:_:)``).
    public let progress: TaskProgress?
    /// How many progress reports the task has had: a later report has a higher number
    /// (``WorkQueue/progressUpdates(_:_:)`` uses it to yield reports in order).
    public let progressReports: Int
    /// Whether it has a retry policy (stored at enqueue, from ``TaskOptions/retry`` or the
    /// enqueuing instance's ``WorkQueueOptions/retry``).
    public let hasRetryPolicy: Bool

    /// The result as UTF-8 text.
    public var resultString: String? { result.map { String(decoding: $0, as: UTF8.self) } }
}

/// A queue's settings and counts (``WorkQueue/queueState(_:)``).
public struct QueueState: Sendable, Hashable {
    /// Since when the queue is paused (server clock); `nil` when it is not.
    public let pausedSince: Date?
    /// Whether the queue is paused (``WorkQueue/pause(_:)``).
    public var isPaused: Bool { pausedSince != nil }
    /// Its fleet-wide limits (``WorkQueue/setLimits(_:_:)``).
    public let limits: QueueLimits
    /// Tasks waiting to be dequeued.
    public let waiting: Int
    /// Tasks scheduled for later or waiting out a backoff.
    public let delayed: Int
    /// Tasks held by live workers (and by dead ones not yet recovered).
    public let active: Int
    /// Dead letters.
    public let dead: Int
    /// Records of completed tasks kept by retention.
    public let completed: Int
    /// Records of failed tasks kept by retention.
    public let failed: Int
}

extension Date {
    /// A time in ms since 1970 (as the scripts keep them).
    init(redisMilliseconds milliseconds: Int64) {
        self.init(timeIntervalSince1970: Double(milliseconds) / 1000)
    }

    /// Rounded to the nearest ms: a time made from ms (``init(redisMilliseconds:)``) comes
    /// back unchanged despite the binary fraction.
    var redisMilliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
