import Foundation
import Hiredis
import Logging
import ServiceLifecycle

/// When a repeatable task runs (``WorkQueue/addRepeatable(_:name:_:schedule:options:)-(_,_,[UInt8],_,_)``).
public enum RepeatSchedule: Sendable, Hashable {
    /// Every interval (at least 1 ms), from the time it was added, by the server's clock.
    case every(Duration)
    /// At the times a ``CronExpression`` matches (UTC).
    case cron(CronExpression)

    /// The first tick strictly after `now` (ms), continuing from tick `previous` when given.
    func tick(after now: Int64, previous: Int64? = nil) -> Int64? {
        switch self {
        case .every(let interval):
            let step = interval.redisMilliseconds
            guard let previous else { return now + step }
            return previous + ((now - previous) / step + 1) * step
        case .cron(let expression):
            return expression.next(after: Date(redisMilliseconds: now)).map(\.redisMilliseconds)
        }
    }

    func validate() throws {
        switch self {
        case .every(let interval):
            guard interval >= .milliseconds(1) else { throw RedisError.invalidArgument("a repeat interval must be at least 1 ms") }
        case .cron(let expression):
            // Checked against the local clock before anything is sent (the first tick is
            // then computed from the server's).
            guard expression.next(after: Date()) != nil else {
                throw RedisError.invalidArgument("the cron expression \"\(expression)\" matches no time within 5 years")
            }
        }
    }
}

/// A repeatable task as stored (``WorkQueue/repeatables(_:)``).
public struct RepeatableTask: Sendable, Hashable {
    /// The queue its ticks are enqueued to.
    public let queue: String
    /// Its name, unique in the queue.
    public let name: String
    /// When it runs.
    public let schedule: RepeatSchedule
    /// What each tick enqueues.
    public let task: [UInt8]
    /// The priority of each tick's task.
    public let priority: Int
    /// The next tick not yet enqueued (server clock).
    public let nextRun: Date
}

/// A repeatable's definition as kept in Redis: length-prefixed fields (kind, spec,
/// priority, retry policy, task), so that the tick script can compare it byte for byte.
struct RepeatDefinition: Hashable {
    var schedule: RepeatSchedule
    var priority: Int
    var retry: String
    var task: [UInt8]

    var encoded: [UInt8] {
        let (kind, spec): (String, String)
        switch schedule {
        case .every(let interval): (kind, spec) = ("every", String(interval.redisMilliseconds))
        case .cron(let expression): (kind, spec) = ("cron", expression.source)
        }
        var out: [UInt8] = []
        for field in [Array(kind.utf8), Array(spec.utf8), Array(String(priority).utf8), Array(retry.utf8), task] {
            out += Array("\(field.count):".utf8) + field
        }
        return out
    }

    init(schedule: RepeatSchedule, priority: Int, retry: String, task: [UInt8]) {
        self.schedule = schedule
        self.priority = priority
        self.retry = retry
        self.task = task
    }

    init?(decoding bytes: [UInt8]) {
        var fields: [[UInt8]] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            guard let colon = bytes[index...].firstIndex(of: UInt8(ascii: ":")),
                  let length = Int(String(decoding: bytes[index..<colon], as: UTF8.self)), length >= 0,
                  bytes.endIndex - (colon + 1) >= length else { return nil }
            fields.append(Array(bytes[(colon + 1)..<(colon + 1 + length)]))
            index = colon + 1 + length
        }
        guard fields.count == 5, let priority = Int(String(decoding: fields[2], as: UTF8.self)) else { return nil }
        let spec = String(decoding: fields[1], as: UTF8.self)
        switch String(decoding: fields[0], as: UTF8.self) {
        case "every":
            guard let milliseconds = Int64(spec) else { return nil }
            schedule = .every(.milliseconds(milliseconds))
        case "cron":
            guard let expression = try? CronExpression(spec) else { return nil }
            schedule = .cron(expression)
        default: return nil
        }
        self.priority = priority
        self.retry = String(decoding: fields[3], as: UTF8.self)
        self.task = fields[4]
    }
}

extension WorkQueue {
    // MARK: Repeatable tasks

    /// Adds (or replaces) the repeatable task `name` of `queue`: `task` is enqueued at every
    /// tick of `schedule`, exactly once per tick across any number of schedulers
    /// (``runRepeatables(_:)``, ``enqueueDueRepeatables(_:)``) with no leader: a tick is
    /// enqueued by the one script that finds the repeatable's next tick still equal to it
    /// and advances it. Each tick's task has the id `repeat:<name>:<tick ms>`.
    ///
    /// Ticks missed while no scheduler ran are **coalesced**: the next pass enqueues one task
    /// (for the oldest missed tick) and moves on to the first tick after now.
    ///
    /// Adding the same definition again (schedule, task, priority and retry policy), as every
    /// instance of a service does when it starts, changes nothing: the schedule keeps its next
    /// tick. A different definition replaces the old one, and its schedule starts from now.
    ///
    /// `options` may give a ``TaskOptions/priority`` and a ``TaskOptions/retry`` policy.
    ///
    /// - Throws: `invalidArgument` for an empty name, an interval under 1 ms, a cron
    ///   expression that never matches within 5 years, or options with an id, a delay or a time.
    public func addRepeatable(_ queue: String, name: String, _ task: [UInt8], schedule: RepeatSchedule,
                              options: TaskOptions = TaskOptions()) async throws {
        let keys = try keys(queue)
        try validateRepeatName(name)
        try validateTask(task)
        try schedule.validate()
        guard options.id == nil, options.delay == nil, options.at == nil else {
            throw RedisError.invalidArgument("a repeatable task takes a priority and a retry policy, not an id, delay or time")
        }
        try options.validate(taskCount: 1)
        let definition = RepeatDefinition(schedule: schedule, priority: options.priority,
                                          retry: (options.retry ?? self.options.retry)?.encoded ?? "", task: task)
        let now = try await serverTime()
        guard let first = schedule.tick(after: now) else {
            throw RedisError.invalidArgument("the cron expression \"\(schedule)\" matches no time within 5 years")
        }
        try await client.run(QueueScripts.setRepeatable, keys: repeatKeys(keys),
                             arguments: [keys.channel, name, definition.encoded, String(first)])
        logger.info("repeatable task added", metadata: ["queue": "\(queue)", "name": "\(name)"])
    }

    /// The `String` form of ``addRepeatable(_:name:_:schedule:options:)-(_,_,[UInt8],_,_)``.
    public func addRepeatable(_ queue: String, name: String, _ task: String, schedule: RepeatSchedule,
                              options: TaskOptions = TaskOptions()) async throws {
        try await addRepeatable(queue, name: name, Array(task.utf8), schedule: schedule, options: options)
    }

    /// Removes the repeatable task `name`; `false` when there was none. Tasks it already
    /// enqueued stay.
    @discardableResult
    public func removeRepeatable(_ queue: String, name: String) async throws -> Bool {
        let keys = try keys(queue)
        try validateRepeatName(name)
        return try await client.run(QueueScripts.removeRepeatable, keys: repeatKeys(keys), arguments: [keys.channel, name])
            .decode(Int.self) == 1
    }

    /// The repeatable tasks of `queue`, by name.
    public func repeatables(_ queue: String) async throws -> [RepeatableTask] {
        let (_, entries) = try await repeatState(queue)
        return entries.map { entry in
            RepeatableTask(queue: queue, name: entry.name, schedule: entry.definition.schedule, task: entry.definition.task,
                           priority: entry.definition.priority, nextRun: Date(redisMilliseconds: entry.next))
        }.sorted { $0.name < $1.name }
    }

    /// One scheduler pass over `queue`: enqueues the task of every repeatable whose next tick
    /// has come (by the server's clock), once per tick across all schedulers, coalescing
    /// missed ticks into one. Returns how many tasks this call enqueued.
    @discardableResult
    public func enqueueDueRepeatables(_ queue: String) async throws -> Int {
        try await repeatPass(queue).enqueued
    }

    /// Runs a scheduler for the repeatable tasks of `queue` until the calling task is
    /// cancelled: it sleeps until the earliest next tick (or ``WorkQueueOptions/pollInterval``,
    /// whichever is sooner), and re-reads at once when a repeatable is added or removed, or
    /// after a subscriber gap. Run one in every process that should keep the schedule alive:
    /// no leader is elected, and each tick is enqueued once.
    ///
    /// - Throws: what `RedisSubscriber.subscribe(_:)` throws; `invalidArgument`
    ///   for an empty queue name. Redis errors during a pass are logged and retried.
    public func runRepeatables(_ queue: String) async throws {
        let keys = try keys(queue)
        let subscription = try await subscriber.subscribe([keys.channel])
        let (nudges, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let marker = Array(QueueMessage.repeatChanged.utf8)
        let poll = options.pollInterval
        let timer = WakeTimer(wake: { nudge.yield() })
        defer { timer.schedule(after: nil) }
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    for try await event in subscription {
                        switch event {
                        case .gap: nudge.yield()
                        case .message(let message): if message.payload.starts(with: marker) { nudge.yield() }
                        }
                    }
                } catch {}
            }
            group.addTask {
                nudge.yield()
                for await _ in nudges {
                    if Task.isCancelled { return }
                    var wait = poll
                    do {
                        if let next = try await self.repeatPass(queue).wait { wait = min(wait, next) }
                    } catch {
                        if Task.isCancelled { return }
                        self.logger.warning("repeatable tasks pass failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
                        wait = min(wait, .seconds(1))
                    }
                    timer.schedule(after: wait)
                }
            }
            await group.next()
            group.cancelAll()
        }
    }

    func repeatKeys(_ keys: QueueKeys) -> [any RedisArgument] {
        keys.all() + [keys.repeats, keys.repeatNext]
    }

    func serverTime() async throws -> Int64 {
        let parts = try await client.send("TIME").decode([String].self)
        guard parts.count == 2, let seconds = Int64(parts[0]), let micros = Int64(parts[1]) else {
            throw RedisError(.wrongReplyType, "unexpected TIME reply")
        }
        return seconds * 1000 + micros / 1000
    }

    private struct RepeatEntry {
        let name: String
        let raw: [UInt8]
        let definition: RepeatDefinition
        let next: Int64
    }

    private func repeatState(_ queue: String) async throws -> (now: Int64, entries: [RepeatEntry]) {
        let keys = try keys(queue)
        let reply = try await client.run(QueueScripts.repeatState, keys: repeatKeys(keys))
        guard case .array(let flat) = reply, flat.count % 3 == 1, let now = Int64(try flat[0].decode(String.self)) else {
            throw RedisError(.wrongReplyType, "unexpected repeatables reply")
        }
        var entries: [RepeatEntry] = []
        for index in stride(from: 1, to: flat.count, by: 3) {
            let name = try flat[index].decode(String.self)
            let raw = try flat[index + 1].bytes()
            guard let definition = RepeatDefinition(decoding: raw), let next = Int64(try flat[index + 2].decode(String.self)) else {
                logger.warning("unreadable repeatable task", metadata: ["queue": "\(queue)", "name": "\(name)"])
                continue
            }
            entries.append(RepeatEntry(name: name, raw: raw, definition: definition, next: next))
        }
        return (now, entries)
    }

    /// Enqueues what is due; returns the count and the wait until the earliest next tick.
    private func repeatPass(_ queue: String) async throws -> (enqueued: Int, wait: Duration?) {
        let keys = try keys(queue)
        let (now, entries) = try await repeatState(queue)
        var enqueued = 0
        var soonest: Int64?
        for entry in entries {
            var next = entry.next
            if next <= now {
                guard let following = entry.definition.schedule.tick(after: now, previous: next) else { continue }
                let reply = try await client.run(QueueScripts.tick, keys: repeatKeys(keys), arguments: [
                    keys.channel, entry.name, String(next), String(following), entry.raw, "repeat:\(entry.name):\(next)",
                    entry.definition.task, entry.definition.priority, entry.definition.retry,
                ]).decode(Int.self)
                if reply == 1 {
                    enqueued += 1
                    metrics.enqueued(queue, 1)
                    logger.debug("repeatable task enqueued", metadata: ["queue": "\(queue)", "name": "\(entry.name)", "tick": "\(next)"])
                }
                next = following
            }
            soonest = min(soonest ?? next - now, next - now)
        }
        return (enqueued, soonest.map { .milliseconds(max($0, 0)) })
    }
}

/// A swift-service-lifecycle `Service` that keeps the repeatable tasks of `queues`
/// scheduled (``WorkQueue/runRepeatables(_:)`` for each) until graceful shutdown or
/// cancellation. Run one in every process that should keep the schedules alive: each tick
/// is enqueued once whatever their number.
///
/// ```swift
/// let scheduler = try RepeatableScheduler(workQueue: queue, queues: ["mail", "reports"])
/// let group = ServiceGroup(services: [worker, scheduler], logger: logger)
/// ```
public struct RepeatableScheduler: Service {
    /// The queue client the schedulers use.
    public let workQueue: WorkQueue
    /// The queues whose repeatable tasks are kept scheduled.
    public let queues: [String]

    /// A scheduler for the repeatable tasks of `queues`, run through `workQueue`.
    ///
    /// - Throws: `invalidArgument` for no queue or an empty queue name.
    public init(workQueue: WorkQueue, queues: [String]) throws {
        guard !queues.isEmpty else { throw RedisError.invalidArgument("a scheduler needs at least one queue") }
        for queue in queues { try validateQueueName(queue) }
        self.workQueue = workQueue
        self.queues = queues
    }

    /// Runs the schedulers until graceful shutdown or cancellation; returns then.
    public func run() async throws {
        let workQueue = self.workQueue, queues = self.queues
        try await cancelWhenGracefulShutdown {
            try await withThrowingDiscardingTaskGroup { group in
                for queue in queues { group.addTask { try await workQueue.runRepeatables(queue) } }
            }
        }
    }
}

func validateRepeatName(_ name: String) throws {
    guard !name.isEmpty else { throw RedisError.invalidArgument("the repeatable task's name must not be empty") }
    guard name.utf8.count <= 1024 else { throw RedisError.invalidArgument("the repeatable task's name is longer than 1024 bytes") }
}
