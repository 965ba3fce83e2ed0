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
        for tail in ["}:queue", "}:tasks", "}:dead"] {
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
        let keys = try keys(queue)
        let replies = try await client.pipeline([
            RedisCommand("LLEN", keys.pending), RedisCommand("LLEN", keys.dead), RedisCommand("HKEYS", keys.owners),
        ])
        let waiting = try replies[0].get().decode(Int.self)
        let dead = try replies[1].get().decode(Int.self)
        let owners = try replies[2].get().decode([String].self)
        var inFlight = 0
        if !owners.isEmpty {
            for reply in try await client.pipeline(owners.map { RedisCommand("HLEN", keys.working($0)) }) {
                inFlight += try reply.get().decode(Int.self)
            }
        }
        return QueueSummary(name: queue, waiting: waiting, inFlight: inFlight, deadLetters: dead)
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
        return try await client.run(QueueScripts.tasks, keys: [keys.pending, keys.tasks], arguments: [offset, offset + limit - 1])
            .decode([RedisBytes].self).map(\.bytes)
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

    /// A summary with these counts.
    public init(name: String, waiting: Int, inFlight: Int, deadLetters: Int) {
        self.name = name
        self.waiting = waiting
        self.inFlight = inFlight
        self.deadLetters = deadLetters
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
