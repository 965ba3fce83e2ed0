import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The server's clock in ms (`TIME`).
func serverMilliseconds(_ client: any RedisClient) async throws -> Int64 {
    let parts = try await client.send("TIME").decode([String].self)
    return Int64(parts[0])! * 1000 + Int64(parts[1])! / 1000
}

extension Date {
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}

/// The `hiredis-test-helper` command `queue-<name>` (QueueCommands.swift).
func queueHelper(_ name: String, _ redis: TestRedis, _ arguments: [String]) throws -> HelperProcess {
    try HelperProcess(["queue-" + name, redis.url] + arguments)
}

/// Spawns a `queue-run` helper and waits for its "worker <id>" line.
func spawnRunner(_ fixture: QueueFixture, queue: String, concurrency: Int, done: String, total: Int,
                 handlerMilliseconds: Int) async throws -> HelperProcess {
    let helper = try queueHelper("run", fixture.redis, [fixture.prefix, queue, "\(concurrency)", done, "\(total)",
                                                         "\(handlerMilliseconds)"])
    for await line in helper.lines {
        guard line.hasPrefix("worker ") else { throw TestSupportError("the worker process said \(line)") }
        return helper
    }
    throw TestSupportError("the worker process did not start")
}

@Suite struct TaskRecordTests {
    @Test func everyEnqueueReturnsAnIDAndTaskShowsItsLifeByTheServersClock() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let before = try await serverMilliseconds(fixture.client)
        let id = try await fixture.queue.enqueue(name, "resize").id
        #expect(!id.isEmpty)
        let waiting = try #require(try await fixture.queue.task(name, id))
        #expect(waiting.state == .waiting && waiting.attempts == 0 && waiting.task == Array("resize".utf8))
        #expect(try #require(waiting.createdAt).milliseconds >= before)

        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        #expect(process.taskID == id)
        let active = try #require(try await fixture.queue.task(name, id))
        #expect(active.state == .active && active.attempts == 1 && active.deliveries == 1)
        try await worker.finish(process, result: "800x600")
        let done = try #require(try await fixture.queue.task(name, id))
        #expect(done.state == .completed)
        #expect(done.resultString == "800x600")
        #expect(done.task == nil)
        let created = try #require(done.createdAt), started = try #require(done.startedAt), finished = try #require(done.finishedAt)
        #expect(created <= started && started <= finished)
    }

    @Test func batchIDsAreReturnedPositionByPosition() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let result = try await fixture.queue.enqueue(name, ["a", "b", "a", "c"], unique: true)
        #expect(result.skipped == [2])
        #expect(result.ids[2] == "")
        for position in [0, 1, 3] {
            #expect(try await fixture.queue.task(name, result.ids[position])?.task == Array(["a", "b", "a", "c"][position].utf8))
        }
        #expect(Set(result.ids).count == 4)
    }

    @Test func aCallersIDThatExistsIsReportedNotDuplicated() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let first = try await fixture.queue.enqueue(name, "charge", options: TaskOptions(id: "order-7"))
        #expect(first.id == "order-7" && first.skipped.isEmpty)
        let again = try await fixture.queue.enqueue(name, "charge twice", options: TaskOptions(id: "order-7"))
        #expect(again.skipped == [0] && again.id == "order-7")
        await #expect { try await fixture.queue.enqueue(name, "x", duplicates: .fail, options: TaskOptions(id: "order-7")) } throws: {
            ($0 as? WorkQueueError)?.code == .duplicateTask
        }
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["charge"])
        // Completed, its record is kept, and the id stays taken.
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        try await worker.finish(try #require(try await worker.dequeue(name)))
        #expect(try await fixture.queue.enqueue(name, "charge", options: TaskOptions(id: "order-7")).skipped == [0])
        #expect(try await fixture.queue.countQueue(name) == 0)
    }

    @Test func badTaskOptionsAreRefusedBeforeAnythingIsSent() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let bad: [TaskOptions] = [
            TaskOptions(delay: .milliseconds(-1)),
            TaskOptions(delay: .seconds(1), at: Date()),
            TaskOptions(id: ""),
            TaskOptions(id: "12345"),
            TaskOptions(id: String(repeating: "x", count: 1025)),
            TaskOptions(priority: 1_000_001),
            TaskOptions(retry: .fixed(attempts: 0, delay: .seconds(1))),
            TaskOptions(retry: .exponential(attempts: 3, base: .zero)),
            TaskOptions(retry: .exponential(attempts: 3, base: .seconds(2), cap: .seconds(1))),
            TaskOptions(retry: .fixed(attempts: 3, delay: .seconds(1), jitter: 1.5)),
        ]
        for options in bad {
            await #expect("\(options)") { try await fixture.queue.enqueue(name, "t", options: options) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
        await #expect { try await fixture.queue.enqueue(name, ["a", "b"], options: TaskOptions(id: "two")) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        for limits in [QueueLimits(rate: RateLimit(0, per: .seconds(1))), QueueLimits(rate: RateLimit(5, per: .zero)),
                       QueueLimits(concurrency: 0)] {
            await #expect { try await fixture.queue.setLimits(name, limits) } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        }
        await #expect { try await fixture.queue.waitUntilFinished(name, "", timeout: .seconds(1)) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        await #expect { try await fixture.queue.waitUntilFinished(name, "a", timeout: .zero) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        var options = fixture.options
        options.retry = RetryPolicy(attempts: 0, backoff: .fixed(.seconds(1)))
        #expect(throws: RedisError.self) { try WorkQueue(client: fixture.client, subscriber: fixture.queue.subscriber, options: options) }
        #expect(try await fixture.keys().isEmpty)
    }

    /// A producer process awaits the outcome of a task that a worker in this process
    /// finishes with a result.
    @Test func aProducerInAnotherProcessAwaitsTheResult() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "thumbnail").id
        let producer = try queueHelper("await", fixture.redis, [fixture.prefix, name, id, "30000"])
        var lines = producer.lines.makeAsyncIterator()
        #expect(await lines.next() == "waiting")
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        try await worker.finish(process, result: "thumb.png")
        #expect(await lines.next() == "completed thumb.png")
        #expect(await producer.exitStatus() == 0)
    }

    /// The value a `startWorkerWithResults` handler returns is the task's result, seen by
    /// a producer awaiting it in another process; a `nil` return stores none.
    @Test func aResultHandlersReturnValueIsTheResultAProducerAwaits() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "cat.jpg").id
        let plain = try await fixture.queue.enqueue(name, "no-result").id
        let producer = try queueHelper("await", fixture.redis, [fixture.prefix, name, id, "30000"])
        var lines = producer.lines.makeAsyncIterator()
        #expect(await lines.next() == "waiting")
        let running = try await fixture.queue.startWorkerWithResults(on: name) { process in
            process.string == "no-result" ? nil : Array("thumb-of-\(process.string)".utf8)
        }
        #expect(await lines.next() == "completed thumb-of-cat.jpg")
        #expect(await producer.exitStatus() == 0)
        let finished = try await fixture.queue.waitUntilFinished(name, plain, timeout: .seconds(30))
        #expect(finished.state == .completed && finished.result == nil)
        try await running.shutdown()
    }

    @Test func awaitingATaskThatDoesNotFinishTimesOut() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "slow").id
        await #expect { try await fixture.queue.waitUntilFinished(name, id, timeout: .milliseconds(200)) } throws: {
            ($0 as? WorkQueueError)?.code == .timedOut
        }
        await #expect { try await fixture.queue.waitUntilFinished(name, "no-such-task", timeout: .seconds(5)) } throws: {
            ($0 as? WorkQueueError)?.code == .taskNotFound
        }
    }

    @Test func cancellingTheWaiterEndsTheWait() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "slow").id
        let queue = fixture.queue
        let waiter = Task { try await queue.waitUntilFinished(name, id, timeout: .seconds(3600)) }
        waiter.cancel()
        let result = await waiter.result
        #expect(throws: CancellationError.self) { try result.get() }
    }

    /// An awaited task that is dead-lettered ends the wait with its state and error.
    @Test func awaitingADeadLetteredTaskReturnsItsError() async throws {
        let fixture = try await QueueFixture.start { $0.maxDeliveries = 1 }
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "poison").id
        let waiter = Task { try await fixture.peer().waitUntilFinished(name, id, timeout: .seconds(30)) }
        let running = try await fixture.queue.startWorker(on: name) { _ in throw Poison() }
        let info = try await waiter.value
        #expect(info.state == .dead)
        #expect(info.lastError == "poisoned task")
        try await running.shutdown(gracePeriod: .seconds(1))
    }

    /// A handler reports progress step by step; the producer sees each step, in order.
    @Test func taskShowsTheLatestProgressAndRefusesReportsAfterTheFinish() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "upload").id
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        let producer = try await fixture.peer()
        #expect(try await producer.task(name, id)?.progress == nil)
        for step in [0.25, 0.5, 1.0] {
            try await fixture.queue.reportProgress(process, .number(step))
            #expect(try await producer.task(name, id)?.progress == .number(step))
        }
        try await fixture.queue.reportProgress(process, .bytes(Array("3/3 parts".utf8)))
        #expect(try await producer.task(name, id)?.progress == .bytes(Array("3/3 parts".utf8)))
        try await worker.finish(process)
        await #expect { try await fixture.queue.reportProgress(process, .number(2)) } throws: {
            ($0 as? WorkQueueError)?.code == .processNotOwned
        }
        #expect(try await producer.task(name, id)?.progress == .bytes(Array("3/3 parts".utf8)))
    }

    /// A producer in another process observes the handler's reports, never an older one
    /// after a newer, the last one always, and its sequence ends when the task completes.
    @Test func aProducerInAnotherProcessObservesProgressInOrder() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let id = try await fixture.queue.enqueue(name, "upload").id
        let producer = try queueHelper("progress", fixture.redis, [fixture.prefix, name, id])
        var lines = producer.lines.makeAsyncIterator()
        #expect(await lines.next() == "watching")
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        for step in 1...20 { try await fixture.queue.reportProgress(process, .number(Double(step))) }
        try await fixture.queue.reportProgress(process, .bytes(Array("uploaded".utf8)))
        try await worker.finish(process)
        var numbers: [Double] = []
        var rest: [String] = []
        while let line = await lines.next() {
            if line.hasPrefix("progress "), let number = Double(line.dropFirst("progress ".count)) {
                #expect(rest.isEmpty, "a number after \(rest)")
                numbers.append(number)
            } else {
                rest.append(line)
            }
        }
        #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count, "out of order: \(numbers)")
        #expect(numbers.allSatisfy { (1...20).contains($0) })
        #expect(rest == ["progress bytes uploaded", "end completed"])
        #expect(await producer.exitStatus() == 0)
    }

    @Test func observingTheProgressOfAnUnknownTaskIsTaskNotFound() async throws {
        let fixture = try await QueueFixture.start()
        await #expect { _ = try await fixture.queue.progressUpdates(uniqueName(), "no-such-task") } throws: {
            ($0 as? WorkQueueError)?.code == .taskNotFound
        }
    }

    @Test func retentionKeepsTheNewestCompletedRecords() async throws {
        let fixture = try await QueueFixture.start { $0.completedRetention = TaskRetention(maxAge: .seconds(3600), maxCount: 3) }
        let name = uniqueName()
        let ids = try await fixture.queue.enqueue(name, (0..<10).map { "t\($0)" }).ids
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        for process in try await worker.dequeue(name, max: 10) { try await worker.finish(process) }
        for id in ids.prefix(7) { #expect(try await fixture.queue.task(name, id) == nil) }
        for id in ids.suffix(3) { #expect(try await fixture.queue.task(name, id)?.state == .completed) }
        #expect(try await fixture.queue.queueState(name).completed == 3)
    }

    @Test func retentionRemovesRecordsOlderThanTheirMaxAge() async throws {
        let fixture = try await QueueFixture.start { $0.completedRetention = TaskRetention(maxAge: .milliseconds(5), maxCount: 100) }
        let name = uniqueName()
        let old = try await fixture.queue.enqueue(name, "old").id
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        try await worker.finish(try #require(try await worker.dequeue(name)))
        let finished = try #require(try await fixture.queue.task(name, old)?.finishedAt).milliseconds
        // The server's clock moves past the record's age limit (a wait on the server's time).
        try await eventually(timeout: .seconds(30), "the server's clock to pass the age limit") {
            try await serverMilliseconds(fixture.client) > finished + 6
        }
        let new = try await fixture.queue.enqueue(name, "new").id
        try await worker.finish(try #require(try await worker.dequeue(name)))
        #expect(try await fixture.queue.task(name, old) == nil)
        #expect(try await fixture.queue.task(name, new)?.state == .completed)
    }

    @Test func deleteQueueRemovesTheRecords() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["a", "b"])
        try await fixture.queue.enqueue(name, "later", options: TaskOptions(delay: .seconds(60), priority: 3))
        try await fixture.queue.enqueue(name, "high", options: TaskOptions(priority: 3))
        try await fixture.queue.pause(name)
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        try await fixture.queue.resume(name)
        try await worker.finish(try #require(try await worker.dequeue(name)))
        try await fixture.queue.deleteQueue(name)
        try await worker.failWorker()
        #expect(try await fixture.keys().filter { !$0.hasSuffix(":seq") && !$0.hasSuffix(":owners") }.isEmpty)
    }
}
