import Foundation
import Hiredis
import Logging

/// worqr in Swift: a reliable FIFO work queue over Redis. Each task goes to exactly one
/// worker; a worker that dies has its in-flight tasks handed back, to the front of their
/// queues, by its peers.
///
/// It needs two connections: `client` for commands (it can be shared with the rest of the
/// app) and `subscriber` for the `work`, `cancel` and `delete` events.
///
/// ```swift
/// let queue = try WorkQueue(client: connection, subscriber: subscriber)
/// try await queue.enqueue("emails", ["to:ada", "to:grace"])
///
/// let worker = try await queue.startWorker()
/// try await worker.run("emails", concurrency: 4) { process in
///     try await send(process.string)          // returns: finished; throws: back to the queue
/// }
/// ```
///
/// Tasks are bytes (`[UInt8]`), with `String` conveniences. Every change is one Lua
/// script; the keys of one queue share the hash tag `{prefix:queue}`.
public struct WorkQueue: Sendable {
    /// Where the queue's scripts run (a connection, a Sentinel-backed connection, or a cluster).
    public let client: any RedisClient
    /// The subscriber that hears work, cancel and delete events.
    public let subscriber: RedisSubscriber
    /// The prefix, timeouts, retries and retention this queue was made with.
    public let options: WorkQueueOptions
    let registry: RegistryKeys
    let metrics: QueueMetrics
    var logger: Logger { options.logger }

    /// A queue client that runs its scripts on `client` and hears events on `subscriber`.
    ///
    /// - Throws: `RedisError` `invalidArgument` for invalid options.
    public init(client: any RedisClient, subscriber: RedisSubscriber, options: WorkQueueOptions = WorkQueueOptions()) throws {
        try options.validate()
        self.client = client
        self.subscriber = subscriber
        self.options = options
        self.registry = RegistryKeys(prefix: options.prefix)
        self.metrics = QueueMetrics(dimensions: options.metricsDimensions, factory: options.metricsFactory)
    }

    func keys(_ queue: String) throws -> QueueKeys {
        try validateQueueName(queue)
        return QueueKeys(prefix: options.prefix, queue: queue)
    }

    // MARK: Producers

    /// Appends `task` to the back of `queue` and publishes `work`.
    ///
    /// With `unique: true` the task is skipped (or, with `duplicates: .fail`, refused)
    /// while the same bytes are queued or in flight from an earlier unique enqueue (until
    /// it is finished, cancelled, or the queue deleted).
    ///
    /// - Returns: what was enqueued, and the queue's length after the enqueue.
    /// - Throws: ``WorkQueueError/Code/duplicateTask`` (with `duplicates: .fail`);
    ///   `invalidArgument` for an empty queue name or a task over 512 MiB (nothing written).
    ///
    /// `options` gives the task an id of the caller's, a delay or a due time, a priority or
    /// a retry policy (``TaskOptions``); ``EnqueueResult/id`` is the task's id.
    @discardableResult
    public func enqueue(_ queue: String, _ task: [UInt8], unique: Bool = false, duplicates: DuplicatePolicy = .skip,
                        minReplicas: Int = 0, options: TaskOptions = TaskOptions()) async throws -> EnqueueResult {
        try await enqueue(queue, [task], unique: unique, duplicates: duplicates, minReplicas: minReplicas, options: options)
    }

    /// The `String` form of ``enqueue(_:_:unique:duplicates:minReplicas:options:)-(_,[UInt8],_,_,_,_)``.
    @discardableResult
    public func enqueue(_ queue: String, _ task: String, unique: Bool = false, duplicates: DuplicatePolicy = .skip,
                        minReplicas: Int = 0, options: TaskOptions = TaskOptions()) async throws -> EnqueueResult {
        try await enqueue(queue, [Array(task.utf8)], unique: unique, duplicates: duplicates, minReplicas: minReplicas, options: options)
    }

    /// Appends `tasks` to the back of `queue`, in order (they are dequeued in the order
    /// given), in one script, and publishes one `work` event with their count.
    ///
    /// With `unique: true`, tasks already queued or in flight from an earlier unique
    /// enqueue, and repeats within the batch, are skipped and reported in
    /// ``EnqueueResult/skipped`` (as worqr did); with `duplicates: .fail` one duplicate
    /// refuses the whole batch with ``WorkQueueError/Code/duplicateTask``.
    ///
    /// `options` (``TaskOptions``) applies to every task of the batch (a caller's id only
    /// to a batch of one).
    @discardableResult
    public func enqueue(_ queue: String, _ tasks: [String], unique: Bool = false, duplicates: DuplicatePolicy = .skip,
                        minReplicas: Int = 0, options: TaskOptions = TaskOptions()) async throws -> EnqueueResult {
        try await enqueue(queue, tasks.map { Array($0.utf8) }, unique: unique, duplicates: duplicates, minReplicas: minReplicas,
                          options: options)
    }

    /// The byte form of ``enqueue(_:_:unique:duplicates:minReplicas:options:)-(_,[String],_,_,_,_)``.
    ///
    /// With `minReplicas` > 0 the call returns only once that many replicas have the
    /// tasks (`WAIT`, up to ``WorkQueueOptions/replicationTimeout``); else it throws
    /// ``WorkQueueError/Code/notReplicated``
    /// (the tasks are enqueued on the master all the same, but a failover now could lose them).
    ///
    /// - Throws: also `invalidArgument` for bad ``TaskOptions`` (a negative delay, a
    ///   priority out of range, a retry policy of zero attempts, an empty or all-digit id,
    ///   an id for a batch of several tasks), before anything is sent.
    @discardableResult
    public func enqueue(_ queue: String, _ tasks: [[UInt8]], unique: Bool = false, duplicates: DuplicatePolicy = .skip,
                        minReplicas: Int = 0, options: TaskOptions = TaskOptions()) async throws -> EnqueueResult {
        let keys = try keys(queue)
        guard !tasks.isEmpty else { throw RedisError.invalidArgument("enqueue needs at least one task") }
        guard minReplicas >= 0 else { throw RedisError.invalidArgument("minReplicas must not be negative") }
        try options.validate(taskCount: tasks.count)
        for task in tasks { try validateTask(task) }
        let retry = options.retry ?? self.options.retry
        var arguments: [any RedisArgument] = [
            keys.channel, unique ? "1" : "0", duplicates == .fail ? "1" : "0", options.id ?? "",
            options.delay.map { String($0.redisMilliseconds) } ?? "", options.at.map { String($0.redisMilliseconds) } ?? "",
            options.priority, retry?.encoded ?? "",
        ]
        arguments.reserveCapacity(tasks.count + 8)
        for task in tasks { arguments.append(task) }
        let reply = try await client.run(QueueScripts.enqueue, keys: keys.all(), arguments: arguments).decode([Int].self)
        guard reply.count >= 2 else { throw RedisError(.wrongReplyType, "unexpected enqueue reply \(reply)") }
        if reply[0] == 0 {
            if let id = options.id {
                throw WorkQueueError(.duplicateTask, "a task with the id \"\(id.prefix(128))\" exists in \(queue)")
            }
            let task = tasks[reply[1] - 1]
            throw WorkQueueError(.duplicateTask, "\"\(String(decoding: task.prefix(64), as: UTF8.self))\" is already in \(queue)")
        }
        guard reply.count >= 3 else { throw RedisError(.wrongReplyType, "unexpected enqueue reply \(reply)") }
        let result = EnqueueResult(length: reply[1], count: tasks.count, skipped: reply.dropFirst(3).map { $0 - 1 },
                                   lastSequence: reply[2], customID: options.id)
        metrics.enqueued(queue, result.enqueued.count)
        logger.trace("enqueued", metadata: ["queue": "\(queue)", "count": "\(result.enqueued.count)"])
        if minReplicas > 0 {
            // WAIT where the tasks were written (on a cluster, the queue's primary).
            let acknowledged = try await client.send(RedisCommand("WAIT", minReplicas, self.options.replicationTimeout.redisMilliseconds),
                                                     routedBy: Array(keys.pending.utf8), timeout: nil).decode(Int.self)
            guard acknowledged >= minReplicas else {
                throw WorkQueueError(.notReplicated, "only \(acknowledged) of \(minReplicas) replicas acknowledged the enqueue to \(queue)")
            }
        }
        return result
    }

    /// Publishes a `work` event on `queue` with its current length, so that idle workers
    /// look at it again (worqr's `requestWork`). Returns the length.
    @discardableResult
    public func requestWork(_ queue: String) async throws -> Int {
        let keys = try keys(queue)
        return try await client.run(QueueScripts.requestWork, keys: keys.all(), arguments: [keys.channel]).decode(Int.self)
    }

    /// Removes every queued copy of `task` from `queue`, clears its unique marker, and
    /// publishes `cancel` so that workers can stop copies already in flight.
    ///
    /// - Returns: how many queued copies were removed.
    @discardableResult
    public func cancelTasks(_ queue: String, _ task: [UInt8]) async throws -> Int {
        let keys = try keys(queue)
        try validateTask(task)
        return try await client.run(QueueScripts.cancel, keys: keys.all(), arguments: [keys.channel, task, keys.working("")])
            .decode(Int.self)
    }

    /// The `String` form of ``cancelTasks(_:_:)-(_,[UInt8])``.
    @discardableResult
    public func cancelTasks(_ queue: String, _ task: String) async throws -> Int {
        try await cancelTasks(queue, Array(task.utf8))
    }

    /// Deletes `queue`: its tasks, dead letters, unique markers and what workers hold of it
    /// (their `finish` of those processes is then refused). Publishes `delete`.
    public func deleteQueue(_ queue: String) async throws {
        let keys = try keys(queue)
        try await client.run(QueueScripts.deleteQueue, keys: keys.all(), arguments: [keys.channel, keys.working("")])
    }

    // MARK: Introspection

    /// The names of the queues that hold waiting tasks, plain or prioritized (found with
    /// `SCAN`, never `KEYS`). Queues holding only delayed tasks are not listed.
    public func getQueues() async throws -> [String] {
        let head = "{\(options.prefix):"
        var names: Set<String> = []
        for tail in ["}:queue", "}:prio"] {
            for key in try await client.scanKeys(matching: globEscaped(head) + "*" + globEscaped(tail))
            where key.hasPrefix(head) && key.hasSuffix(tail) {
                let encoded = key.dropFirst(head.count).dropLast(tail.count)
                // An encoded name holds no ':' or '}': this is not some task's record key.
                guard !encoded.contains(":"), !encoded.contains("}") else { continue }
                if let name = QueueName.decode(String(encoded)) { names.insert(name) }
            }
        }
        return names.sorted()
    }

    /// How many tasks wait in `queue` (in-flight, delayed and dead-lettered ones not counted).
    public func countQueue(_ queue: String) async throws -> Int {
        try await client.run(QueueScripts.count, keys: try keys(queue).all()).decode(Int.self)
    }

    /// The task that will be dequeued next, or `nil` when the queue is empty.
    public func peekQueue(_ queue: String) async throws -> [UInt8]? {
        let keys = try keys(queue)
        return try await client.run(QueueScripts.waiting, keys: keys.all(), arguments: [1])
            .decode([RedisBytes].self).first?.bytes
    }

    /// The waiting tasks of `queue`, in dequeue order (higher priorities first).
    public func getTasks(_ queue: String) async throws -> [[UInt8]] {
        let keys = try keys(queue)
        return try await client.run(QueueScripts.waiting, keys: keys.all(), arguments: [-1])
            .decode([RedisBytes].self).map(\.bytes)
    }

    /// The registered workers (alive, or dead and not yet cleaned up by a peer).
    public func getWorkers() async throws -> [String] {
        try await client.send("SMEMBERS", registry.workers).decode([String].self).sorted()
    }

    /// The queues `worker` started work on.
    public func getWorkingQueues(_ worker: String) async throws -> [String] {
        try validateName(worker, what: "worker id")
        return try await client.send("SMEMBERS", registry.queues(worker)).decode([String].self).sorted()
    }

    /// The in-flight processes of `queue` whose task is `task`, across all live workers.
    public func getMatchingProcesses(_ queue: String, _ task: [UInt8]) async throws -> [WorkProcess] {
        try await processes(queue, matching: task)
    }

    /// The `String` form of ``getMatchingProcesses(_:_:)-(_,[UInt8])``.
    public func getMatchingProcesses(_ queue: String, _ task: String) async throws -> [WorkProcess] {
        try await processes(queue, matching: Array(task.utf8))
    }

    /// Every in-flight process of `queue`, across all live workers.
    public func getProcesses(_ queue: String) async throws -> [WorkProcess] {
        try await processes(queue, matching: nil)
    }

    /// The processes `worker` holds, across every queue it works on.
    public func getProcesses(worker: String) async throws -> [WorkProcess] {
        var all: [WorkProcess] = []
        for queue in try await getWorkingQueues(worker) {
            all += try await processes(queue, matching: nil).filter { $0.worker == worker }
        }
        return all
    }

    /// The numbers of the processes the server lists for `worker` in `queue`: one `HKEYS`,
    /// no task bytes (for a worker checking its own idea of what it holds).
    func processNumbers(_ queue: String, worker: String) async throws -> [Int64] {
        try await client.send("HKEYS", try keys(queue).working(worker)).decode([String].self).compactMap { Int64($0) }
    }

    private func processes(_ queue: String, matching task: [UInt8]?) async throws -> [WorkProcess] {
        let keys = try keys(queue)
        let reply = try await client.run(
            QueueScripts.processes, keys: keys.all(),
            arguments: [keys.working(""), task ?? [], task == nil ? "0" : "1"])
        guard case .array(let flat) = reply, flat.count % 6 == 0 else {
            throw RedisError(.wrongReplyType, "unexpected processes reply")
        }
        return try stride(from: 0, to: flat.count, by: 6).map { index in
            let worker = try flat[index].decode(String.self)
            let number = try flat[index + 1].decode(Int64.self)
            var process = WorkProcess(queue: queue, worker: worker, number: number,
                                      task: try flat[index + 2].bytes(),
                                      deliveries: try flat[index + 3].decode(Int.self), taskID: try flat[index + 4].decode(String.self))
            process.attempt = try flat[index + 5].decode(Int.self)
            return process
        }.sorted { ($0.worker, $0.number) < ($1.worker, $1.number) }
    }

    // MARK: Dead letters

    /// The tasks of `queue` that reached ``WorkQueueOptions/maxDeliveries``, oldest first.
    public func deadLetters(_ queue: String) async throws -> [DeadLetter] {
        let keys = try keys(queue)
        let reply = try await client.run(QueueScripts.deadLetters, keys: keys.all())
        guard case .array(let flat) = reply, flat.count % 4 == 0 else {
            throw RedisError(.wrongReplyType, "unexpected dead-letter reply")
        }
        return try stride(from: 0, to: flat.count, by: 4).map { index in
            DeadLetter(id: try flat[index].decode(String.self), queue: queue,
                       task: try flat[index + 1].bytes(),
                       deliveries: try flat[index + 2].decode(Int.self),
                       reason: try flat[index + 3].decode(String.self))
        }
    }

    /// Puts dead letters back at the end of their queue with a fresh delivery count
    /// (`ids`: those; `nil`: all) and publishes `work`. Returns how many moved.
    @discardableResult
    public func retryDeadLetters(_ queue: String, ids: [String]? = nil) async throws -> Int {
        try await settleDeadLetters(queue, mode: "retry", ids: ids)
    }

    /// Forgets dead letters (`ids`: those; `nil`: all). Returns how many were removed.
    @discardableResult
    public func purgeDeadLetters(_ queue: String, ids: [String]? = nil) async throws -> Int {
        try await settleDeadLetters(queue, mode: "purge", ids: ids)
    }

    private func settleDeadLetters(_ queue: String, mode: String, ids: [String]?) async throws -> Int {
        let keys = try keys(queue)
        if let ids, ids.isEmpty { return 0 }
        var arguments: [any RedisArgument] = [keys.channel, mode]
        for id in ids ?? [] { arguments.append(id) }
        return try await client.run(QueueScripts.settleDeadLetters, keys: keys.all(), arguments: arguments).decode(Int.self)
    }

    // MARK: Workers

    /// A worker that is not registered yet: ``Worker/start()`` registers it. Use it when
    /// the registration should happen later than the creation; else ``startWorker()``.
    public func makeWorker() -> Worker {
        Worker(queue: self, id: options.workerID ?? UUID().uuidString.lowercased())
    }

    /// Registers a worker (id ``WorkQueueOptions/workerID`` or a random UUID) and starts
    /// its heartbeat and its search for dead peers.
    ///
    /// - Throws: ``WorkQueueError/Code/workerNotStarted`` when the id is already registered.
    public func startWorker() async throws -> Worker {
        let worker = makeWorker()
        try await worker.start()
        return worker
    }

    /// Finds registered workers whose heartbeat expired and, one script per (dead worker,
    /// queue), returns what they held to the front of the queue (or to the dead letters
    /// after ``WorkQueueOptions/maxDeliveries``), then removes their registration. Every
    /// worker runs this each ``WorkQueueOptions/cleanupInterval``; anyone may call it.
    ///
    /// Only dead workers' tasks move: in-flight work is tracked per worker. Permanent
    /// workers (``WorkQueueOptions/workerTimeout`` `nil`) never expire.
    @discardableResult
    public func recoverDeadWorkers() async throws -> RecoveryReport {
        let reply = try await client.run(QueueScripts.findDead, keys: [registry.workers], arguments: [registry.tag + ":"])
        guard case .array(let entries) = reply else { throw RedisError(.wrongReplyType, "unexpected findDead reply") }
        var report = RecoveryReport()
        for entry in entries {
            guard case .array(let pair) = entry, pair.count == 2 else { continue }
            let worker = try pair[0].decode(String.self)
            let queues = try pair[1].decode([String].self)
            try await retire(worker, queues: queues, reason: "worker \(worker) died", mode: .failure, force: false, into: &report)
        }
        if !report.workers.isEmpty {
            logger.warning("recovered dead workers", metadata: [
                "workers": "\(report.workers)", "requeued": "\(report.requeued)", "deadLettered": "\(report.deadLettered)",
            ])
        }
        return report
    }

    /// Gives back what `worker` holds in `queues` (it is marked dead there, so it can take
    /// nothing more) and removes its registration.
    func retire(_ worker: String, queues: [String], reason: String, mode: GiveBackMode, force: Bool,
                into report: inout RecoveryReport) async throws {
        for queue in queues.sorted() {
            let outcome = try await giveBack(queue: queue, worker: worker, processes: [], reason: reason,
                                             mode: mode, markDead: true)
            report.requeued += outcome.requeued
            report.deadLettered += outcome.deadLettered
            report.delayed += outcome.delayed
            metrics.recovered(queue, outcome.requeued, deadLettered: outcome.deadLettered)
        }
        try await client.run(QueueScripts.deregister,
                             keys: [registry.workers, registry.heartbeat(worker), registry.queues(worker)],
                             arguments: [worker, force ? "1" : "0"])
        report.workers.append(worker)
    }

    // MARK: Control (any instance)

    /// Fails another worker by id, as an operator would: its heartbeat is deleted (the
    /// worker learns it was declared dead at its next beat and stops, or re-registers when
    /// ``WorkQueueOptions/reregisterAfterFailure`` is set), its in-flight tasks go back to
    /// the front of their queues, uncounted, and it is deregistered. Works on permanent
    /// workers too.
    ///
    /// - Throws: ``WorkQueueError/Code/unknownWorker`` when no such worker is registered.
    @discardableResult
    public func failWorker(_ worker: String) async throws -> RecoveryReport {
        try validateName(worker, what: "worker id")
        // The heartbeat goes first: the worker can then start work on no further queue.
        let registered = try await client.run(QueueScripts.unregisterHeartbeat, keys: [registry.workers, registry.heartbeat(worker)],
                                              arguments: [worker]).decode(Int.self)
        guard registered == 1 else { throw WorkQueueError(.unknownWorker, "no worker \(worker) is registered") }
        let queues = try await client.send("SMEMBERS", registry.queues(worker)).decode([String].self)
        var report = RecoveryReport()
        try await retire(worker, queues: queues, reason: "worker \(worker) was failed by an operator", mode: .release,
                         force: true, into: &report)
        logger.notice("failed a worker", metadata: ["worker": "\(worker)", "requeued": "\(report.requeued)"])
        return report
    }

    /// Finishes any in-flight process by its ``WorkProcess/id``, from any instance (a
    /// controller finishing a task a worker started), with an optional `result` for the
    /// ``completions(_:)`` of its queue.
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` when the process is not in flight
    ///   (finished already, stopped, recovered after its worker died, or its queue deleted):
    ///   checked inside Redis. `invalidArgument` for a malformed id.
    public func finishProcess(_ id: String, result: [UInt8]? = nil) async throws {
        let process = try ProcessID(id)
        try await finish(queue: process.queue, worker: process.worker, number: process.number, result: result)
    }

    /// The `String` form of ``finishProcess(_:result:)-(_,[UInt8]?)``.
    public func finishProcess(_ id: String, result: String) async throws {
        try await finishProcess(id, result: Array(result.utf8))
    }

    /// Gives any in-flight process back by its ``WorkProcess/id``, from any instance: its
    /// task returns to the front of its queue (or, at its
    /// ``WorkQueueOptions/maxDeliveries``-th delivery, to the dead letters with `reason`).
    /// The worker's own `finish` of it is then refused.
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` as ``finishProcess(_:result:)-(_,[UInt8]?)`` does.
    @discardableResult
    public func stopProcess(_ id: String, reason: String = "stopped") async throws -> StopOutcome {
        let process = try ProcessID(id)
        return try await stop(queue: process.queue, worker: process.worker, number: process.number, reason: reason)
    }

    /// The finish script for one process; publishes `done`.
    func finish(queue: String, worker: String, number: Int64, result: [UInt8]?) async throws {
        let keys = try keys(queue)
        if let result { try validateTask(result) }
        let reply = try await client.run(
            QueueScripts.finish, keys: keys.all(worker: worker),
            arguments: [keys.doneChannel, worker, ProcessID.prefix(encodedQueue: keys.encoded, worker: worker),
                        result == nil ? "0" : "1", result ?? [], options.completedRetention.maxAge.redisMilliseconds,
                        options.completedRetention.maxCount, keys.channel, number]).decode([Int].self)
        guard reply == [1] else {
            throw WorkQueueError(.processNotOwned, "\(ProcessID.prefix(encodedQueue: keys.encoded, worker: worker))\(number) is not in flight")
        }
        metrics.finished(queue)
    }

    /// Finishes several processes of one worker (no result) in one script; whether each
    /// was held, in order.
    func finish(queue: String, worker: String, numbers: [Int64]) async throws -> [Bool] {
        let keys = try keys(queue)
        var arguments: [any RedisArgument] = [
            keys.doneChannel, worker, ProcessID.prefix(encodedQueue: keys.encoded, worker: worker), "0", "",
            options.completedRetention.maxAge.redisMilliseconds, options.completedRetention.maxCount, keys.channel,
        ]
        arguments.reserveCapacity(8 + numbers.count)
        for number in numbers { arguments.append(number) }
        let reply = try await client.run(QueueScripts.finish, keys: keys.all(worker: worker), arguments: arguments)
            .decode([Int].self)
        guard reply.count == numbers.count else { throw RedisError(.wrongReplyType, "unexpected finish reply \(reply)") }
        let finished = reply.map { $0 == 1 }
        for done in finished where done { metrics.finished(queue) }
        return finished
    }

    /// Gives one process back, counted as a failed delivery.
    func stop(queue: String, worker: String, number: Int64, reason: String) async throws -> StopOutcome {
        let outcome = try await giveBack(queue: queue, worker: worker, processes: [number], reason: reason,
                                         mode: .stop, markDead: false)
        guard outcome.missing == 0 else {
            throw WorkQueueError(.processNotOwned, "\(ProcessID.prefix(encodedQueue: QueueName.encode(queue), worker: worker))\(number) is not in flight")
        }
        metrics.stopped(queue)
        if outcome.deadLettered > 0 {
            metrics.deadLettered(queue)
            logger.warning("task dead-lettered", metadata: ["queue": "\(queue)", "reason": "\(reason)"])
            return .deadLettered
        }
        return .requeued
    }

    struct GiveBackOutcome {
        var requeued = 0, deadLettered = 0, missing = 0, delayed = 0, failed = 0
    }

    /// How a process comes back (the give-back script's modes).
    enum GiveBackMode: String {
        /// Unharmed (shutdown, stopWork, an operator): front, nothing counted.
        case release = "0"
        /// ``Worker/stop(_:reason:)``: front, a delivery counted (dead letters at maxDeliveries).
        case stop = "1"
        /// A handler threw or the worker died: an attempt counted; the retry policy decides.
        case failure = "2"
        /// ``PermanentFailure``: the task fails for good.
        case permanent = "3"
    }

    func giveBack(
        queue: String, worker: String, processes: [Int64], reason: String, mode: GiveBackMode, markDead: Bool
    ) async throws -> GiveBackOutcome {
        let keys = try keys(queue)
        var arguments: [any RedisArgument] = [
            keys.channel, options.maxDeliveries, reason, mode.rawValue, markDead ? worker : "", String(Double.random(in: 0..<1)),
            options.failedRetention.maxAge.redisMilliseconds, options.failedRetention.maxCount, keys.doneChannel,
        ]
        for process in processes { arguments.append(process) }
        let reply = try await client.run(QueueScripts.giveBack, keys: keys.all(worker: worker), arguments: arguments)
            .decode([Int].self)
        guard reply.count == 5 else { throw RedisError(.wrongReplyType, "unexpected giveBack reply") }
        return GiveBackOutcome(requeued: reply[0], deadLettered: reply[1], missing: reply[2], delayed: reply[3], failed: reply[4])
    }
}

/// A task being worked on: what ``Worker/dequeue(_:)`` hands out. Finish it with
/// ``Worker/finish(_:result:)-(_,[UInt8]?)`` or give it back with ``Worker/stop(_:reason:)``; any
/// instance can do the same by ``id`` (``WorkQueue/finishProcess(_:result:)-(_,[UInt8]?)``).
public struct WorkProcess: Sendable, Hashable, Identifiable, CustomStringConvertible {
    /// Unique across the fleet, and all that ``WorkQueue/finishProcess(_:result:)-(_,[UInt8]?)``
    /// and ``WorkQueue/stopProcess(_:reason:)`` need: the encoded queue name, the worker
    /// id and a number, separated by `/`.
    public var id: String { ProcessID.prefix(encodedQueue: QueueName.encode(queue), worker: worker) + String(number) }
    /// The queue the task came from.
    public let queue: String
    /// The worker that holds it.
    public let worker: String
    let number: Int64
    /// The task itself.
    public let task: [UInt8]
    /// How many times this task has been handed to a worker, this time included.
    public let deliveries: Int
    /// The task's id (``EnqueueResult/ids``, ``WorkQueue/task(_:_:)``).
    public let taskID: String
    /// Attempts of this task so far, this one included (``TaskInfo/attempts``).
    public internal(set) var attempt: Int = 1
    /// The task as UTF-8 text.
    public var string: String { String(decoding: task, as: UTF8.self) }
    public var description: String { "WorkProcess(\(id), queue: \(queue), delivery \(deliveries))" }
}

/// A task that reached ``WorkQueueOptions/maxDeliveries``.
public struct DeadLetter: Sendable, Hashable {
    /// The dead letter's id (its entry in the queue), for retry and purge.
    public let id: String
    /// The queue it belongs to.
    public let queue: String
    /// The task itself.
    public let task: [UInt8]
    /// How many times it was handed to a worker.
    public let deliveries: Int
    /// Why it was last given back (the error a handler threw, or the worker that died).
    public let reason: String
    /// The task as UTF-8 text.
    public var string: String { String(decoding: task, as: UTF8.self) }
}

/// What ``WorkQueue/recoverDeadWorkers()`` or ``WorkQueue/failWorker(_:)`` did.
public struct RecoveryReport: Sendable, Hashable {
    /// The workers found dead (or failed) and recovered.
    public var workers: [String] = []
    /// Tasks put back at the front of their queues.
    public var requeued = 0
    /// Tasks that reached their last delivery and went to the dead letters.
    public var deadLettered = 0
    /// Tasks with a retry policy that now wait out their backoff.
    public var delayed = 0
}

/// Escapes `*`, `?`, `[`, `]` and `\` for a `SCAN MATCH` pattern.
func globEscaped(_ text: String) -> String {
    var out = ""
    for character in text {
        if "*?[]\\".contains(character) { out.append("\\") }
        out.append(character)
    }
    return out
}

/// What a unique enqueue does with a task that is already queued or in flight.
public enum DuplicatePolicy: Sendable, Hashable {
    /// Enqueue the others and report the duplicates in ``EnqueueResult/skipped`` (worqr).
    case skip
    /// Enqueue nothing and throw ``WorkQueueError/Code/duplicateTask``.
    case fail
}

/// What an enqueue did.
public struct EnqueueResult: Sendable, Hashable {
    /// The queue's length right after the enqueue.
    public let length: Int
    /// Positions (in the tasks given) of the tasks enqueued, in order.
    public let enqueued: [Int]
    /// Positions of the tasks skipped as duplicates: by a unique enqueue, or because a task
    /// with the caller's id (``TaskOptions/id``) exists.
    public let skipped: [Int]
    /// The ids of the tasks given, position by position: the new task's id; for a task
    /// skipped because its caller's id exists, that id; `""` for a task a unique enqueue
    /// skipped.
    public let ids: [String]
    /// The id of the first task given (see ``ids``): for an enqueue of one task, its id.
    public var id: String { ids.first ?? "" }

    init(length: Int, count: Int, skipped: [Int], lastSequence: Int = 0, customID: String? = nil) {
        self.length = length
        self.skipped = skipped
        if skipped.isEmpty {
            enqueued = Array(0..<count)
        } else {
            let skip = Set(skipped)
            enqueued = (0..<count).filter { !skip.contains($0) }
        }
        if let customID, lastSequence == -1 {
            ids = [String](repeating: customID, count: count)   // the caller's id exists
            return
        }
        var ids = [String](repeating: "", count: count)
        for (offset, position) in enqueued.enumerated() {
            ids[position] = customID ?? String(lastSequence - enqueued.count + 1 + offset)
        }
        self.ids = ids
    }
}

/// A process id taken apart: `encoded queue/worker/number`.
struct ProcessID {
    let queue: String
    let worker: String
    let number: Int64

    static func prefix(encodedQueue: String, worker: String) -> String { encodedQueue + "/" + worker + "/" }

    /// - Throws: `invalidArgument` when `id` is not a process id.
    init(_ id: String) throws {
        let bad = RedisError.invalidArgument("\"\(id.prefix(128))\" is not a process id (queue/worker/number)")
        guard let first = id.firstIndex(of: "/"), let last = id.lastIndex(of: "/"), first < last,
              let queue = QueueName.decode(String(id[..<first])), !queue.isEmpty,
              let number = Int64(id[id.index(after: last)...]) else { throw bad }
        let worker = String(id[id.index(after: first)..<last])
        guard !worker.isEmpty else { throw bad }
        self.queue = queue
        self.worker = worker
        self.number = number
    }
}
