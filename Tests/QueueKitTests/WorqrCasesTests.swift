import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

/// worqr's test suite, each case on its own prefix and Redis.
@Suite struct WorqrCasesTests {
    static let tasks = ["task1", "task2", "task3"]

    /// A fixture whose three queues hold task1…task3.
    func filled() async throws -> (QueueFixture, [String]) {
        let fixture = try await QueueFixture.start()
        let names = (0..<3).map { _ in uniqueName() }
        for name in names { try await fixture.queue.enqueue(name, Self.tasks) }
        return (fixture, names)
    }

    @Test func enqueueArraysToThreeQueues() async throws {
        let (fixture, names) = try await filled()
        for name in names {
            #expect(try await fixture.queue.getTasks(name).map(\.string) == Self.tasks)
        }
    }

    @Test func getQueuesListsThem() async throws {
        let (fixture, names) = try await filled()
        #expect(try await fixture.queue.getQueues() == names.sorted())
    }

    @Test func startWorkBeforeStartWorkerRejects() async throws {
        let (fixture, names) = try await filled()
        let worker = fixture.queue.makeWorker()
        await #expect { try await worker.startWork(names[0]) } throws: { ($0 as? WorkQueueError)?.code == .workerNotStarted }
        #expect(try await fixture.queue.getWorkers().isEmpty)
    }

    @Test func getWorkersHasThisWorker() async throws {
        let (fixture, _) = try await filled()
        let worker = try await fixture.queue.startWorker()
        #expect(try await fixture.queue.getWorkers() == [await worker.id])
        #expect(try await fixture.client.send("PTTL", "{\(fixture.prefix)}:heartbeat:\(await worker.id)").decode(Int.self) > 0)
    }

    @Test func dequeueBeforeStartWorkRejects() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        await #expect { try await worker.dequeue(names[0]) } throws: { ($0 as? WorkQueueError)?.code == .notWorking }
        #expect(try await fixture.queue.countQueue(names[0]) == 3)
    }

    @Test func countIsThree() async throws {
        let (fixture, names) = try await filled()
        #expect(try await fixture.queue.countQueue(names[0]) == 3)
    }

    @Test func peekIsTheFirstTask() async throws {
        let (fixture, names) = try await filled()
        #expect(try await fixture.queue.peekQueue(names[0])?.string == "task1")
        #expect(try await fixture.queue.peekQueue(uniqueName()) == nil)
    }

    @Test func getTasksInDequeueOrder() async throws {
        let (fixture, names) = try await filled()
        #expect(try await fixture.queue.getTasks(names[1]).map(\.string) == Self.tasks)
        #expect(try await fixture.queue.getTasks(uniqueName()).isEmpty)
    }

    @Test func dequeueGivesTask1ThenFinishRemovesIt() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(names[0])
        let process = try #require(try await worker.dequeue(names[0]))
        #expect(process.string == "task1")
        #expect(process.deliveries == 1)
        #expect(try await fixture.queue.getProcesses(worker: await worker.id).map(\.id) == [process.id])
        try await worker.finish(process)
        #expect(try await fixture.queue.countQueue(names[0]) == 2)
        #expect(try await fixture.queue.getProcesses(names[0]).isEmpty)
        await #expect { try await worker.finish(process) } throws: { ($0 as? WorkQueueError)?.code == .processNotOwned }
    }

    @Test func stopPutsTheTaskBackAtTheFront() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(names[0])
        let first = try #require(try await worker.dequeue(names[0]))
        try await worker.finish(first)
        let second = try #require(try await worker.dequeue(names[0]))
        #expect(second.string == "task2")
        #expect(try await fixture.queue.countQueue(names[0]) == 1)
        #expect(try await worker.stop(second) == .requeued)
        #expect(try await fixture.queue.countQueue(names[0]) == 2)
        #expect(try await fixture.queue.getTasks(names[0]).map(\.string) == ["task2", "task3"])
        let again = try #require(try await worker.dequeue(names[0]))
        #expect(again.string == "task2")
        #expect(again.deliveries == 2)
        #expect(again.id != second.id)
    }

    @Test func enqueueFiresWork() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(name)
        let producer = try await fixture.peer()
        try await producer.enqueue(name, ["a", "b"])
        #expect(await events.next() == .work(2))
    }

    @Test func startWorkOnAFilledQueueFiresWorkAtOnce() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(names[2])
        #expect(await events.next() == .work(3))
    }

    @Test func cancelFiresCancelAndRemovesEveryCopy() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["x", "doomed", "y", "doomed"])
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(name)
        #expect(await events.next() == .work(4))
        #expect(try await fixture.queue.cancelTasks(name, "doomed") == 2)
        #expect(await events.next() == .cancel(Array("doomed".utf8)))
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["x", "y"])
    }

    @Test func aCancelledInFlightTaskDoesNotComeBack() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["doomed", "doomed", "kept"])
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let first = try #require(try await worker.dequeue(name))
        let second = try #require(try await worker.dequeue(name))
        #expect(try await fixture.queue.cancelTasks(name, "doomed") == 0, "both copies were in flight")
        try await worker.stop(first, reason: "handler failed")
        try await worker.finish(second)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["kept"])
    }

    @Test func deleteQueueFiresDelete() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        let events = try await worker.startWork(names[0])
        #expect(await events.next() == .work(3))
        let held = try #require(try await worker.dequeue(names[0]))
        try await fixture.queue.deleteQueue(names[0])
        #expect(await events.next() == .delete)
        #expect(try await fixture.queue.countQueue(names[0]) == 0)
        #expect(try await fixture.queue.getQueues() == names.dropFirst().sorted())
        await #expect { try await worker.finish(held) } throws: { ($0 as? WorkQueueError)?.code == .processNotOwned }
    }

    @Test func aStrictUniqueEnqueueRejectsADuplicateUntilFinished() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "only-once", unique: true)
        await #expect { try await fixture.queue.enqueue(name, "only-once", unique: true, duplicates: .fail) } throws: {
            ($0 as? WorkQueueError)?.code == .duplicateTask
        }
        #expect(try await fixture.queue.countQueue(name) == 1)
        // A non-unique copy is allowed.
        try await fixture.queue.enqueue(name, "only-once")
        #expect(try await fixture.queue.countQueue(name) == 2)
        // Still refused while the unique one is in flight; accepted once it finished.
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let process = try #require(try await worker.dequeue(name))
        await #expect { try await fixture.queue.enqueue(name, "only-once", unique: true, duplicates: .fail) } throws: {
            ($0 as? WorkQueueError)?.code == .duplicateTask
        }
        try await worker.finish(process)
        try await fixture.queue.enqueue(name, "only-once", unique: true)
        #expect(try await fixture.queue.countQueue(name) == 2)
    }

    @Test func uniqueMarkerIsClearedByCancelAndByDelete() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, "u", unique: true)
        try await fixture.queue.cancelTasks(name, "u")
        try await fixture.queue.enqueue(name, "u", unique: true)
        try await fixture.queue.deleteQueue(name)
        try await fixture.queue.enqueue(name, "u", unique: true)
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["u"])
    }

    @Test func failWorkerReturnsInFlightWorkAndDeregisters() async throws {
        let (fixture, names) = try await filled()
        let worker = try await fixture.queue.startWorker()
        let id = await worker.id
        _ = try await worker.startWork(names[0])
        _ = try await worker.startWork(names[1])
        _ = try await worker.dequeue(names[0], max: 2)
        _ = try await worker.dequeue(names[1])
        try await worker.failWorker()
        #expect(try await fixture.queue.getTasks(names[0]).map(\.string) == Self.tasks)
        #expect(try await fixture.queue.getTasks(names[1]).map(\.string) == Self.tasks)
        #expect(try await fixture.queue.getWorkers().isEmpty)
        #expect(try await fixture.queue.getWorkingQueues(id).isEmpty)
        // Given back, not failed: the deliveries were not counted.
        let next = try await fixture.queue.startWorker()
        _ = try await next.startWork(names[0])
        #expect(try await next.dequeue(names[0])?.deliveries == 1)
        await #expect { try await worker.dequeue(names[0]) } throws: { ($0 as? WorkQueueError)?.code == .workerNotStarted }
    }

    @Test func getWorkingQueuesAndMatchingProcesses() async throws {
        let (fixture, names) = try await filled()
        let a = try await fixture.queue.startWorker()
        let b = try await fixture.peer().startWorker()
        _ = try await a.startWork(names[0])
        _ = try await b.startWork(names[0])
        _ = try await b.startWork(names[1])
        try await fixture.queue.enqueue(names[0], "task1")
        let fromA = try #require(try await a.dequeue(names[0]))
        _ = try await b.dequeue(names[0], max: 3)
        #expect(try await fixture.queue.getWorkingQueues(await b.id) == names[0...1].sorted())
        let matching = try await fixture.queue.getMatchingProcesses(names[0], "task1")
        #expect(matching.count == 2)
        #expect(Set(matching.map(\.worker)) == [await a.id, await b.id])
        #expect(matching.contains(fromA))
        #expect(try await fixture.queue.getProcesses(worker: await a.id) == [fromA])
    }
}
