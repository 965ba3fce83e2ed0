import Foundation
import Hiredis
import MetricsTestKit
import QueueKit
import RedisTestSupport
import ServiceLifecycle
import ServiceLifecycleTestKit
import Synchronization
import Testing

/// Values handed from handlers to the test, in order.
final class Inbox<Value: Sendable>: Sendable {
    let stream: AsyncStream<Value>
    private let continuation: AsyncStream<Value>.Continuation
    init() { (stream, continuation) = AsyncStream<Value>.makeStream() }
    func put(_ value: Value) { continuation.yield(value) }
    /// The next `count` values (fails the test when they do not arrive within `timeout`).
    func take(_ count: Int, within timeout: Duration = .seconds(10)) async throws -> [Value] {
        let stream = self.stream
        let taken = try await within(timeout) {
            var taken: [Value] = []
            for await value in stream {
                taken.append(value)
                if taken.count == count { break }
            }
            return taken
        }
        guard let taken, taken.count == count else { throw TestSupportError("\(count) values did not arrive within \(timeout)") }
        return taken
    }
}

struct Poison: Error, CustomStringConvertible {
    var description: String { "poisoned task" }
}

@Suite struct DeadLetterTests {
    @Test func aTaskStoppedMaxDeliveriesTimesIsDeadLettered() async throws {
        let fixture = try await QueueFixture.start { $0.maxDeliveries = 2 }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["poison", "fine"])
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let first = try #require(try await worker.dequeue(name))
        #expect(try await worker.stop(first, reason: "boom 1") == .requeued)
        let second = try #require(try await worker.dequeue(name))
        #expect(second.string == "poison" && second.deliveries == 2)
        #expect(try await worker.stop(second, reason: "boom 2") == .deadLettered)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["fine"])
        let dead = try await fixture.queue.deadLetters(name)
        #expect(dead.map(\.string) == ["poison"])
        #expect(dead.first?.deliveries == 2)
        #expect(dead.first?.reason == "boom 2")
    }

    @Test func deadLettersCanBeRetriedWithAFreshCountOrPurged() async throws {
        let fixture = try await QueueFixture.start { $0.maxDeliveries = 1 }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["a", "b"])
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        for _ in 0..<2 {
            let process = try #require(try await worker.dequeue(name))
            #expect(try await worker.stop(process) == .deadLettered)
        }
        let dead = try await fixture.queue.deadLetters(name)
        #expect(dead.map(\.string) == ["a", "b"])
        #expect(try await fixture.queue.retryDeadLetters(name, ids: [dead[0].id]) == 1)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["a"])
        #expect(try await worker.dequeue(name)?.deliveries == 1)
        #expect(try await fixture.queue.purgeDeadLetters(name) == 1)
        #expect(try await fixture.queue.deadLetters(name).isEmpty)
    }
}

@Suite struct RecoveryTests {
    /// A worker whose heartbeat stops (its connection is gone) is recovered by a peer: its
    /// tasks go back to the front in order; the live worker's in-flight tasks stay put.
    @Test func deadWorkersTasksReturnToTheFrontAndLiveWorkersAreUntouched() async throws {
        let fixture = try await QueueFixture.start {
            $0.heartbeatInterval = .milliseconds(100)
            $0.workerTimeout = .seconds(60)   // the live worker must never look dead
            $0.cleanupInterval = .seconds(3600)
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, (1...6).map { "t\($0)" })
        // The doomed one's heartbeat lives 3 s (its own option): how long the test waits.
        let doomed = try await fixture.peer { $0.workerTimeout = .seconds(3) }.startWorker()
        let live = try await fixture.queue.startWorker()
        _ = try await doomed.startWork(name)
        _ = try await live.startWork(name)
        let doomedHeld = try await doomed.dequeue(name, max: 2)
        let liveHeld = try await live.dequeue(name, max: 2)
        #expect(doomedHeld.map(\.string) == ["t1", "t2"])
        let doomedID = await doomed.id
        await doomed.workQueue.client.close()   // its heartbeat can no longer reach Redis
        try await eventually("the dead worker's heartbeat to expire") {
            try await fixture.client.send("EXISTS", "{\(fixture.prefix)}:heartbeat:\(doomedID)") == .integer(0)
        }
        let report = try await fixture.queue.recoverDeadWorkers()
        #expect(report.workers == [doomedID])
        #expect(report.requeued == 2)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["t1", "t2", "t5", "t6"])
        #expect(try await fixture.queue.getProcesses(worker: await live.id) == liveHeld)
        #expect(try await fixture.queue.getWorkers() == [await live.id])
        for process in liveHeld { try await live.finish(process) }
        let again = try #require(try await live.dequeue(name))
        #expect(again.string == "t1" && again.deliveries == 2)
    }

    @Test func recoveryOfAWorkerAtMaxDeliveriesDeadLettersTheTask() async throws {
        let fixture = try await QueueFixture.start {
            $0.heartbeatInterval = .milliseconds(100)
            $0.workerTimeout = .seconds(3)   // not shorter than a stall of the loaded test process
            $0.maxDeliveries = 1
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "crasher")
        let doomed = try await fixture.peer().startWorker()
        let doomedID = await doomed.id
        _ = try await doomed.startWork(name)
        _ = try await doomed.dequeue(name)
        await doomed.workQueue.client.close()
        try await eventually("the heartbeat to expire") {
            try await fixture.client.send("EXISTS", "{\(fixture.prefix)}:heartbeat:\(doomedID)") == .integer(0)
        }
        let report = try await fixture.queue.recoverDeadWorkers()
        #expect(report.deadLettered == 1)
        let dead = try await fixture.queue.deadLetters(name)
        #expect(dead.map(\.string) == ["crasher"])
        #expect(dead.first?.reason == "worker \(doomedID) died")
    }

    @Test func aWorkerThatLearnsItWasDeclaredDeadStopsAndItsFinishIsRefused() async throws {
        let fixture = try await QueueFixture.start {
            $0.heartbeatInterval = .seconds(1)
            // Never reached: the test deletes the heartbeat itself (a loaded machine once
            // stalled the worker's beats for 5 s before it had dequeued).
            $0.workerTimeout = .seconds(60)
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "t")
        let worker = try await fixture.queue.startWorker()
        let id = await worker.id
        let events = try await worker.startWork(name)
        #expect(await events.next() == .work(1))
        let process = try #require(try await worker.dequeue(name))
        // Its peers declared it dead: the heartbeat key is gone and its tasks were recovered.
        try await fixture.client.send("DEL", "{\(fixture.prefix)}:heartbeat:\(id)")
        // Whoever comes first, a peer's recovery or the worker's own next beat, gives it back.
        try await fixture.queue.recoverDeadWorkers()
        #expect(await events.nextSkippingWork() == .failed(worker: id))
        #expect(await events.nextSkippingWork() == nil, "the sequence ends")
        await #expect { try await worker.finish(process) } throws: { ($0 as? WorkQueueError)?.code == .processNotOwned }
        await #expect { try await worker.dequeue(name) } throws: { ($0 as? WorkQueueError)?.code == .workerFailed }
        try await eventually("the task to be back and the worker deregistered") {
            let tasks = try await fixture.queue.getTasks(name).map(\.string)
            let workers = try await fixture.queue.getWorkers()
            return tasks == ["t"] && workers.isEmpty
        }
    }

    @Test func aWorkerConfiguredToReregisterComesBackUnderANewID() async throws {
        let fixture = try await QueueFixture.start {
            $0.heartbeatInterval = .milliseconds(50)
            $0.reregisterAfterFailure = true
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "t")
        let worker = try await fixture.queue.startWorker()
        let oldID = await worker.id
        let events = try await worker.startWork(name)
        #expect(await events.next() == .work(1))
        let process = try #require(try await worker.dequeue(name))
        try await fixture.client.send("DEL", "{\(fixture.prefix)}:heartbeat:\(oldID)")
        #expect(await events.next() == .failed(worker: oldID))
        #expect(await events.next() == .work(1), "its own task came back")
        let newID = await worker.id
        #expect(newID != oldID)
        try await eventually("the old id to be deregistered") { try await fixture.queue.getWorkers() == [newID] }
        await #expect { try await worker.finish(process) } throws: { ($0 as? WorkQueueError)?.code == .processNotOwned }
        let again = try #require(try await worker.dequeue(name))
        #expect(again.worker == newID && again.string == "t")
        try await worker.finish(again)
    }
}

@Suite struct RunTests {
    @Test func handlersFinishOnReturnAndStopOnThrow() async throws {
        let fixture = try await QueueFixture.start { $0.maxDeliveries = 3 }
        let name = uniqueName()
        let done = Inbox<String>()
        let worker = try await fixture.queue.startWorker()
        let run = Task {
            try await worker.run(name, concurrency: 2) { process in
                if process.string == "bad" { throw Poison() }
                done.put(process.string)
            }
        }
        try await fixture.queue.enqueue(name, ["ok1", "bad", "ok2"])
        #expect(Set(try await done.take(2)) == ["ok1", "ok2"])
        try await eventually("the poisoned task to be dead-lettered") {
            try await fixture.queue.deadLetters(name).count == 1
        }
        let dead = try await fixture.queue.deadLetters(name)
        #expect(dead.first?.reason == "poisoned task" && dead.first?.deliveries == 3)
        #expect(try await fixture.queue.countQueue(name) == 0)
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        run.cancel()
        try await run.value
    }

    /// A worker's finishes that arrive together go in one script, and each is still checked
    /// on its own in Redis: every process finished twice at once is finished exactly once,
    /// the other finish is refused as not held.
    @Test func finishesSentTogetherAreEachCheckedAndDoneOnce() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, (0..<20).map { "t\($0)" })
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let processes = try await worker.dequeue(name, max: 20)
        #expect(processes.count == 20)
        let outcomes = await withTaskGroup(of: WorkQueueError.Code?.self) { group in
            for process in processes + processes {
                group.addTask {
                    do {
                        try await worker.finish(process)
                        return nil
                    } catch {
                        return (error as? WorkQueueError)?.code ?? .workerFailed
                    }
                }
            }
            return await group.reduce(into: [WorkQueueError.Code?]()) { $0.append($1) }
        }
        #expect(outcomes.filter { $0 == nil }.count == 20, "one finish of each process")
        #expect(outcomes.filter { $0 == .processNotOwned }.count == 20, "the other refused: \(outcomes)")
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        #expect(try await fixture.queue.queueState(name).completed == 20)
        for process in processes {
            #expect(try await fixture.queue.task(name, process.taskID)?.state == .completed)
        }
        try await worker.failWorker()
    }

    @Test func aCancelEventCancelsTheHandlerAndFinishesTheProcess() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let started = Inbox<String>()
        let cancelled = Inbox<String>()
        let worker = try await fixture.queue.startWorker()
        let run = Task {
            try await worker.run(name, concurrency: 2) { process in
                started.put(process.string)
                do {
                    try await untilCancelled()
                } catch {
                    cancelled.put(process.string)
                    throw error
                }
            }
        }
        try await fixture.queue.enqueue(name, ["long", "other"])
        #expect(Set(try await started.take(2)) == ["long", "other"])
        try await fixture.queue.enqueue(name, "long")   // a queued copy, removed by the cancel
        #expect(try await fixture.queue.cancelTasks(name, "long") == 1)
        #expect(try await cancelled.take(1) == ["long"])
        try await eventually("the cancelled process to be finished") {
            try await fixture.queue.getProcesses(name).map(\.string) == ["other"]
        }
        #expect(try await fixture.queue.countQueue(name) == 0)
        run.cancel()
        try await run.value
        // Cancelling the loop gave the running task back, uncounted.
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["other"])
    }

    @Test func gracefulShutdownReturnsWhatDidNotFinishInTime() async throws {
        let fixture = try await QueueFixture.start { $0.shutdownGracePeriod = .milliseconds(200) }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, (1...5).map { "t\($0)" })
        let started = Inbox<String>()
        let worker = try await fixture.queue.startWorker()
        let id = await worker.id
        try await worker.handle(name, concurrency: 2) { process in
            started.put(process.string)
            try await untilCancelled()
        }
        try await testGracefulShutdown { trigger in
            let service = Task { try await worker.run() }
            #expect(Set(try await started.take(2)) == ["t1", "t2"], "the two handlers run concurrently: either may start first")
            trigger.triggerGracefulShutdown()
            try await service.value
        }
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["t1", "t2", "t3", "t4", "t5"])
        #expect(try await fixture.queue.getWorkers().isEmpty)
        #expect(try await fixture.queue.getWorkingQueues(id).isEmpty)
        let next = try await fixture.queue.startWorker()
        _ = try await next.startWork(name)
        #expect(try await next.dequeue(name)?.deliveries == 1, "a shutdown does not count as a failed delivery")
    }

    @Test func gracefulShutdownLetsRunningHandlersFinish() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, (1...5).map { "t\($0)" })
        let started = Inbox<String>()
        let gate = Inbox<Void>()
        let worker = try await fixture.queue.startWorker()
        try await worker.handle(name, concurrency: 2) { process in
            started.put(process.string)
            _ = try await gate.take(1, within: .seconds(30))
        }
        try await testGracefulShutdown { trigger in
            let service = Task { try await worker.run() }
            #expect(Set(try await started.take(2)) == ["t1", "t2"], "the two handlers run concurrently: either may start first")
            trigger.triggerGracefulShutdown()
            gate.put(())
            gate.put(())
            try await service.value
        }
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["t3", "t4", "t5"])
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
    }

    /// With the subscriber gone (no reconnect), `work` messages are lost; the poll timer
    /// still gets the work done.
    @Test(.enabled(if: TestRedis.ownsServers)) func lostWorkMessagesAreCoveredByThePollTimer() async throws {
        let redis = try await TestRedis.start()
        // A roomy worker timeout, as the fixture's: a stalled test process must not make
        // this live worker look dead.
        var options = WorkQueueOptions(prefix: uniqueName("p"), heartbeatInterval: .milliseconds(500), workerTimeout: .seconds(10))
        options.pollInterval = .milliseconds(200)
        let subscriber = try await redis.subscriber { $0.reconnect = .never }
        let queue = try WorkQueue(client: try await redis.connect(), subscriber: subscriber, options: options)
        let name = uniqueName()
        let done = Inbox<String>()
        let worker = try await queue.startWorker()
        let run = Task { try await worker.run(name) { done.put($0.string) } }
        try await queue.enqueue(name, "before")
        #expect(try await done.take(1) == ["before"])
        let admin = try await redis.connect()
        #expect(try await admin.send("CLIENT", "KILL", "TYPE", "pubsub").decode(Int.self) >= 1)
        try await queue.enqueue(name, ["a", "b", "c"])
        #expect(try await done.take(3) == ["a", "b", "c"])
        run.cancel()
        try await run.value
    }
}

@Suite struct BadInputTests {
    @Test func badQueueNamesAreRefusedBeforeAnythingIsSent() async throws {
        let fixture = try await QueueFixture.start()
        for name in ["", String(repeating: "q", count: 1025)] {
            await #expect { try await fixture.queue.enqueue(name, "t") } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
        let worker = try await fixture.queue.startWorker()
        await #expect { try await worker.startWork("") } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        #expect(try await fixture.keys().filter { !$0.contains(":heartbeat:") && !$0.hasSuffix(":workers") }.isEmpty)
    }

    @Test func anOversizeTaskIsRefusedAndNothingOfTheBatchIsWritten() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let huge = [UInt8](repeating: 0x61, count: 512 * 1024 * 1024 + 1)
        await #expect { try await fixture.queue.enqueue(name, [Array("small".utf8), huge]) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        #expect(try await fixture.keys().isEmpty)
    }

    @Test func inconsistentOptionsAreRefused() async throws {
        let redis = try await TestRedis.start()
        let client = try await redis.connect()
        let subscriber = try await redis.subscriber()
        let bad: [WorkQueueOptions] = [
            WorkQueueOptions(heartbeatInterval: .seconds(3), workerTimeout: .seconds(1)),
            WorkQueueOptions(prefix: "a:b"),
            WorkQueueOptions(maxDeliveries: 0),
            WorkQueueOptions(cleanupInterval: .zero),
        ]
        for options in bad {
            #expect { try WorkQueue(client: client, subscriber: subscriber, options: options) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
    }

    @Test func aWorkerIDInUseIsRefused() async throws {
        let fixture = try await QueueFixture.start { $0.workerID = "fixed" }
        _ = try await fixture.queue.startWorker()
        await #expect { try await fixture.peer().startWorker() } throws: {
            ($0 as? WorkQueueError)?.code == .workerNotStarted
        }
    }
}

@Suite struct MetricsTests {
    @Test func countersFollowTheTasks() async throws {
        let metrics = TestMetrics()
        let fixture = try await QueueFixture.start {
            $0.metricsFactory = metrics
            $0.metricsDimensions = [("service", "test")]
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["a", "b", "c"])
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let held = try await worker.dequeue(name, max: 2)
        try await worker.finish(held[0])
        try await worker.stop(held[1])
        let dimensions = [("service", "test"), ("queue", name)]
        #expect(try metrics.expectCounter("queuekit_enqueued_total", dimensions).totalValue == 3)
        #expect(try metrics.expectCounter("queuekit_dequeued_total", dimensions).totalValue == 2)
        #expect(try metrics.expectCounter("queuekit_finished_total", dimensions).totalValue == 1)
        #expect(try metrics.expectCounter("queuekit_stopped_total", dimensions).totalValue == 1)
        let gauge = try metrics.expectGauge("queuekit_in_flight", dimensions)
        #expect(gauge.values.map { Int($0) } == [2, 1, 0])
    }
}
