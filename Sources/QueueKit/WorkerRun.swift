import Hiredis
import Logging
import ServiceLifecycle
import Synchronization

extension Worker {
    /// Works on `queue` until the calling task is cancelled, graceful shutdown is triggered
    /// (swift-service-lifecycle), or the worker stops: dequeues whenever a `work` event
    /// arrives, a handler finishes, or ``WorkQueueOptions/pollInterval`` passes, and runs up
    /// to `concurrency` handlers at once.
    ///
    /// - A handler that returns finishes its process; one that throws fails its attempt
    ///   (``fail(_:error:permanently:)``): with a retry policy the task waits out its
    ///   backoff, or goes to the dead letters after its last attempt; without one it goes
    ///   back to the front of the queue, or to the dead letters after
    ///   ``WorkQueueOptions/maxDeliveries``. One that throws ``PermanentFailure`` fails it
    ///   for good.
    /// - Delayed tasks: the loop sleeps until the earliest one falls due (the dequeue script
    ///   says when, by the server's clock); a delayed enqueue wakes it early.
    /// - A `cancel` event for a task cancels the handlers running it (the task is then
    ///   finished); `delete` and a failure of this worker cancel every handler.
    /// - On graceful shutdown (swift-service-lifecycle's, or ``shutdown(gracePeriod:)``) it
    ///   stops taking work and waits for running handlers up to the grace period
    ///   (``WorkQueueOptions/shutdownGracePeriod`` by default); then it cancels them and
    ///   returns their tasks to the front of the queue. On cancellation it does so at once.
    /// - When the last running loop of this worker ends, the worker deregisters: a worker
    ///   is used once.
    ///
    /// - Throws: ``WorkQueueError/Code/workerFailed`` when the worker was declared dead and
    ///   does not re-register; what ``startWork(_:)`` throws.
    public nonisolated func run(
        _ queue: String, concurrency: Int = 1, handler: @escaping @Sendable (WorkProcess) async throws -> Void
    ) async throws {
        try await runWithResults(queue, concurrency: concurrency) { process in
            try await handler(process)
            return nil
        }
    }

    /// Works on `queue` as ``run(_:concurrency:handler:)`` does, with a handler that returns
    /// each task's result: it is stored with the finish, so that ``WorkQueue/task(_:_:)``,
    /// ``WorkQueue/waitUntilFinished(_:_:timeout:)`` and ``WorkQueue/completions(_:)`` carry
    /// it (`nil`: no result). Results are bytes (JSON, text, …: the handler's choice). (A
    /// name of its own: an overload of `run` would make trailing closures ambiguous.)
    ///
    /// - Throws: what ``run(_:concurrency:handler:)`` throws.
    public nonisolated func runWithResults(
        _ queue: String, concurrency: Int = 1, handler: @escaping @Sendable (WorkProcess) async throws -> [UInt8]?
    ) async throws {
        guard concurrency >= 1 else { throw RedisError.invalidArgument("concurrency must be at least 1") }
        _ = try workQueue.keys(queue)
        let (wakeups, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let control = RunControl(wake: { wake.yield() })
        // Sleeps until the next delayed task falls due (or the rate window frees), then wakes
        // the loop: workers do not poll for delayed tasks.
        let timer = WakeTimer(wake: { wake.yield() })
        guard let runID = await beginRun(control) else { return }   // shutting down already
        let events: AsyncStream<WorkEvent>
        do {
            events = try await startWork(queue)
        } catch {
            // Outside this (possibly cancelled) task: the deregistration's Redis calls must run.
            await Task { await self.endRun(runID) }.value
            throw error
        }
        let poll = options.pollInterval
        let grace = options.shutdownGracePeriod
        let logger = self.logger
        var failure: (any Error)?

        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                group.addTask {
                    for await event in events {
                        switch event {
                        case .work: wake.yield()
                        case .cancel(let task): control.cancel(.cancelledTask) { $0.task == task }
                        case .delete: control.cancel(.queueDeleted) { _ in true }
                        case .failed(let dead): control.cancel(.workerGone) { $0.worker == dead }
                        }
                    }
                    // The worker stopped work on this queue, or stopped altogether.
                    control.cancel(.workerGone) { _ in true }
                    control.stop()
                    wake.yield()
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: poll)
                        wake.yield()
                    }
                }
                wake.yield()
                taking: for await _ in wakeups {
                    while !Task.isCancelled && !control.isStopping && control.active < concurrency {
                        // One script takes as many tasks as there are free slots.
                        let wanted = concurrency - control.active
                        let batch: [WorkProcess]
                        do {
                            let taken = try await self.take(queue, max: wanted)
                            batch = taken.processes
                            timer.schedule(after: taken.wake)
                        } catch let error as WorkQueueError where error.code == .workerFailed {
                            if !self.options.reregisterAfterFailure {
                                failure = error
                                break taking
                            }
                            break
                        } catch let error as WorkQueueError where error.code == .notWorking || error.code == .workerNotStarted {
                            break taking
                        } catch {
                            if !Task.isCancelled {
                                logger.warning("dequeue failed", metadata: ["queue": "\(queue)", "error": "\(error)"])
                            }
                            break
                        }
                        for process in batch {
                            let running = Task { try await handler(process) }
                            control.add(process, running)
                            group.addTask {
                                let result = await withTaskCancellationHandler {
                                    await running.result
                                } onCancel: {
                                    control.cancel(.shutdown) { $0.number == process.number }
                                }
                                let reason = control.remove(process.number, result: result)
                                // Settle outside this (possibly cancelled) task: Redis calls must still run.
                                await Task { await self.settle(process, result, reason) }.value
                                wake.yield()
                            }
                        }
                        if batch.count < wanted { break }   // the queue is empty for now
                    }
                    if Task.isCancelled || control.isStopping { break }
                }
                if !Task.isCancelled && control.isShuttingDown {
                    await control.waitUntilIdle(upTo: control.gracePeriod ?? grace)
                }
                timer.schedule(after: nil)
                control.cancel(.shutdown) { _ in true }
                await control.waitUntilIdle(upTo: nil)
                group.cancelAll()
            }
        } onGracefulShutdown: {
            control.shutDown(gracePeriod: nil)
        }
        // Interrupted tasks go back together, in their dequeue order, uncounted.
        let interrupted = control.interrupted
        await Task {
            if !interrupted.isEmpty { await self.giveBackInterrupted(interrupted) }
            await self.endRun(runID)
        }.value
        if let failure { throw failure }
    }

    /// What happens to a process once its handler ended. A Redis outage (a failover, a
    /// restart) is waited out: the finish or stop is retried for a while, so a finished
    /// task is not left in flight.
    nonisolated func settle(_ process: WorkProcess, _ result: Result<[UInt8]?, any Error>, _ reason: RunControl.Stop?) async {
        var delay = Duration.milliseconds(100)
        for attempt in 1...12 {
            do {
                switch (result, reason) {
                case (.success(let value), _):
                    try await finish(process, result: value)
                case (.failure, .cancelledTask?):
                    try await finish(process)
                case (.failure, .queueDeleted?), (.failure, .workerGone?), (.failure, .shutdown?):
                    break   // nothing to settle, or given back together when the loop ends
                case (.failure(let error as PermanentFailure), nil):
                    try await fail(process, error: error.reason, permanently: true)
                case (.failure(let error), nil):
                    try await fail(process, error: String(describing: error))
                }
                return
            } catch let error as WorkQueueError where error.code == .processNotOwned {
                logger.warning("a handler ended after its process was taken away", metadata: [
                    "process": "\(process.id)", "queue": "\(process.queue)",
                ])
                return
            } catch let error as RedisError where attempt < 12 && error.isTransient {
                try? await Task.sleep(for: delay)
                delay = min(delay * 2, .seconds(2))
            } catch {
                logger.error("could not settle a process; it goes back to the queue at the next reconciliation",
                             metadata: ["process": "\(process.id)", "error": "\(error)"])
                await forget(process)
                return
            }
        }
    }
}

extension WorkQueue {
    /// Registers a worker and runs `handler` on `queue` in the background (see
    /// ``Worker/run(_:concurrency:handler:)``); returns a handle to stop it.
    ///
    /// ```swift
    /// let mailer = try await queue.startWorker(on: "emails", concurrency: 4) { process in
    ///     try await send(process.string)
    /// }
    /// // …
    /// try await mailer.shutdown(gracePeriod: .seconds(10))
    /// ```
    ///
    /// - Throws: what ``startWorker()`` throws; `invalidArgument` for an empty queue name
    ///   or a concurrency below 1.
    public func startWorker(
        on queue: String, concurrency: Int = 1, handler: @escaping @Sendable (WorkProcess) async throws -> Void
    ) async throws -> RunningWorker {
        try await startWorkerWithResults(on: queue, concurrency: concurrency) { process in
            try await handler(process)
            return nil
        }
    }

    /// Registers a worker and runs `handler` on `queue` in the background, storing what it
    /// returns as each task's result (see ``Worker/runWithResults(_:concurrency:handler:)``);
    /// returns a handle to stop it.
    ///
    /// ```swift
    /// let thumbnails = try await queue.startWorkerWithResults(on: "thumbnails") { process in
    ///     Array(try await makeThumbnail(of: process.string).utf8)   // the task's result
    /// }
    /// ```
    ///
    /// - Throws: what ``startWorker(on:concurrency:handler:)`` throws.
    public func startWorkerWithResults(
        on queue: String, concurrency: Int = 1, handler: @escaping @Sendable (WorkProcess) async throws -> [UInt8]?
    ) async throws -> RunningWorker {
        _ = try keys(queue)
        guard concurrency >= 1 else { throw RedisError.invalidArgument("concurrency must be at least 1") }
        let worker = try await startWorker()
        let task = Task { try await worker.runWithResults(queue, concurrency: concurrency, handler: handler) }
        return RunningWorker(worker: worker, task: task)
    }
}

/// A worker running in the background (``WorkQueue/startWorker(on:concurrency:handler:)``).
public struct RunningWorker: Sendable {
    /// The worker (its id, its in-flight processes).
    public let worker: Worker
    let task: Task<Void, any Error>

    /// Stops taking tasks, lets running handlers finish within `gracePeriod` (default
    /// ``WorkQueueOptions/shutdownGracePeriod``), returns the rest to the front of their
    /// queues, and deregisters the worker.
    ///
    /// - Throws: what the run loop ended with, such as ``WorkQueueError/Code/workerFailed``
    ///   when the worker had been declared dead.
    public func shutdown(gracePeriod: Duration? = nil) async throws {
        await worker.shutdown(gracePeriod: gracePeriod)
        try await task.value
    }

    /// Stops at once: running handlers are cancelled and their tasks go back.
    public func cancel() { task.cancel() }

    /// Waits until the worker stops (shut down, cancelled, or declared dead).
    public func wait() async throws { try await task.value }
}

/// One pending wake-up of a run loop, replaced by each dequeue.
final class WakeTimer: Sendable {
    private let pending = Mutex<Task<Void, Never>?>(nil)
    private let wake: @Sendable () -> Void

    init(wake: @escaping @Sendable () -> Void) {
        self.wake = wake
    }

    /// Wakes the loop after `delay` (replacing the wake-up pending); `nil` cancels it.
    func schedule(after delay: Duration?) {
        let next = delay.map { delay in
            Task { [wake] in
                do {
                    try await Task.sleep(for: delay)   // until a delayed task falls due
                    wake()
                } catch {}
            }
        }
        pending.withLock { pending in
            pending?.cancel()
            pending = next
        }
    }
}

/// The running handlers of one ``Worker/run(_:concurrency:handler:)`` loop.
final class RunControl: Sendable {
    /// Why a handler was cancelled, which decides what happens to its task.
    enum Stop: Sendable {
        /// A producer cancelled the task: finish it.
        case cancelledTask
        /// The queue was deleted: nothing to settle.
        case queueDeleted
        /// The worker was declared dead or stopped: its tasks were already given back.
        case workerGone
        /// Shutdown or cancellation of the loop: give the task back, not counted.
        case shutdown
    }

    private struct Running {
        let process: WorkProcess
        let task: Task<[UInt8]?, any Error>
        var reason: Stop?
    }

    private struct State {
        var running: [Int64: Running] = [:]
        var interrupted: [WorkProcess] = []
        var stopping = false
        var shuttingDown = false
        var gracePeriod: Duration?
        /// The loop stopped taking work: no handler is added any more.
        var draining = false
    }

    private let state = Mutex(State())
    /// Fires once the loop is draining and no handler runs.
    private let drained = OneShotSignal()
    /// Wakes the loop.
    private let wake: @Sendable () -> Void

    init(wake: @escaping @Sendable () -> Void) {
        self.wake = wake
    }

    var active: Int { state.withLock { $0.running.count } }
    var isStopping: Bool { state.withLock { $0.stopping } }
    var isShuttingDown: Bool { state.withLock { $0.shuttingDown } }
    /// The grace period a ``Worker/shutdown(gracePeriod:)`` asked for.
    var gracePeriod: Duration? { state.withLock { $0.gracePeriod } }

    func stop() { state.withLock { $0.stopping = true } }

    /// Stops taking work; running handlers get `gracePeriod` (`nil`: the options') to end.
    func shutDown(gracePeriod: Duration?) {
        state.withLock {
            $0.stopping = true
            $0.shuttingDown = true
            if let gracePeriod { $0.gracePeriod = gracePeriod }
        }
        wake()
    }

    func add(_ process: WorkProcess, _ task: Task<[UInt8]?, any Error>) {
        state.withLock { $0.running[process.number] = Running(process: process, task: task) }
    }

    /// Cancels the running handlers whose process matches (the first reason given wins).
    func cancel(_ reason: Stop, where matches: (WorkProcess) -> Bool) {
        let tasks = state.withLock { state -> [Task<[UInt8]?, any Error>] in
            var tasks: [Task<[UInt8]?, any Error>] = []
            for (number, running) in state.running where running.reason == nil && matches(running.process) {
                state.running[number]?.reason = reason
                tasks.append(running.task)
            }
            return tasks
        }
        for task in tasks { task.cancel() }
    }

    /// The processes whose handlers were interrupted by shutdown or cancellation.
    var interrupted: [WorkProcess] { state.withLock { $0.interrupted } }

    /// Forgets a handler that ended; returns why it was cancelled, if it was.
    func remove(_ number: Int64, result: Result<[UInt8]?, any Error>) -> Stop? {
        let (reason, idle) = state.withLock { state -> (Stop?, Bool) in
            let running = state.running.removeValue(forKey: number)
            let reason = running?.reason
            if let running, reason == .shutdown, case .failure = result { state.interrupted.append(running.process) }
            return (reason, state.draining && state.running.isEmpty)
        }
        if idle { drained.fire() }
        return reason
    }

    /// Once the loop stopped taking work: waits until no handler runs, or `limit` passes.
    func waitUntilIdle(upTo limit: Duration?) async {
        let idle = state.withLock { state -> Bool in
            state.draining = true
            return state.running.isEmpty
        }
        if idle { drained.fire() }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.drained.wait() }
            if let limit {
                group.addTask { try? await Task.sleep(for: limit) }
            }
            await group.next()
            group.cancelAll()
        }
    }
}
