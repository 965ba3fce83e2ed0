import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `queue-take` helper process: a worker in another OS process that took one task.
struct TakingWorker {
    let helper: HelperProcess
    let processID: String
    var lines: AsyncStream<String>.AsyncIterator

    static func spawn(_ fixture: QueueFixture, queue: String, go: String, result: String = "",
                      permanent: Bool = false) async throws -> TakingWorker {
        let helper = try HelperProcess(["queue-take", fixture.redis.url, fixture.prefix, queue, go, result]
            + (permanent ? ["permanent"] : []))
        var lines = helper.lines.makeAsyncIterator()
        guard let line = await lines.next(), line.hasPrefix("process ") else {
            throw TestSupportError("the queue-take helper did not take a task")
        }
        return TakingWorker(helper: helper, processID: String(line.dropFirst("process ".count)), lines: lines)
    }

    mutating func nextLine() async -> String? { await lines.next() }
}

extension WorkCompletions {
    /// The next completion, or `nil` when none arrives within `timeout`.
    func next(within timeout: Duration = .seconds(10)) async throws -> CompletionEvent? {
        let completions = self
        return try await RedisTestSupport.within(timeout) {
            var iterator = completions.makeAsyncIterator()
            return try await iterator.next()
        } ?? nil
    }
}

@Suite struct WorqrParityTests {
    // MARK: Completion events and control by process id

    @Test func aProducerAwaitsTheCompletionOfItsTaskWithTheResultFromAWorkerProcess() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        // Subscribe first, then enqueue: nothing can be missed.
        let completions = try await fixture.queue.completions(name)
        try await fixture.queue.enqueue(name, "resize img-42")
        var worker = try await TakingWorker.spawn(fixture, queue: name, go: "-", result: "thumb-42.png")
        #expect(await worker.nextLine() == "finished")
        guard case .completed(let done)? = try await completions.next() else {
            Issue.record("no completion arrived")
            return
        }
        #expect(done.processID == worker.processID)
        #expect(done.queue == name)
        #expect(done.string == "resize img-42")
        #expect(done.resultString == "thumb-42.png")
        #expect(worker.processID.contains("/\(done.worker)/"))
    }

    @Test func aControllerFinishesATaskThatAWorkerProcessDequeued() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let go = uniqueKey("go")
        let completions = try await fixture.queue.completions(name)
        try await fixture.queue.enqueue(name, ["job-1", "job-2"])
        var worker = try await TakingWorker.spawn(fixture, queue: name, go: go)
        // This process is the controller: it finishes the other process's task by id.
        let controller = try await fixture.peer()
        try await controller.finishProcess(worker.processID, result: "approved")
        guard case .completed(let done)? = try await completions.next() else {
            Issue.record("no completion arrived")
            return
        }
        #expect(done.processID == worker.processID)
        #expect(done.string == "job-1")
        #expect(done.result.map { String(decoding: $0, as: UTF8.self) } == "approved")
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["job-2"])
        // Finishing it again, from anywhere, is refused in Redis; so is the worker's own finish.
        await #expect { try await controller.finishProcess(worker.processID) } throws: {
            ($0 as? WorkQueueError)?.code == .processNotOwned
        }
        try await fixture.client.send("SET", go, "1")
        #expect(await worker.nextLine() == "finish refused")
    }

    @Test func stopProcessByIDPutsTheTaskBackAtTheFront() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["first", "second"])
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        let outcome = try await fixture.peer().stopProcess(process.id, reason: "operator")
        #expect(outcome == .requeued)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["first", "second"])
        await #expect { try await worker.finish(process) } throws: { ($0 as? WorkQueueError)?.code == .processNotOwned }
        await #expect { try await fixture.queue.stopProcess(process.id) } throws: {
            ($0 as? WorkQueueError)?.code == .processNotOwned
        }
    }

    @Test func malformedProcessIDsAreRefusedBeforeAnythingIsSent() async throws {
        let fixture = try await QueueFixture.start()
        for id in ["", "nope", "q/5", "/w/5", "q//5", "q/w/x", "q%zz/w/1"] {
            await #expect { try await fixture.queue.finishProcess(id) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
            await #expect { try await fixture.queue.stopProcess(id) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
        #expect(try await fixture.keys().isEmpty)
    }

    // MARK: Workers

    @Test func aPermanentWorkerIsNeverRecoveredByPeersAndLeavesWhenAnOperatorFailsIt() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "long-lived connection")
        let worker = try await TakingWorker.spawn(fixture, queue: name, go: "-", permanent: true)
        let workerID = String(worker.processID.split(separator: "/")[1])
        worker.helper.signal(SIGKILL)
        _ = await worker.helper.exitStatus()
        // Its heartbeat has no expiry: peers never declare it dead.
        let heartbeat = "{\(fixture.prefix)}:heartbeat:\(workerID)"
        #expect(try await fixture.client.send("PTTL", heartbeat).decode(Int.self) == -1)
        let report = try await fixture.queue.recoverDeadWorkers()
        #expect(report.workers.isEmpty)
        #expect(try await fixture.queue.getProcesses(name).map(\.string) == ["long-lived connection"])
        // An operator fails it: its task goes back, it is deregistered.
        let failed = try await fixture.peer().failWorker(workerID)
        #expect(failed.workers == [workerID])
        #expect(failed.requeued == 1)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["long-lived connection"])
        #expect(try await !fixture.queue.getWorkers().contains(workerID))
        await #expect { try await fixture.queue.failWorker(workerID) } throws: {
            ($0 as? WorkQueueError)?.code == .unknownWorker
        }
    }

    @Test func aWorkerFailedByAnOperatorLearnsItAndItsTasksGoBack() async throws {
        let fixture = try await QueueFixture.start { $0.heartbeatInterval = .milliseconds(100) }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["a", "b"])
        let worker = try await fixture.queue.startWorker()
        let id = await worker.id
        let events = try await worker.startWork(name)
        _ = try await worker.dequeue(name, max: 2)
        let report = try await fixture.peer().failWorker(id)
        // The tasks are back when it returns, whether the operator's call gave them back or
        // the worker itself did, having seen its heartbeat gone first.
        #expect(report.workers == [id])
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["a", "b"])
        #expect(await events.nextSkippingWork(within: .seconds(10)) == .failed(worker: id))
        await #expect { try await worker.dequeue(name) } throws: { ($0 as? WorkQueueError)?.code == .workerFailed }
    }

    @Test func requestWorkRepublishesTheWorkEvent() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["x", "y"])
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(name)
        #expect(await events.next() == .work(2))   // the queue held tasks at startWork
        #expect(try await fixture.peer().requestWork(name) == 2)
        #expect(await events.next() == .work(2))
    }

    // MARK: Names and unique batches

    @Test(arguments: ["emails:high", "tenant{42}", "a}b{c", "with spaces", "ünïcødé ✓ 日本", "100%", "a/b/c", "%3A"])
    func anyQueueNameRoundTrips(_ name: String) async throws {
        let fixture = try await QueueFixture.start()
        let completions = try await fixture.queue.completions(name)
        try await fixture.queue.enqueue(name, ["one", "two"])
        #expect(try await fixture.queue.getQueues() == [name])
        #expect(try await fixture.queue.countQueue(name) == 2)
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        #expect(try await fixture.queue.getWorkingQueues(await worker.id) == [name])
        let process = try #require(try await worker.dequeue(name))
        #expect(process.queue == name)
        #expect(process.string == "one")
        try await fixture.queue.finishProcess(process.id, result: "ok")
        guard case .completed(let done)? = try await completions.next() else {
            Issue.record("no completion for \(name)")
            return
        }
        #expect(done.queue == name)
        #expect(done.string == "one")
        // Every key of the queue shares one hash tag: one cluster slot.
        let tags = Set(try await fixture.keys().filter { !$0.hasPrefix("{\(fixture.prefix)}") }.map { key in
            String(key[key.index(after: key.startIndex)..<key.firstIndex(of: "}")!])
        })
        #expect(tags.count == 1)
        try await fixture.queue.deleteQueue(name)
        #expect(try await fixture.queue.getQueues().isEmpty)
    }

    @Test func namesThatLookLikeKeySuffixesDoNotCollide() async throws {
        let fixture = try await QueueFixture.start()
        // Unencoded, the first queue's keys would start like the second queue's.
        try await fixture.queue.enqueue("a}:queue", "mine")
        try await fixture.queue.enqueue("a", "theirs")
        #expect(try await fixture.queue.getTasks("a").map(\.string) == ["theirs"])
        #expect(try await fixture.queue.getTasks("a}:queue").map(\.string) == ["mine"])
        #expect(try await fixture.queue.getQueues() == ["a", "a}:queue"])
    }

    @Test func aUniqueBatchSkipsDuplicatesAndSaysWhich() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "b", unique: true)
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(name)
        #expect(await events.next() == .work(1))
        let result = try await fixture.queue.enqueue(name, ["a", "b", "c", "a"], unique: true)
        #expect(result.enqueued == [0, 2])
        #expect(result.skipped == [1, 3])
        #expect(result.length == 3)
        #expect(await events.next() == .work(2))   // the work event counts what was enqueued
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["b", "a", "c"])
        // A batch of nothing but duplicates enqueues nothing and publishes nothing.
        let none = try await fixture.queue.enqueue(name, ["a", "c"], unique: true)
        #expect(none.enqueued.isEmpty)
        #expect(none.skipped == [0, 1])
        #expect(try await fixture.queue.countQueue(name) == 3)
    }

    @Test func aStrictUniqueBatchIsAllOrNothing() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "b", unique: true)
        await #expect { try await fixture.queue.enqueue(name, ["a", "b", "c"], unique: true, duplicates: .fail) } throws: {
            ($0 as? WorkQueueError)?.code == .duplicateTask
        }
        await #expect { try await fixture.queue.enqueue(name, ["d", "d"], unique: true, duplicates: .fail) } throws: {
            ($0 as? WorkQueueError)?.code == .duplicateTask
        }
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["b"])
    }

    // MARK: Lifecycle

    @Test func shutdownLetsRunningHandlersFinishReturnsTheRestAndDeregisters() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["quick", "stuck"])
        let completions = try await fixture.queue.completions(name)
        let started = Latch(count: 2)
        let release = Latch(count: 1)
        let stuckCancelled = Latch(count: 1)
        let running = try await fixture.queue.startWorker(on: name, concurrency: 2) { process in
            started.arrive()
            if process.string == "quick" {
                await release.wait()
            } else {
                do { try await untilCancelled() } catch { stuckCancelled.arrive(); throw error }
            }
        }
        let id = await running.worker.id
        await started.wait()
        // 8 s: the quick handler ends within it even on a machine that stalls for seconds.
        let shutdown = Task { try await running.shutdown(gracePeriod: .seconds(8)) }
        release.arrive()
        try await shutdown.value
        await stuckCancelled.wait()
        // The quick task was finished; the stuck one went back to the front, uncounted.
        guard case .completed(let done)? = try await completions.next() else {
            Issue.record("the quick task was not finished")
            return
        }
        #expect(done.string == "quick")
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["stuck"])
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        #expect(try await !fixture.queue.getWorkers().contains(id))
        #expect(await !running.worker.isRunning)
    }

    @Test func runDeregistersTheWorkerWhenItEnds() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let worker = try await fixture.queue.startWorker()
        let id = await worker.id
        let run = Task { try await worker.run(name) { _ in } }
        try await eventually("the worker works on the queue") {
            try await fixture.queue.getWorkingQueues(id) == [name]
        }
        run.cancel()
        _ = await run.result   // ended by cancellation, whether at start-up or in its loop
        #expect(try await !fixture.queue.getWorkers().contains(id))
        #expect(await !worker.isRunning)
    }
}
