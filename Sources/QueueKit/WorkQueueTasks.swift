import Foundation
import Hiredis
import Logging

// Task records, waiting for outcomes, progress, pause and fleet-wide limits.
extension WorkQueue {
    // MARK: Task records

    /// What is known of task `id` of `queue` (its state, attempts, times by the server's
    /// clock, last error, result and progress), or `nil` when it has no record: never
    /// enqueued, cancelled, its queue deleted, or removed by retention
    /// (``WorkQueueOptions/completedRetention``).
    ///
    /// - Throws: `invalidArgument` for an empty queue name or id.
    public func task(_ queue: String, _ id: String) async throws -> TaskInfo? {
        let keys = try keys(queue)
        guard !id.isEmpty else { throw RedisError.invalidArgument("the task id must not be empty") }
        let reply = try await client.run(QueueScripts.taskInfo, keys: keys.all(), arguments: [id])
        if reply.isNull { return nil }
        guard case .array(let parts) = reply, parts.count == 4, case .array(let flat) = parts[0], flat.count % 2 == 0 else {
            throw RedisError(.wrongReplyType, "unexpected task reply")
        }
        var fields: [String: [UInt8]] = [:]
        for index in stride(from: 0, to: flat.count, by: 2) {
            fields[try flat[index].decode(String.self)] = try flat[index + 1].bytes()
        }
        func text(_ name: String) -> String? { fields[name].map { String(decoding: $0, as: UTF8.self) } }
        func time(_ name: String) -> Date? { text(name).flatMap { Int64($0) }.map { Date(redisMilliseconds: $0) } }
        guard let state = text("st").flatMap(TaskState.init(rawValue:)) else {
            throw RedisError(.wrongReplyType, "task \(id) of \(queue) has no state")
        }
        return TaskInfo(
            id: id, queue: queue, state: state, priority: text("pr").flatMap { Int($0) } ?? 0,
            attempts: text("at").flatMap { Int($0) } ?? 0,
            deliveries: try parts[2].decode(String?.self).flatMap { Int($0) } ?? 0,
            task: parts[1].isNull ? nil : try parts[1].bytes(),
            createdAt: time("ca"), startedAt: time("sa"), finishedAt: time("fa"), dueAt: time("du"),
            lastError: text("er"), result: fields["rs"], progress: fields["pg"].flatMap(TaskProgress.init(encoded:)),
            progressReports: text("pn").flatMap { Int($0) } ?? 0,
            hasRetryPolicy: fields["ra"] != nil)
    }

    /// Waits until task `id` of `queue` completed, failed or was dead-lettered, and returns
    /// its record; from any process. Finishes are announced over pub/sub (a wake-up); the
    /// record in Redis is the truth, re-read after every announcement, after a subscriber
    /// gap, and every ``WorkQueueOptions/pollInterval``.
    ///
    /// - Throws: ``WorkQueueError/Code/timedOut`` after `timeout`;
    ///   ``WorkQueueError/Code/taskNotFound`` when the task has no record (or loses it: it
    ///   was cancelled or its queue deleted); `CancellationError` when the calling task is
    ///   cancelled; `invalidArgument` for an empty id or a timeout that is not positive.
    public func waitUntilFinished(_ queue: String, _ id: String, timeout: Duration) async throws -> TaskInfo {
        guard timeout > .zero else { throw RedisError.invalidArgument("the timeout must be positive") }
        let changes = try await recordChanges(queue, id)
        return try await withThrowingTaskGroup(of: TaskInfo?.self) { group in
            group.addTask {
                try await Task.sleep(for: timeout)   // the deadline
                return nil
            }
            group.addTask {
                for try await info in changes where info.state.isFinal { return info }
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let info = first else {
                try Task.checkCancellation()
                throw WorkQueueError(.timedOut, "task \(id) of \(queue) did not finish within \(timeout)")
            }
            return info
        }
    }

    /// The progress of task `id` of `queue` as its handler reports it
    /// (``reportProgress(_:_:)``), observed from any process: the progress it has now (if
    /// any), then each later report, oldest first. Reports that come faster than this
    /// observer reads them are merged into the newest (never an older one after a newer).
    /// The sequence ends when the task completes, fails or is dead-lettered, after the last
    /// report made before that; it throws ``WorkQueueError/Code/taskNotFound`` when the task
    /// has no record or loses it. It is subscribed before this returns: no report made
    /// after the call is missed. Stop iterating (or cancel the iterating task) to stop
    /// observing.
    ///
    /// - Throws: ``WorkQueueError/Code/taskNotFound`` when the task has no record;
    ///   `invalidArgument` for an empty queue name or id.
    public func progressUpdates(_ queue: String, _ id: String) async throws -> AsyncThrowingStream<TaskProgress, any Error> {
        let changes = try await recordChanges(queue, id)
        return AsyncThrowingStream { continuation in
            let observer = Task {
                var seen = 0
                do {
                    for try await info in changes {
                        if info.progressReports > seen, let progress = info.progress {
                            seen = info.progressReports
                            continuation.yield(progress)
                        }
                        if info.state.isFinal { break }
                    }
                    continuation.finish()
                } catch {
                    continuation.finish(throwing: error)
                }
            }
            continuation.onTermination = { _ in observer.cancel() }
        }
    }

    /// Task `id`'s record now, then again after each announced change of it, after a
    /// subscriber gap and every ``WorkQueueOptions/pollInterval`` (pub/sub is a wake-up; the
    /// record in Redis is the truth). Subscribed (and confirmed) and the task marked as
    /// watched before this returns, so no change made after the call is missed; the sequence
    /// throws ``WorkQueueError/Code/taskNotFound`` when the record goes away, and runs until
    /// its iterator is dropped or its task cancelled.
    private func recordChanges(_ queue: String, _ id: String) async throws -> AsyncThrowingStream<TaskInfo, any Error> {
        let keys = try keys(queue)
        guard !id.isEmpty else { throw RedisError.invalidArgument("the task id must not be empty") }
        let subscription = try await subscriber.subscribe([keys.doneChannel])
        let watched = try await client.run(QueueScripts.watch, keys: keys.all(), arguments: [id]).decode(Int.self)
        guard watched == 1 else { throw WorkQueueError(.taskNotFound, "no task \(id) in \(queue)") }
        let suffix = Array((":" + id).utf8)
        let recheck = options.pollInterval
        let (nudges, nudge) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        nudge.yield()
        return AsyncThrowingStream { continuation in
            let reader = Task {
                // Three children: the subscription's wake-ups, the timer's, and the reader of
                // the record, which alone ends the sequence (it returns `true`).
                await withTaskGroup(of: Bool.self) { group in
                    group.addTask {
                        do {
                            for try await event in subscription {
                                switch event {
                                case .gap: nudge.yield()
                                case .message(let message):
                                    let payload = message.payload
                                    if payload.first == UInt8(ascii: "!"), payload.count > suffix.count,
                                       payload.suffix(suffix.count).elementsEqual(suffix) {
                                        nudge.yield()
                                    }
                                }
                            }
                        } catch {}
                        return false   // the subscription ended: the timer still re-reads the record
                    }
                    group.addTask {
                        while (try? await Task.sleep(for: recheck)) != nil { nudge.yield() }
                        return false
                    }
                    group.addTask {
                        do {
                            for await _ in nudges {
                                try Task.checkCancellation()
                                guard let info = try await self.task(queue, id) else {
                                    throw WorkQueueError(.taskNotFound, "task \(id) of \(queue) is gone (cancelled, or its queue deleted)")
                                }
                                continuation.yield(info)
                            }
                        } catch {
                            continuation.finish(throwing: error)
                        }
                        return true
                    }
                    while let readerEnded = await group.next(), !readerEnded {}
                    group.cancelAll()
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in
                reader.cancel()
                nudge.finish()
            }
        }
    }

    /// Records how far the handler of `process` got; producers read it with
    /// ``task(_:_:)`` (and waiters of the task are nudged). Any instance may report for any
    /// process by its value; ownership is checked inside Redis.
    ///
    /// - Throws: ``WorkQueueError/Code/processNotOwned`` when the process is not in flight
    ///   any more (finished, given back, recovered, or its task cancelled);
    ///   `invalidArgument` for bytes over 512 MiB.
    public func reportProgress(_ process: WorkProcess, _ progress: TaskProgress) async throws {
        let keys = try keys(process.queue)
        let encoded = progress.encoded
        try validateTask(encoded)
        let reply = try await client.run(QueueScripts.progress, keys: keys.all(worker: process.worker),
                                         arguments: [process.number, encoded, keys.doneChannel]).decode(Int.self)
        guard reply == 1 else { throw WorkQueueError(.processNotOwned, "\(process.id) is not in flight") }
    }

    // MARK: Pause and limits

    /// Pauses `queue` for the whole fleet: every worker's next dequeue takes nothing; running
    /// tasks finish as usual; enqueues still land. Kept in Redis (it survives restarts of
    /// workers and producers) and shown by ``queueState(_:)``.
    public func pause(_ queue: String) async throws {
        let keys = try keys(queue)
        try await client.run(QueueScripts.setPaused, keys: keys.all(), arguments: [keys.channel, "1"])
        logger.notice("queue paused", metadata: ["queue": "\(queue)"])
    }

    /// Resumes a paused `queue` and wakes its workers (`work`).
    public func resume(_ queue: String) async throws {
        let keys = try keys(queue)
        try await client.run(QueueScripts.setPaused, keys: keys.all(), arguments: [keys.channel, "0"])
        logger.notice("queue resumed", metadata: ["queue": "\(queue)"])
    }

    /// Sets the fleet-wide limits of `queue` (kept in Redis, enforced by the dequeue script
    /// for every worker): at most `limits.rate` starts per interval and at most
    /// `limits.concurrency` tasks in flight. `nil` fields remove that limit. Workers are woken.
    ///
    /// - Throws: `invalidArgument` for a count or concurrency below 1, an interval under 1 ms.
    public func setLimits(_ queue: String, _ limits: QueueLimits) async throws {
        let keys = try keys(queue)
        try limits.validate()
        try await client.run(QueueScripts.setLimits, keys: keys.all(), arguments: [
            keys.channel, limits.rate.map { String($0.count) } ?? "", limits.rate.map { String($0.interval.redisMilliseconds) } ?? "",
            limits.concurrency.map { String($0) } ?? "",
        ])
    }

    /// `queue`'s pause state, limits and counts, read in one script.
    public func queueState(_ queue: String) async throws -> QueueState {
        let keys = try keys(queue)
        let reply = try await client.run(QueueScripts.queueState, keys: keys.all())
        guard case .array(let parts) = reply, parts.count == 10 else { throw RedisError(.wrongReplyType, "unexpected queue state") }
        func number(_ index: Int) throws -> Int64? { try parts[index].decode(String?.self).flatMap { Int64($0) } }
        let rate = try number(1).flatMap { count in
            try number(2).map { RateLimit(Int(count), per: .milliseconds($0)) }
        }
        return QueueState(
            pausedSince: try number(0).map { Date(redisMilliseconds: $0) },
            limits: QueueLimits(rate: rate, concurrency: try number(3).map { Int($0) }),
            waiting: try parts[4].decode(Int.self), delayed: try parts[5].decode(Int.self), active: try parts[6].decode(Int.self),
            dead: try parts[7].decode(Int.self), completed: try parts[8].decode(Int.self), failed: try parts[9].decode(Int.self))
    }
}
