import Hiredis
import Logging
import Metrics

/// How a ``WorkQueue`` and its workers behave. Every worker and producer of one queue
/// must use the same ``prefix``.
public struct WorkQueueOptions: Sendable {
    /// Namespace of every key and channel (default `"worqr"`). No `{`, `}` or `:` (queue
    /// names, unlike the prefix, may hold any character).
    public var prefix: String = "worqr"
    /// The id of the next worker started; `nil` (the default) picks a random UUID. An id
    /// is used once: a worker that was failed never comes back under the same id.
    public var workerID: String?
    /// How often a worker refreshes its heartbeat key (default 1 s).
    public var heartbeatInterval: Duration = .seconds(1)
    /// How long a heartbeat key lives (default 3 s): a worker silent that long is dead,
    /// and its peers return its in-flight tasks to the front of their queues.
    ///
    /// `nil` makes **permanent workers** (worqr's negative timeout): their heartbeat key
    /// never expires, peers never recover them, and they leave only by
    /// ``Worker/failWorker()``, ``Worker/shutdown(gracePeriod:)`` or an operator's
    /// ``WorkQueue/failWorker(_:)``. The risk: a permanent worker that dies (`kill -9`, a
    /// lost machine) keeps its in-flight tasks until an operator fails it.
    public var workerTimeout: Duration? = .seconds(3)
    /// How often a worker looks for dead peers (default 10 s).
    public var cleanupInterval: Duration = .seconds(10)
    /// Deliveries after which a task that keeps failing (stopped, or its worker died) is
    /// moved to the queue's dead-letter list instead of the queue (default 5).
    public var maxDeliveries: Int = 5
    /// ``Worker/run(_:concurrency:handler:)`` re-checks its queue this often even when no
    /// `work` message arrived (pub/sub is a wake-up, not the truth; default 5 s).
    public var pollInterval: Duration = .seconds(5)
    /// On graceful shutdown, how long in-flight handlers may run before they are
    /// cancelled and their tasks returned to the queue (default 30 s).
    public var shutdownGracePeriod: Duration = .seconds(30)
    /// How long `enqueue(…, minReplicas:)` waits for the replicas to acknowledge the tasks
    /// (`WAIT`; default 1 s) before it throws ``WorkQueueError/Code/notReplicated``.
    public var replicationTimeout: Duration = .seconds(1)
    /// When a worker learns that its peers declared it dead, register again under a new
    /// id and carry on (default `false`: the worker stops).
    public var reregisterAfterFailure: Bool = false
    /// The retry policy of tasks enqueued by this instance without one of their own
    /// (``TaskOptions/retry``). `nil` (the default) keeps worqr's behaviour: a failed task
    /// goes back to the front of its queue, and to the dead letters after
    /// ``maxDeliveries`` deliveries.
    public var retry: RetryPolicy?
    /// How long completed tasks' records are kept (default
    /// ``TaskRetention/completedDefault``: 1 hour, the newest 1,000 per queue).
    public var completedRetention: TaskRetention = .completedDefault
    /// How long failed tasks' records are kept (default ``TaskRetention/failedDefault``:
    /// 7 days, the newest 10,000 per queue). Dead letters stay until retried or purged.
    public var failedRetention: TaskRetention = .failedDefault
    /// Logs go here; the library never bootstraps logging.
    public var logger: Logger = Logger(label: "queuekit", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Extra dimensions on every metric (for example `[("service", "mailer")]`).
    public var metricsDimensions: [(String, String)] = []
    /// Where metrics go; `nil` (the default) is the app's bootstrapped `MetricsSystem`.
    public var metricsFactory: (any MetricsFactory)?

    /// Options with worqr's key prefix and this package's defaults (see each property).
    public init(
        prefix: String = "worqr",
        workerID: String? = nil,
        heartbeatInterval: Duration = .seconds(1),
        workerTimeout: Duration? = .seconds(3),
        cleanupInterval: Duration = .seconds(10),
        maxDeliveries: Int = 5
    ) {
        self.prefix = prefix
        self.workerID = workerID
        self.heartbeatInterval = heartbeatInterval
        self.workerTimeout = workerTimeout
        self.cleanupInterval = cleanupInterval
        self.maxDeliveries = maxDeliveries
    }

    func validate() throws {
        try validateName(prefix, what: "key prefix")
        if let workerID { try validateName(workerID, what: "worker id") }
        for (name, value) in [("heartbeatInterval", heartbeatInterval), ("workerTimeout", workerTimeout ?? .seconds(1)),
                              ("cleanupInterval", cleanupInterval), ("pollInterval", pollInterval),
                              ("replicationTimeout", replicationTimeout)] where value <= .zero {
            throw RedisError.invalidArgument("\(name) must be positive")
        }
        guard shutdownGracePeriod >= .zero else { throw RedisError.invalidArgument("shutdownGracePeriod must not be negative") }
        if let workerTimeout, workerTimeout <= heartbeatInterval {
            throw RedisError.invalidArgument("workerTimeout must be longer than heartbeatInterval")
        }
        guard maxDeliveries >= 1 else { throw RedisError.invalidArgument("maxDeliveries must be at least 1") }
        try retry?.validate()
        try completedRetention.validate("completed")
        try failedRetention.validate("failed")
    }
}

/// Why a ``WorkQueue`` or ``Worker`` call was refused. Bad input is reported as
/// `RedisError` `invalidArgument` before anything is sent.
public struct WorkQueueError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong; new codes may be added, so a `switch` needs a `default`.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case workerNotStarted, notWorking, workerFailed, duplicateTask, processNotOwned, notReplicated, unknownWorker
            case taskNotFound, timedOut
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The worker was never started, or has been stopped or failed.
        public static let workerNotStarted = Code(.workerNotStarted)
        /// `dequeue` on a queue this worker did not `startWork` on.
        public static let notWorking = Code(.notWorking)
        /// The worker's heartbeat expired and its peers declared it dead; its in-flight
        /// tasks went back to their queues.
        public static let workerFailed = Code(.workerFailed)
        /// A unique enqueue with ``DuplicatePolicy/fail`` found the same task already in
        /// the queue (or in flight), or twice in its batch.
        public static let duplicateTask = Code(.duplicateTask)
        /// `finish`/`stop` of a process that is not in flight under its worker any more
        /// (finished already, recovered by a peer, stopped, or its queue deleted). Checked
        /// inside Redis, so nothing is finished twice.
        public static let processNotOwned = Code(.processNotOwned)
        /// ``WorkQueue/failWorker(_:)`` of a worker id that is not registered.
        public static let unknownWorker = Code(.unknownWorker)
        /// An enqueue with `minReplicas` was not acknowledged by that many replicas in time
        /// (the tasks are on the master; a failover before they replicate can lose them).
        public static let notReplicated = Code(.notReplicated)
        /// The task has no record: never enqueued, cancelled, its queue deleted, or its
        /// record removed by retention.
        public static let taskNotFound = Code(.taskNotFound)
        /// ``WorkQueue/waitUntilFinished(_:_:timeout:)`` gave up waiting.
        public static let timedOut = Code(.timedOut)
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

    public var description: String { "WorkQueueError.\(code): \(message)" }
}

/// Queue names are encoded into keys (any non-empty name up to 1024 bytes is valid).
func validateQueueName(_ name: String) throws {
    guard !name.isEmpty else { throw RedisError.invalidArgument("the queue name must not be empty") }
    guard name.utf8.count <= 1024 else { throw RedisError.invalidArgument("the queue name is longer than 1024 bytes") }
}

/// Prefixes and worker ids become parts of key names as they are: they must be non-empty
/// and free of the separator `:` and of the hash-tag braces.
func validateName(_ name: String, what: String) throws {
    guard !name.isEmpty else { throw RedisError.invalidArgument("the \(what) must not be empty") }
    if let bad = name.first(where: { $0 == ":" || $0 == "{" || $0 == "}" }) {
        throw RedisError.invalidArgument("the \(what) \"\(name)\" contains \"\(bad)\" (reserved in key names)")
    }
    guard name.utf8.count <= 1024 else { throw RedisError.invalidArgument("the \(what) is longer than 1024 bytes") }
}

/// The largest task Redis can store (a bulk string of 512 MiB).
let maxTaskSize = 512 * 1024 * 1024

func validateTask(_ task: [UInt8]) throws {
    guard task.count <= maxTaskSize else {
        throw RedisError.invalidArgument("a task of \(task.count) bytes is larger than Redis's 512 MiB limit")
    }
}

