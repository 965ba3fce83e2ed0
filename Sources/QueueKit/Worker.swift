import Foundation
import Hiredis
import Logging
import ServiceLifecycle

/// What a worker hears about a queue it works on (``Worker/startWork(_:)``).
public enum WorkEvent: Sendable, Hashable {
    /// Tasks arrived (or came back): the count, when known. Also sent at once by
    /// `startWork` when the queue already holds tasks, and after a pub/sub gap.
    case work(Int)
    /// A producer cancelled this task (``WorkQueue/cancelTasks(_:_:)-(_,[UInt8])``): stop
    /// copies in flight.
    case cancel([UInt8])
    /// The queue was deleted; in-flight processes of it can no longer be finished.
    case delete
    /// This worker, under the id given, was declared dead (its heartbeat expired) and its
    /// in-flight tasks under that id went back to their queues. Unless
    /// ``WorkQueueOptions/reregisterAfterFailure`` is set, the sequence ends after this event.
    case failed(worker: String)
}

/// What ``Worker/stop(_:reason:)`` did with the task.
public enum StopOutcome: Sendable, Hashable {
    /// Back at the front of its queue.
    case requeued
    /// It reached ``WorkQueueOptions/maxDeliveries`` and went to the dead letters.
    case deadLettered
}

/// What ``Worker/fail(_:error:permanently:)`` did with the task.
public enum FailOutcome: Sendable, Hashable {
    /// Back at the front of its queue (no retry policy).
    case requeued
    /// Waiting out its retry policy's backoff as a delayed task.
    case retryLater
    /// Its last attempt (or ``WorkQueueOptions/maxDeliveries``) was reached: dead letters.
    case deadLettered
    /// Failed for good (`permanently`).
    case failed
}

/// A worker of a ``WorkQueue``: it keeps a heartbeat key alive, takes tasks into its own
/// in-flight set, and helps recover its dead peers' tasks.
///
/// Low level, as in worqr: ``startWork(_:)`` then ``dequeue(_:)``, ``finish(_:result:)-(_,[UInt8]?)`` or
/// ``stop(_:reason:)``. High level: ``run(_:concurrency:handler:)``. As a
/// swift-service-lifecycle `Service`: ``handle(_:concurrency:_:)`` then ``run()``.
///
/// When its heartbeat key vanished (the process was paused or cut off from Redis longer
/// than ``WorkQueueOptions/workerTimeout``) the worker learns it was declared dead: it stops
/// taking work, cancels its running handlers (their tasks were handed to others; their
/// `finish` is refused in Redis), and re-registers under a new id only when
/// ``WorkQueueOptions/reregisterAfterFailure`` is set.
public final actor Worker: Service {
    /// The queue this worker takes tasks from.
    public nonisolated let workQueue: WorkQueue
    /// The registered id. It changes only when the worker re-registers after a failure.
    public private(set) var id: String

    private enum State { case idle, running, failed, stopped }
    private var state: State = .idle
    private var listeners: [String: QueueListener] = [:]
    private var heartbeat: Task<Void, Never>?
    private var cleanup: Task<Void, Never>?
    private var nextNumber: Int64 = 0
    private var nextStreamID: UInt64 = 0
    private var handlers: [Registration] = []
    /// What this worker believes it holds, by queue: process numbers.
    private var held: [String: Set<Int64>] = [:]
    /// Process numbers of dequeues sent but not answered yet.
    private var dequeuing: [ClosedRange<Int64>] = []
    /// The running ``run(_:concurrency:handler:)`` loops.
    private var runs: [UInt64: RunControl] = [:]
    private var nextRunID: UInt64 = 0
    /// Set by ``shutdown(gracePeriod:)``: loops stop taking work, new ones do not start.
    private var shutdownGrace: Duration?
    /// ``shutdown(gracePeriod:)`` calls waiting for the loops to end.
    private var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
    /// Result-less finishes that came in while a finish script of their queue was in
    /// flight: the next script finishes them together (``finishTogether(_:)``).
    private var pendingFinishes: [String: [PendingFinish]] = [:]
    /// Queues (keyed with the worker id) whose finish script is in flight.
    private var finishing: Set<String> = []

    private struct PendingFinish {
        let process: WorkProcess
        let continuation: CheckedContinuation<Void, any Error>
    }

    private struct QueueListener {
        var task: Task<Void, Never>
        var streams: [UInt64: AsyncStream<WorkEvent>.Continuation] = [:]
    }

    private struct Registration {
        let queue: String
        let concurrency: Int
        let handler: @Sendable (WorkProcess) async throws -> [UInt8]?
    }

    nonisolated var client: any RedisClient { workQueue.client }
    nonisolated var options: WorkQueueOptions { workQueue.options }
    nonisolated var logger: Logger { workQueue.options.logger }

    init(queue: WorkQueue, id: String) {
        self.workQueue = queue
        self.id = id
    }

    deinit {
        heartbeat?.cancel()
        cleanup?.cancel()
        for listener in listeners.values {
            listener.task.cancel()
            for stream in listener.streams.values { stream.finish() }
        }
    }

    /// Whether the worker is registered and taking work.
    public var isRunning: Bool { state == .running }

    // MARK: Lifecycle

    /// Registers the worker (`SET heartbeat RUN PX timeout NX`) and starts its heartbeat
    /// and its periodic recovery of dead peers. Calling it again while running does nothing.
    ///
    /// - Throws: ``WorkQueueError/Code/workerNotStarted`` when the id is already registered
    ///   or the worker was stopped; `invalidArgument` for a bad id.
    public func start() async throws {
        switch state {
        case .running: return
        case .failed, .stopped:
            throw WorkQueueError(.workerNotStarted, "worker \(id) was stopped; start a new one")
        case .idle: break
        }
        try validateName(id, what: "worker id")
        try await register(id)
        state = .running
        startLoops()
        logger.info("worker started", metadata: ["worker": "\(id)"])
    }

    private func register(_ worker: String) async throws {
        let registry = workQueue.registry
        let registered = try await client.run(
            QueueScripts.register, keys: [registry.workers, registry.heartbeat(worker)],
            arguments: [worker, options.workerTimeout.map { String($0.redisMilliseconds) } ?? ""]).decode(Int.self)
        guard registered == 1 else {
            throw WorkQueueError(.workerNotStarted, "the worker id \(worker) is already registered")
        }
    }

    private func startLoops() {
        let beat = options.heartbeatInterval
        heartbeat = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: beat)
                guard let self, !Task.isCancelled else { return }
                await self.beat()
            }
        }
        let every = options.cleanupInterval
        cleanup = Task { [weak self] in
            // A random first delay spreads the fleet's cleanups over the interval.
            var delay = every * Double.random(in: 0.5...1.0)
            while !Task.isCancelled {
                try? await Task.sleep(for: delay)
                delay = every
                guard let self, !Task.isCancelled else { return }
                await self.recoverPeers()
                await self.reconcileAll()
            }
        }
    }

    private func stopLoops() {
        heartbeat?.cancel()
        heartbeat = nil
        cleanup?.cancel()
        cleanup = nil
    }

    /// Refreshes the heartbeat key (`SET … PX timeout XX`); a vanished key means the
    /// worker was declared dead.
    private func beat() async {
        guard state == .running else { return }
        let worker = id
        do {
            let key = workQueue.registry.heartbeat(worker)
            let command = options.workerTimeout.map { RedisCommand("SET", key, "RUN", "PX", $0.redisMilliseconds, "XX") }
                ?? RedisCommand("SET", key, "RUN", "XX")
            let reply = try await client.send(command, timeout: max(options.heartbeatInterval, .milliseconds(100)))
            if case .null = reply, worker == id {
                await declaredDead("its heartbeat key expired", worker: worker)
            }
        } catch {
            logger.warning("heartbeat failed", metadata: ["worker": "\(worker)", "error": "\(error)"])
        }
    }

    private func recoverPeers() async {
        guard state == .running else { return }
        do {
            try await workQueue.recoverDeadWorkers()
        } catch {
            logger.warning("recovery of dead workers failed", metadata: ["error": "\(error)"])
        }
    }

    /// The worker's peers declared it dead: tell the listeners, re-register under a new id
    /// (when configured), give back what the old id still holds, or stop.
    /// `worker` is the id that was found dead: a late report about an id already replaced
    /// by a re-registration is ignored.
    private func declaredDead(_ why: String, worker: String) async {
        guard state == .running, worker == id else { return }
        let oldID = id
        state = .failed
        // What the old id held is given back below (or by its peers); a new id starts
        // with nothing, whatever `retire` manages.
        held = [:]
        logger.error("worker was declared dead", metadata: ["worker": "\(oldID)", "reason": "\(why)"])
        broadcast(.failed(worker: oldID))
        if options.reregisterAfterFailure {
            let newID = UUID().uuidString.lowercased()
            do {
                try await register(newID)
                id = newID
                state = .running
                for queue in listeners.keys.sorted() { try await registerQueue(queue) }
                logger.notice("worker re-registered", metadata: ["worker": "\(newID)", "was": "\(oldID)"])
            } catch {
                logger.error("worker could not re-register", metadata: ["error": "\(error)"])
                state = .failed
            }
        }
        do {
            try await retire(oldID, mode: .failure, reason: "worker \(oldID) was declared dead")
        } catch {
            logger.warning("could not give back a dead worker's tasks; its peers will", metadata: ["error": "\(error)"])
        }
        guard state == .running else {
            stopLoops()
            finishListeners()
            return
        }
        for queue in listeners.keys.sorted() {
            if let count = try? await workQueue.countQueue(queue), count > 0 { broadcast(.work(count), queue: queue) }
        }
    }

    /// Gives back every process `worker` holds (front of the queues) and deregisters it.
    private func retire(_ worker: String, mode: WorkQueue.GiveBackMode, reason: String) async throws {
        var queues = Set(listeners.keys)
        queues.formUnion(try await client.send("SMEMBERS", workQueue.registry.queues(worker)).decode([String].self))
        var report = RecoveryReport()
        try await workQueue.retire(worker, queues: Array(queues), reason: reason, mode: mode, force: true, into: &report)
        for queue in queues {
            workQueue.metrics.inFlight(queue, worker: worker, 0)
            if worker == id { held[queue] = nil }
        }
    }

    /// Stops the worker gracefully, with no `ServiceGroup` needed: every
    /// ``run(_:concurrency:handler:)`` loop stops taking tasks, running handlers may finish
    /// within `gracePeriod` (default ``WorkQueueOptions/shutdownGracePeriod``), the rest are
    /// cancelled and their tasks go back to the front of their queues, uncounted; then the
    /// worker deregisters. Returns once all of that is done. Calling it again waits as well.
    public func shutdown(gracePeriod: Duration? = nil) async {
        let grace = max(gracePeriod ?? options.shutdownGracePeriod, .zero)
        if shutdownGrace == nil { shutdownGrace = grace }
        for control in runs.values { control.shutDown(gracePeriod: grace) }
        if !runs.isEmpty {
            await withCheckedContinuation { shutdownWaiters.append($0) }
        }
        do {
            try await failWorker()
        } catch {
            logger.warning("the worker could not deregister; its peers will once its heartbeat expires",
                           metadata: ["worker": "\(id)", "error": "\(error)"])
        }
    }

    /// A run loop starts; `nil` when the worker is shutting down (the loop must not start).
    func beginRun(_ control: RunControl) -> UInt64? {
        guard shutdownGrace == nil else { return nil }
        nextRunID += 1
        runs[nextRunID] = control
        return nextRunID
    }

    /// A run loop ended. When it was the last one, the worker deregisters (what it still
    /// holds goes back), and waiting ``shutdown(gracePeriod:)`` calls return.
    func endRun(_ runID: UInt64) async {
        guard runs.removeValue(forKey: runID) != nil, runs.isEmpty else { return }
        do {
            try await failWorker()
        } catch {
            logger.warning("the worker could not deregister; its peers will once its heartbeat expires",
                           metadata: ["worker": "\(id)", "error": "\(error)"])
        }
        guard runs.isEmpty else { return }
        let waiters = shutdownWaiters
        shutdownWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    /// Returns every in-flight task to the front of its queue and deregisters the worker.
    /// The worker takes no more work; its event sequences end.
    public func failWorker() async throws {
        switch state {
        case .idle:
            state = .stopped
            return
        case .stopped: return
        case .running, .failed: break
        }
        state = .stopped
        stopLoops()
        finishListeners()
        try await retire(id, mode: .release, reason: "worker \(id) stopped")
        logger.info("worker stopped", metadata: ["worker": "\(id)"])
    }

    private func ensureRunning() throws {
        switch state {
        case .running: return
        case .idle: throw WorkQueueError(.workerNotStarted, "start the worker (startWorker() or start()) before working")
        case .failed: throw WorkQueueError(.workerFailed, "worker \(id) was declared dead by its peers")
        case .stopped: throw WorkQueueError(.workerNotStarted, "worker \(id) was stopped")
        }
    }

    // MARK: Working on queues

    /// Starts working on `queue`: subscribes to its events (confirmed before returning) and
    /// records the queue as worked on by this worker. The sequence yields ``WorkEvent/work(_:)``
    /// at once when the queue already holds tasks.
    ///
    /// - Throws: ``WorkQueueError/Code/workerNotStarted`` before ``start()``;
    ///   ``WorkQueueError/Code/workerFailed``; `invalidArgument` for a bad queue name.
    public func startWork(_ queue: String) async throws -> AsyncStream<WorkEvent> {
        let keys = try workQueue.keys(queue)
        try ensureRunning()
        // Recorded as worked on before anything can be dequeued from it, so that recovery
        // always finds this worker's tasks of it.
        try await registerQueue(queue)
        if listeners[queue] == nil {
            let subscription = try await workQueue.subscriber.subscribe([keys.channel])
            try ensureRunning()
            if listeners[queue] == nil {
                let listener = Task { [weak self] in
                    do {
                        for try await event in subscription {
                            guard let self else { return }
                            await self.received(event, queue: queue)
                        }
                    } catch {
                        self?.logger.warning("work events ended", metadata: ["queue": "\(queue)", "error": "\(error)"])
                    }
                }
                listeners[queue] = QueueListener(task: listener)
            }
        }
        nextStreamID += 1
        let streamID = nextStreamID
        let (stream, continuation) = AsyncStream<WorkEvent>.makeStream()
        continuation.onTermination = { [weak self] _ in
            Task { await self?.dropStream(queue, streamID) }
        }
        listeners[queue]?.streams[streamID] = continuation
        let count = try await workQueue.countQueue(queue)
        if count > 0 { continuation.yield(.work(count)) }
        return stream
    }

    private func registerQueue(_ queue: String) async throws {
        let registry = workQueue.registry
        let worker = id
        let started = try await client.run(QueueScripts.startWork, keys: [registry.heartbeat(worker), registry.queues(worker)],
                                           arguments: [queue]).decode(Int.self)
        if started == 0 {
            await declaredDead("its heartbeat key was gone when it started work", worker: worker)
            throw WorkQueueError(.workerFailed, "worker was declared dead by its peers")
        }
    }

    private func dropStream(_ queue: String, _ streamID: UInt64) {
        listeners[queue]?.streams[streamID] = nil
    }

    private func received(_ event: RedisSubscription.Event, queue: String) async {
        switch event {
        case .message(let message):
            let payload = message.payload
            if payload.starts(with: QueueMessage.work.utf8) {
                broadcast(.work(Int(String(decoding: payload.dropFirst(QueueMessage.work.utf8.count), as: UTF8.self)) ?? 0), queue: queue)
            } else if payload.starts(with: QueueMessage.cancel.utf8) {
                broadcast(.cancel(Array(payload.dropFirst(QueueMessage.cancel.utf8.count))), queue: queue)
            } else if payload.starts(with: QueueMessage.delete.utf8) {
                broadcast(.delete, queue: queue)
            }
        case .gap:
            // Messages may have been missed: the queue's length is the truth.
            let count = (try? await workQueue.countQueue(queue)) ?? 1
            broadcast(.work(count), queue: queue)
            await reconcile(queue)
        }
    }

    private func broadcast(_ event: WorkEvent, queue: String? = nil) {
        for (name, listener) in listeners where queue == nil || name == queue {
            for stream in listener.streams.values { stream.yield(event) }
        }
    }

    private func finishListeners() {
        for listener in listeners.values {
            listener.task.cancel()
            for stream in listener.streams.values { stream.finish() }
        }
        listeners = [:]
    }

    /// Stops working on `queue`: unsubscribes, ends its event sequences, and returns this
    /// worker's in-flight tasks of it to the front of the queue (other workers' are untouched).
    public func stopWork(_ queue: String) async throws {
        let keys = try workQueue.keys(queue)
        if let listener = listeners.removeValue(forKey: queue) {
            listener.task.cancel()
            for stream in listener.streams.values { stream.finish() }
        }
        guard state == .running || state == .failed else { return }
        _ = try await workQueue.giveBack(queue: queue, worker: id, processes: [], reason: "worker \(id) stopped work",
                                         mode: .release, markDead: false)
        release(queue, all: true)
        try await client.send("SREM", workQueue.registry.queues(id), keys.queue)
        // A startWork of the same queue while this one waited: keep it recorded, or a crash
        // would hide its tasks from recovery.
        if listeners[queue] != nil { try await registerQueue(queue) }
    }

    /// Takes the task at the head of `queue` into this worker's in-flight set (one script),
    /// or returns `nil` when the queue is empty.
    ///
    /// - Throws: ``WorkQueueError/Code/notWorking`` before ``startWork(_:)`` on that queue,
    ///   ``WorkQueueError/Code/workerNotStarted``, ``WorkQueueError/Code/workerFailed``.
    public func dequeue(_ queue: String) async throws -> WorkProcess? {
        try await dequeue(queue, max: 1).first
    }

    /// Takes up to `max` tasks from the head of `queue` in one script (fewer when the queue
    /// holds fewer), in queue order: higher priorities first. Delayed tasks that fell due
    /// (by the server's clock) join the queue first. A paused queue, or one at its rate or
    /// concurrency limit (``WorkQueue/setLimits(_:_:)``), hands out fewer or none.
    public func dequeue(_ queue: String, max: Int) async throws -> [WorkProcess] {
        try await take(queue, max: max).processes
    }

    /// What one dequeue script returned: the processes, and how long until a delayed task
    /// falls due or the rate window frees (`nil`: nothing to wait for).
    struct Taken {
        var processes: [WorkProcess]
        var wake: Duration?
    }

    func take(_ queue: String, max: Int) async throws -> Taken {
        let keys = try workQueue.keys(queue)
        guard max >= 1 else { throw RedisError.invalidArgument("dequeue needs max >= 1") }
        try ensureRunning()
        guard listeners[queue] != nil else {
            throw WorkQueueError(.notWorking, "call startWork(\"\(queue)\") before dequeue")
        }
        let worker = id
        let first = nextNumber + 1
        nextNumber += Int64(max)
        let numbers = first...nextNumber
        dequeuing.append(numbers)
        defer { dequeuing.removeAll { $0 == numbers } }
        let reply: RedisReply
        do {
            reply = try await client.run(QueueScripts.dequeue, keys: keys.all(worker: worker), arguments: [worker, max, first])
        } catch {
            // The script may have run even though its reply was lost: look for what the
            // server thinks this worker holds once the connection is back.
            Task { await self.reconcile(queue) }
            throw error
        }
        guard case .array(let flat) = reply, flat.count >= 1 else {
            throw RedisError(.wrongReplyType, "unexpected dequeue reply")
        }
        if try flat[0].decode(Int.self) == -1 {
            await declaredDead("a dequeue found it declared dead", worker: worker)
            throw WorkQueueError(.workerFailed, "worker \(worker) was declared dead by its peers")
        }
        let count = try flat[0].decode(Int.self)
        guard flat.count == 3 + 5 * count else { throw RedisError(.wrongReplyType, "unexpected dequeue reply") }
        let wakeMilliseconds = try flat[2].decode(Int.self)
        var processes: [WorkProcess] = []
        processes.reserveCapacity(count)
        for index in 0..<count {
            let base = 3 + index * 5
            var process = WorkProcess(
                queue: queue, worker: worker, number: try flat[base].decode(Int64.self),
                task: try flat[base + 1].bytes(), deliveries: try flat[base + 2].decode(Int.self),
                taskID: try flat[base + 3].decode(String.self))
            process.attempt = try flat[base + 4].decode(Int.self)
            processes.append(process)
        }
        if count > 0 {
            workQueue.metrics.dequeued(queue, count)
            held[queue, default: []].formUnion(processes.map(\.number))
            workQueue.metrics.inFlight(queue, worker: worker, held[queue]?.count ?? 0)
        }
        return Taken(processes: processes, wake: wakeMilliseconds >= 0 ? .milliseconds(wakeMilliseconds) : nil)
    }

    /// Finishes a process: removes the task for good (and its unique marker), and publishes
    /// its completion with `result` (``WorkQueue/completions(_:)``).
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` when this worker no longer holds it
    ///   (finished already, recovered by a peer after this worker was declared dead, stopped
    ///   or finished by another instance, or its queue deleted): ownership is checked inside
    ///   Redis, so nothing is finished twice.
    public func finish(_ process: WorkProcess, result: [UInt8]? = nil) async throws {
        guard process.worker == id else {
            throw WorkQueueError(.processNotOwned, "\(process.id) belongs to worker \(process.worker), not \(id)")
        }
        do {
            if result == nil {
                try await finishTogether(process)
            } else {
                try await workQueue.finish(queue: process.queue, worker: process.worker, number: process.number, result: result)
            }
        } catch let error as WorkQueueError {
            release(process.queue, [process.number])   // not (or no longer) held: Redis said so
            throw error
        }
        // A transport error leaves it held here: the finish may not have run, and a
        // reconciliation must not mistake it for a ghost while the caller tries again.
        release(process.queue, [process.number])
    }

    /// Finishes `process` (no result) in the next finish script of its queue: one script
    /// at a time per queue, and the finishes that arrive meanwhile go together in the next
    /// one (each still checked and finished on its own inside it). An idle queue's finish
    /// is sent at once; busy workers send fewer, larger scripts.
    private func finishTogether(_ process: WorkProcess) async throws {
        let key = process.worker + "\n" + process.queue
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            pendingFinishes[key, default: []].append(PendingFinish(process: process, continuation: continuation))
            if finishing.insert(key).inserted {
                Task { await self.sendFinishes(key) }
            }
        }
    }

    private func sendFinishes(_ key: String) async {
        while let batch = pendingFinishes.removeValue(forKey: key), let first = batch.first?.process {
            do {
                let finished = try await workQueue.finish(queue: first.queue, worker: first.worker,
                                                          numbers: batch.map(\.process.number))
                for (entry, done) in zip(batch, finished) {
                    if done {
                        entry.continuation.resume()
                    } else {
                        entry.continuation.resume(throwing: WorkQueueError(.processNotOwned, "\(entry.process.id) is not in flight"))
                    }
                }
            } catch {
                for entry in batch { entry.continuation.resume(throwing: error) }
            }
        }
        finishing.remove(key)
    }

    /// The `String` form of ``finish(_:result:)-(_,[UInt8]?)``.
    public func finish(_ process: WorkProcess, result: String) async throws {
        try await finish(process, result: Array(result.utf8))
    }

    /// Forgets processes this worker no longer holds (and updates the gauge).
    private func release(_ queue: String, _ numbers: [Int64] = [], all: Bool = false) {
        if all { held[queue] = nil } else { held[queue]?.subtract(numbers) }
        workQueue.metrics.inFlight(queue, worker: id, held[queue]?.count ?? 0)
    }

    private func reconcileAll() async {
        for queue in listeners.keys.sorted() { await reconcile(queue) }
    }

    /// Forgets a process whose finish or stop could not be settled, so that a later
    /// reconciliation returns it to the queue.
    func forget(_ process: WorkProcess) {
        release(process.queue, [process.number])
    }

    /// After a pub/sub gap (the connection was lost, perhaps in a failover), the server's
    /// idea of what this worker holds may differ from its own: a finish that was lost left
    /// a ghost in the in-flight set. Ghosts go back to the front of the queue, uncounted.
    func reconcile(_ queue: String) async {
        guard state == .running else { return }
        let worker = id
        for attempt in 0..<10 {
            do {
                let onServer = try await workQueue.processNumbers(queue, worker: worker)
                let mine = held[queue] ?? []
                let ghosts = onServer.filter { number in
                    !mine.contains(number) && !dequeuing.contains { $0.contains(number) }
                }
                guard !ghosts.isEmpty, worker == id else { return }
                let outcome = try await workQueue.giveBack(queue: queue, worker: worker, processes: ghosts.sorted(),
                                                           reason: "lost by worker \(worker) in a failover", mode: .release, markDead: false)
                logger.warning("returned in-flight entries this worker no longer knew of", metadata: [
                    "queue": "\(queue)", "count": "\(outcome.requeued)",
                ])
                return
            } catch {
                try? await Task.sleep(for: .milliseconds(200 * (attempt + 1)))
            }
        }
    }

    /// Gives a process back: its task returns to the FRONT of its queue and `work` is
    /// published, unless this was its ``WorkQueueOptions/maxDeliveries``-th delivery: then it
    /// goes to the queue's dead letters with `reason`. The attempt is not counted and no
    /// backoff applies; to count it (a retry after the task's backoff), call
    /// ``fail(_:error:permanently:)`` instead.
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` as ``finish(_:result:)-(_,[UInt8]?)`` does.
    @discardableResult
    public func stop(_ process: WorkProcess, reason: String = "stopped") async throws -> StopOutcome {
        guard process.worker == id else {
            throw WorkQueueError(.processNotOwned, "\(process.id) belongs to worker \(process.worker), not \(id)")
        }
        let outcome: StopOutcome
        do {
            outcome = try await workQueue.stop(queue: process.queue, worker: process.worker, number: process.number, reason: reason)
        } catch let error as WorkQueueError {
            release(process.queue, [process.number])
            throw error
        }
        release(process.queue, [process.number])   // as finish: only once Redis answered
        return outcome
    }

    /// Fails a process's attempt with `error` (what ``run(_:concurrency:handler:)`` does when
    /// a handler throws). With a retry policy (``TaskOptions/retry``,
    /// ``WorkQueueOptions/retry``) the attempt counts: the task waits out its backoff as a
    /// delayed task, or after its last attempt goes to the dead letters with `error`.
    /// Without one it behaves as ``stop(_:reason:)``. With `permanently` the task fails for
    /// good (``TaskState/failed``), whatever its policy.
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` as ``finish(_:result:)-(_,[UInt8]?)`` does.
    @discardableResult
    public func fail(_ process: WorkProcess, error: String, permanently: Bool = false) async throws -> FailOutcome {
        guard process.worker == id else {
            throw WorkQueueError(.processNotOwned, "\(process.id) belongs to worker \(process.worker), not \(id)")
        }
        let outcome: WorkQueue.GiveBackOutcome
        do {
            outcome = try await workQueue.giveBack(queue: process.queue, worker: process.worker, processes: [process.number],
                                                   reason: error, mode: permanently ? .permanent : .failure, markDead: false)
        } catch let error as WorkQueueError {
            release(process.queue, [process.number])
            throw error
        }
        release(process.queue, [process.number])
        guard outcome.missing == 0 else {
            throw WorkQueueError(.processNotOwned, "\(process.id) is not in flight")
        }
        workQueue.metrics.stopped(process.queue)
        if outcome.deadLettered > 0 {
            workQueue.metrics.deadLettered(process.queue)
            logger.warning("task dead-lettered", metadata: ["queue": "\(process.queue)", "task": "\(process.taskID)", "reason": "\(error)"])
            return .deadLettered
        }
        if outcome.failed > 0 { return .failed }
        if outcome.delayed > 0 { return .retryLater }
        return .requeued
    }

    /// Gives processes back to the front of their queue in dequeue order, without counting
    /// the delivery (a shutdown is not the task's fault).
    func giveBackInterrupted(_ processes: [WorkProcess]) async {
        let groups = Dictionary(grouping: processes) { [$0.queue, $0.worker] }
        for (key, group) in groups {
            let numbers = group.map(\.number).sorted()
            do {
                _ = try await workQueue.giveBack(queue: key[0], worker: key[1], processes: numbers,
                                                 reason: "worker \(key[1]) shut down", mode: .release, markDead: false)
                release(key[0], numbers)
            } catch {
                logger.error("could not give back interrupted processes; the worker's peers will after it stops",
                             metadata: ["queue": "\(key[0])", "error": "\(error)"])
            }
        }
    }

    // MARK: Service

    /// Registers a handler that ``run()`` runs on `queue`, `concurrency` tasks at a time.
    public func handle(
        _ queue: String, concurrency: Int = 1, _ handler: @escaping @Sendable (WorkProcess) async throws -> Void
    ) throws {
        try handleWithResults(queue, concurrency: concurrency) { process in
            try await handler(process)
            return nil
        }
    }

    /// Registers a handler that ``run()`` runs on `queue`, `concurrency` tasks at a time, and
    /// whose return value is stored as each task's result (see
    /// ``runWithResults(_:concurrency:handler:)``).
    public func handleWithResults(
        _ queue: String, concurrency: Int = 1, _ handler: @escaping @Sendable (WorkProcess) async throws -> [UInt8]?
    ) throws {
        _ = try workQueue.keys(queue)
        guard concurrency >= 1 else { throw RedisError.invalidArgument("concurrency must be at least 1") }
        handlers.append(Registration(queue: queue, concurrency: concurrency, handler: handler))
    }

    /// swift-service-lifecycle entry point: starts the worker if needed, runs every handler
    /// registered with ``handle(_:concurrency:_:)`` until graceful shutdown or
    /// cancellation, then deregisters (in-flight work was drained or returned).
    public func run() async throws {
        if state == .idle { try await start() }
        let registered = handlers
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for registration in registered {
                    group.addTask {
                        try await self.runWithResults(registration.queue, concurrency: registration.concurrency,
                                                      handler: registration.handler)
                    }
                }
                if registered.isEmpty {
                    group.addTask { try? await gracefulShutdown() }
                }
                try await group.waitForAll()
            }
        } catch {
            await Task { try? await self.failWorker() }.value
            throw error
        }
        try await Task { try await self.failWorker() }.value
    }
}
