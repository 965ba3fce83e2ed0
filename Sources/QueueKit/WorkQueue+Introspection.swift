import Hiredis

/// Introspection for operators (`hiredis-admin`, the dashboard): counts per queue, pages
/// of tasks, and the workers with the age of their heartbeat. Read-only; keys are found
/// with `SCAN`, never `KEYS`. Each figure is read on its own, so a summary is a snapshot
/// that may be a moment old.
extension WorkQueue {
    /// Every queue that holds a task — waiting, in flight or dead-lettered — with its counts,
    /// by name. (``getQueues()`` lists only queues with waiting tasks.)
    public func queueSummaries() async throws -> [QueueSummary] {
        let head = "{\(options.prefix):"
        var names: Set<String> = []
        for tail in ["}:queue", "}:tasks", "}:dead", "}:prio", "}:delayed"] {
            for key in try await client.scanKeys(matching: globEscaped(head) + "*" + globEscaped(tail))
            where key.hasPrefix(head) && key.hasSuffix(tail) {
                if let name = QueueName.decode(String(key.dropFirst(head.count).dropLast(tail.count))) { names.insert(name) }
            }
        }
        var summaries: [QueueSummary] = []
        for name in names.sorted() { summaries.append(try await queueSummary(name)) }
        return summaries
    }

    /// The counts of one queue (zeros for a queue that holds nothing).
    ///
    /// - Throws: `invalidArgument` for an empty queue name, before anything is sent.
    public func queueSummary(_ queue: String) async throws -> QueueSummary {
        let state = try await queueState(queue)   // one script: a consistent snapshot
        return QueueSummary(name: queue, waiting: state.waiting, inFlight: state.active, deadLetters: state.dead,
                            delayed: state.delayed, paused: state.isPaused, limits: state.limits)
    }

    /// A page of the waiting tasks of `queue`, in dequeue order: `limit` tasks from
    /// position `offset` (0 is the next to be dequeued).
    ///
    /// - Throws: `invalidArgument` for an empty queue name, a negative offset or a limit
    ///   under 1, before anything is sent.
    public func getTasks(_ queue: String, offset: Int, limit: Int) async throws -> [[UInt8]] {
        guard offset >= 0 else { throw RedisError.invalidArgument("offset \(offset) is negative") }
        guard limit >= 1 else { throw RedisError.invalidArgument("limit \(limit) must be at least 1") }
        let keys = try keys(queue)
        let (end, overflow) = offset.addingReportingOverflow(limit)
        let upTo = try await client.run(QueueScripts.waiting, keys: keys.all(), arguments: [overflow ? -1 : end])
            .decode([RedisBytes].self).map(\.bytes)
        return Array(upTo.dropFirst(offset))
    }

    /// Every registered worker with its queues, the tasks it holds, and its heartbeat.
    public func workerSummaries() async throws -> [WorkerSummary] {
        var summaries: [WorkerSummary] = []
        for worker in try await getWorkers() {
            let replies = try await client.pipeline([
                RedisCommand("PTTL", registry.heartbeat(worker)), RedisCommand("SMEMBERS", registry.queues(worker)),
            ])
            let ttl = try replies[0].get().decode(Int64.self)
            let queues = try replies[1].get().decode([String].self).sorted()
            var inFlight = 0
            for queue in queues {
                guard let keys = try? keys(queue) else { continue }
                inFlight += try await client.send("HLEN", keys.working(worker)).decode(Int.self)
            }
            let age: Int64? = switch (ttl, options.workerTimeout) {
            case (0..., let timeout?): max(timeout.redisMilliseconds - ttl, 0)
            default: nil
            }
            summaries.append(WorkerSummary(
                id: worker, queues: queues, inFlight: inFlight, alive: ttl != -2,
                heartbeatAgeMilliseconds: age, heartbeatTTLMilliseconds: ttl >= 0 ? ttl : nil))
        }
        return summaries
    }
}

/// The counts of one queue (``WorkQueue/queueSummaries()``).
public struct QueueSummary: Sendable, Hashable, Codable {
    /// The queue's name.
    public let name: String
    /// Tasks waiting to be dequeued.
    public let waiting: Int
    /// Tasks held by workers.
    public let inFlight: Int
    /// Tasks that reached ``WorkQueueOptions/maxDeliveries``.
    public let deadLetters: Int
    /// Tasks waiting for their due time (delayed, or a retry's backoff).
    public let delayed: Int
    /// Whether the queue is paused (``WorkQueue/pause(_:)``).
    public let paused: Bool
    /// The queue's rate limit: at most this many starts per ``ratePerMilliseconds``, if set
    /// (``WorkQueue/setLimits(_:_:)``).
    public let rateCount: Int?
    /// The rate limit's window, in milliseconds, if set.
    public let ratePerMilliseconds: Int64?
    /// The fleet-wide cap on tasks in flight, if set.
    public let concurrency: Int?
    /// The queue's limits, as ``WorkQueue/setLimits(_:_:)`` takes them.
    public var limits: QueueLimits {
        QueueLimits(rate: rateCount.flatMap { count in ratePerMilliseconds.map { RateLimit(count, per: .milliseconds($0)) } },
                    concurrency: concurrency)
    }

    /// A summary with these counts.
    public init(name: String, waiting: Int, inFlight: Int, deadLetters: Int, delayed: Int = 0, paused: Bool = false,
                limits: QueueLimits = QueueLimits()) {
        self.name = name
        self.waiting = waiting
        self.inFlight = inFlight
        self.deadLetters = deadLetters
        self.delayed = delayed
        self.paused = paused
        self.rateCount = limits.rate?.count
        self.ratePerMilliseconds = limits.rate.map { Int64($0.interval / .milliseconds(1)) }
        self.concurrency = limits.concurrency
    }
}

/// A registered worker (``WorkQueue/workerSummaries()``).
public struct WorkerSummary: Sendable, Hashable, Codable {
    /// The worker's id.
    public let id: String
    /// The queues it started work on.
    public let queues: [String]
    /// The tasks it holds, over all its queues.
    public let inFlight: Int
    /// `false` once its heartbeat key expired (a peer will soon hand its tasks back).
    public let alive: Bool
    /// How long ago its last heartbeat was, as the reader's
    /// ``WorkQueueOptions/workerTimeout`` minus the heartbeat's time to live (server
    /// clock); `nil` for a permanent worker or an expired heartbeat.
    public let heartbeatAgeMilliseconds: Int64?
    /// The heartbeat key's time to live; `nil` when it has none or expired.
    public let heartbeatTTLMilliseconds: Int64?

    /// A summary with these figures.
    public init(id: String, queues: [String], inFlight: Int, alive: Bool,
                heartbeatAgeMilliseconds: Int64?, heartbeatTTLMilliseconds: Int64?) {
        self.id = id
        self.queues = queues
        self.inFlight = inFlight
        self.alive = alive
        self.heartbeatAgeMilliseconds = heartbeatAgeMilliseconds
        self.heartbeatTTLMilliseconds = heartbeatTTLMilliseconds
    }
}
