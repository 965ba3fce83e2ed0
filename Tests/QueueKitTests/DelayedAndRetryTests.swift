import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct DelayedTaskTests {
    /// Nothing hands a delayed task out before its due time; the record's start time (the
    /// dequeue script's `TIME`) is at or after its due time.
    @Test func aDelayedTaskIsNotDequeuedBeforeItsDueTimeByTheServersClock() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "later", options: TaskOptions(delay: .milliseconds(800))).id
        let record = try #require(try await fixture.queue.task(name, id))
        #expect(record.state == .delayed)
        let due = try #require(record.dueAt).milliseconds
        #expect(try await fixture.queue.countQueue(name) == 0)
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        // Dequeue as fast as possible until it is handed out.
        var process: WorkProcess?
        while process == nil { process = try await worker.dequeue(name) }
        let started = try #require(try await fixture.queue.task(name, id)?.startedAt).milliseconds
        #expect(started >= due, "started at \(started), due at \(due) (server clock)")
        try await worker.finish(try #require(process))
    }

    @Test func aTaskDueInAnHourIsNotHandedOutAndIsCountedAsDelayed() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "later", options: TaskOptions(delay: .seconds(3600)))
        try await fixture.queue.enqueue(name, "past", options: TaskOptions(at: Date(timeIntervalSince1970: 0)))
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        #expect(try await worker.dequeue(name, max: 5).map(\.string) == ["past"])
        #expect(try await worker.dequeue(name) == nil)
        let state = try await fixture.queue.queueState(name)
        #expect(state.delayed == 1 && state.waiting == 0)
    }

    @Test func atSchedulesByTheServersClock() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let now = try await serverMilliseconds(fixture.client)
        let at = Date(timeIntervalSince1970: Double(now + 1500) / 1000)
        let id = try await fixture.queue.enqueue(name, "at", options: TaskOptions(at: at)).id
        // Delayed until `at`, unless a stalled machine enqueued it after that time.
        let due = try await fixture.queue.task(name, id)?.dueAt
        #expect(due == nil || due?.milliseconds == at.milliseconds)
        let done = Inbox<String>()
        let running = try await fixture.queue.startWorker(on: name) { done.put($0.taskID) }
        #expect(try await done.take(1, within: .seconds(30)) == [id])
        let record = try #require(try await fixture.queue.task(name, id))
        #expect(try #require(record.startedAt).milliseconds >= at.milliseconds)
        try await running.shutdown()
    }

    /// A run loop asleep until a task due in an hour is woken by a task due sooner (its poll
    /// interval is an hour too, so only the wake-up can explain the start).
    @Test func aSleepingWorkerIsWokenByAnEarlierDelayedTask() async throws {
        let fixture = try await QueueFixture.start { $0.pollInterval = .seconds(3600) }
        let name = uniqueName()
        let done = Inbox<String>()
        let running = try await fixture.queue.startWorker(on: name) { done.put($0.string) }
        try await fixture.queue.enqueue(name, "in an hour", options: TaskOptions(delay: .seconds(3600)))
        try await fixture.queue.enqueue(name, "soon", options: TaskOptions(delay: .milliseconds(300)))
        #expect(try await done.take(1, within: .seconds(30)) == ["soon"])
        #expect(try await fixture.queue.queueState(name).delayed == 1)
        try await running.shutdown()
    }

    /// 1,000 tasks delayed 0–2 s, 3 worker processes: none starts before its due time
    /// (server clock), each runs once. Prints the lateness p50/p99.
    @Test func aThousandDelayedTasksAcrossThreeProcessesNoneEarlyEachOnce() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let done = uniqueKey("done")
        let total = 1000
        var workers: [HelperProcess] = []
        for _ in 0..<3 {
            workers.append(try await spawnRunner(fixture, queue: name, concurrency: 8, done: done, total: total, handlerMilliseconds: 0))
        }
        var ids: [String] = []
        for index in 0..<total {
            let delay = Duration.milliseconds(Int64.random(in: 0...2000))
            ids.append(try await fixture.queue.enqueue(name, "task-\(index)", options: TaskOptions(delay: delay)).id)
        }
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        let counts = try await fixture.client.send("HVALS", done).decode([Int].self)
        #expect(counts.count == total && counts.allSatisfy { $0 == 1 })
        var lateness: [Int64] = []
        for id in ids {
            let record = try #require(try await fixture.queue.task(name, id))
            let started = try #require(record.startedAt).milliseconds
            if let due = record.dueAt?.milliseconds {
                #expect(started >= due, "task \(id) started \(due - started) ms early")
                lateness.append(started - due)
            }
        }
        lateness.sort()
        if !lateness.isEmpty {
            print("delayed-task lateness (server clock) p50 \(lateness[lateness.count / 2]) ms, p99 \(lateness[lateness.count * 99 / 100]) ms over \(lateness.count) delayed tasks")
        }
    }
}

/// The records a handler saw at the start of each attempt.
final class Attempts: Sendable {
    let log = Locked<[TaskInfo]>([])
}

@Suite struct RetryTests {
    /// Fails twice, then succeeds: three runs, each retry no earlier than the backoff after
    /// the failure before it (server clock).
    @Test func aHandlerThatFailsTwiceThenSucceedsRunsThreeTimesWithItsBackoff() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let backoff: Int64 = 400
        let id = try await fixture.queue.enqueue(name, "flaky", options: TaskOptions(
            retry: .fixed(attempts: 5, delay: .milliseconds(backoff), jitter: 0))).id
        let attempts = Attempts()
        let finished = Inbox<Int>()
        let queue = fixture.queue
        let running = try await fixture.queue.startWorker(on: name) { process in
            let record = try #require(try await queue.task(name, process.taskID))
            let count = attempts.log.withLock { log in
                log.append(record)
                return log.count
            }
            #expect(process.attempt == count)
            if count < 3 { throw Poison() }
            finished.put(count)
        }
        #expect(try await finished.take(1, within: .seconds(30)) == [3])
        let info = try await fixture.queue.waitUntilFinished(name, id, timeout: .seconds(30))
        #expect(info.state == .completed && info.attempts == 3)
        let log = attempts.log.withLock { $0 }
        #expect(log.map(\.attempts) == [1, 2, 3])
        for index in 1..<log.count {
            let previousStart = try #require(log[index - 1].startedAt).milliseconds
            let due = try #require(log[index].dueAt).milliseconds
            let started = try #require(log[index].startedAt).milliseconds
            #expect(due - previousStart >= backoff, "retry \(index) was due \(due - previousStart) ms after the attempt before")
            #expect(started >= due)
        }
        try await running.shutdown()
    }

    @Test func aTaskThatAlwaysFailsIsDeadLetteredAfterItsAttemptsWithItsLastError() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "doomed", options: TaskOptions(
            retry: .fixed(attempts: 3, delay: .milliseconds(20)))).id
        let runs = Locked(0)
        struct Numbered: Error, CustomStringConvertible { let run: Int; var description: String { "boom \(run)" } }
        let running = try await fixture.queue.startWorker(on: name) { _ in
            throw Numbered(run: runs.withLock { $0 += 1; return $0 })
        }
        let info = try await fixture.queue.waitUntilFinished(name, id, timeout: .seconds(30))
        #expect(info.state == .dead && info.attempts == 3 && info.lastError == "boom 3")
        let letters = try await fixture.queue.deadLetters(name)
        #expect(letters.map(\.id) == [id] && letters.first?.reason == "boom 3")
        try await running.shutdown()
        #expect(runs.withLock { $0 } == 3)
    }

    /// The wait after the n-th failure: base·2ⁿ⁻¹, at most the cap (no jitter here);
    /// checked against the server's clock around each failure.
    @Test func exponentialBackoffDoublesUpToItsCap() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "x", options: TaskOptions(
            retry: .exponential(attempts: 10, base: .milliseconds(100), cap: .milliseconds(300), jitter: 0))).id
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        for expected: Int64 in [100, 200, 300, 300] {
            var process: WorkProcess?
            while process == nil { process = try await worker.dequeue(name) }
            let before = try await serverMilliseconds(fixture.client)
            #expect(try await worker.fail(try #require(process), error: "no") == .retryLater)
            let after = try await serverMilliseconds(fixture.client)
            let due = try #require(try await fixture.queue.task(name, id)?.dueAt).milliseconds
            #expect(due - after <= expected && expected <= due - before, "expected a wait of \(expected) ms")
        }
    }

    /// A worker process killed with `kill -9` holding the task: its recovery counts an
    /// attempt, and the task waits out its backoff.
    @Test func aWorkerKilledMidTaskCountsAnAttempt() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "held", options: TaskOptions(
            retry: .fixed(attempts: 3, delay: .seconds(3600), jitter: 0))).id
        let holder = try HelperProcess(["queue-hold", fixture.redis.url, fixture.prefix, name, "1", "5000"])
        for await line in holder.lines { #expect(line == "held held"); break }
        #expect(try await fixture.queue.task(name, id)?.attempts == 1)
        holder.signal(SIGKILL)
        _ = await holder.exitStatus()
        var delayed = 0, requeued = 0
        try await eventually(timeout: .seconds(30), "the dead worker to be recovered") {
            let report = try await fixture.queue.recoverDeadWorkers()
            delayed += report.delayed
            requeued += report.requeued
            return !report.workers.isEmpty
        }
        #expect(delayed == 1 && requeued == 0)
        let record = try #require(try await fixture.queue.task(name, id))
        #expect(record.state == .delayed && record.attempts == 1)
        #expect(record.lastError?.contains("died") == true)
    }

    /// `stop` keeps worqr's meaning with a retry policy: back to the front, no attempt counted.
    @Test func stopCountsNoAttemptAndGoesToTheFront() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "first", options: TaskOptions(retry: .fixed(attempts: 1, delay: .seconds(60)))).id
        try await fixture.queue.enqueue(name, "second")
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        #expect(try await worker.stop(process) == .requeued)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["first", "second"])
        let record = try #require(try await fixture.queue.task(name, id))
        #expect(record.state == .waiting && record.attempts == 0)
    }

    @Test func aPermanentFailureFailsTheTaskForGood() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "bad input", options: TaskOptions(retry: .fixed(attempts: 5, delay: .zero))).id
        let running = try await fixture.queue.startWorker(on: name) { _ in throw PermanentFailure("malformed") }
        let info = try await fixture.queue.waitUntilFinished(name, id, timeout: .seconds(30))
        #expect(info.state == .failed && info.lastError == "malformed" && info.attempts == 1)
        #expect(try await fixture.queue.deadLetters(name).isEmpty)
        #expect(try await fixture.queue.queueState(name).failed == 1)
        try await running.shutdown()
    }

    /// The queue-wide default policy of the enqueuing instance applies to its tasks.
    @Test func theQueuesDefaultPolicyApplies() async throws {
        let fixture = try await QueueFixture.start { $0.retry = .fixed(attempts: 2, delay: .milliseconds(10)) }
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "t").id
        #expect(try await fixture.queue.task(name, id)?.hasRetryPolicy == true)
        let running = try await fixture.queue.startWorker(on: name) { _ in throw Poison() }
        let info = try await fixture.queue.waitUntilFinished(name, id, timeout: .seconds(30))
        #expect(info.state == .dead && info.attempts == 2)
        try await running.shutdown()
    }
}
