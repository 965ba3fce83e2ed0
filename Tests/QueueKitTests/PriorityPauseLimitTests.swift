import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite struct PriorityTests {
    @Test func higherPriorityFirstAndFIFOWithinAPriority() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let plan: [(String, Int)] = [("low-1", -5), ("plain-1", 0), ("high-1", 10), ("mid-1", 3), ("plain-2", 0),
                                     ("high-2", 10), ("low-2", -5), ("mid-2", 3)]
        for (task, priority) in plan {
            try await fixture.queue.enqueue(name, task, options: TaskOptions(priority: priority))
        }
        let expected = ["high-1", "high-2", "mid-1", "mid-2", "plain-1", "plain-2", "low-1", "low-2"]
        #expect(try await fixture.queue.getTasks(name).map(\.string) == expected)
        #expect(try await fixture.queue.peekQueue(name)?.string == "high-1")
        #expect(try await fixture.queue.countQueue(name) == 8)
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        var taken: [String] = []
        while let process = try await worker.dequeue(name) { taken.append(process.string) }
        #expect(taken == expected)
    }

    /// `stop` and recovery put a prioritized task at the front of its own priority.
    @Test func aStoppedPrioritizedTaskGoesToTheFrontOfItsPriority() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        for task in ["a", "b", "c"] { try await fixture.queue.enqueue(name, task, options: TaskOptions(priority: 2)) }
        try await fixture.queue.enqueue(name, "top", options: TaskOptions(priority: 9))
        try await fixture.queue.enqueue(name, "plain")
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        let first = try await worker.dequeue(name, max: 3)
        #expect(first.map(\.string) == ["top", "a", "b"])
        for process in first.reversed() { try await worker.stop(process) }
        #expect(try await fixture.queue.getTasks(name).map(\.string) == ["top", "a", "b", "c", "plain"])
    }

    /// Two workers on their own connections take 60 prioritized tasks one at a time: every
    /// task started (server clock) no later than any task it should precede.
    @Test func twoWorkersTakeTasksInPriorityOrder() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        var plan: [(id: String, priority: Int, order: Int)] = []
        for index in 0..<60 {
            let priority = [0, 5, -3][index % 3]
            let id = try await fixture.queue.enqueue(name, "t\(index)", options: TaskOptions(priority: priority)).id
            plan.append((id, priority, index))
        }
        let done = Inbox<String>()
        var running: [RunningWorker] = []
        for _ in 0..<2 {
            let queue = try await fixture.peer()
            running.append(try await queue.startWorker(on: name) { process in
                try await Task.sleep(for: .milliseconds(5))   // the handler's work
                done.put(process.taskID)
            })
        }
        _ = try await done.take(60, within: .seconds(60))
        for worker in running { try await worker.shutdown() }
        var started: [String: Int64] = [:]
        for task in plan { started[task.id] = try #require(try await fixture.queue.task(name, task.id)?.startedAt).milliseconds }
        for earlier in plan {
            for later in plan where earlier.priority > later.priority || (earlier.priority == later.priority && earlier.order < later.order) {
                #expect(started[earlier.id]! <= started[later.id]!, "\(earlier) started after \(later)")
            }
        }
    }
}

@Suite struct PauseTests {
    @Test func aPausedQueueHandsOutNothingAndShowsItFleetWide() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["a", "b"])
        let peer = try await fixture.peer()
        try await peer.pause(name)
        let state = try await fixture.queue.queueState(name)
        #expect(state.isPaused && state.waiting == 2)
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        #expect(try await worker.dequeue(name) == nil)
        try await fixture.queue.enqueue(name, "c")
        #expect(try await worker.dequeue(name) == nil)
        try await peer.resume(name)
        #expect(try await fixture.queue.queueState(name).isPaused == false)
        #expect(try await worker.dequeue(name, max: 5).map(\.string) == ["a", "b", "c"])
    }

    /// Three worker processes: pausing lets running tasks finish and starts nothing new (by
    /// the records' server-clock start times) while tasks keep arriving; resuming finishes them all.
    @Test func pauseAndResumeAcrossProcessesWhileTasksKeepArriving() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let done = uniqueKey("done")
        let total = 60
        var workers: [HelperProcess] = []
        for _ in 0..<3 {
            workers.append(try await spawnRunner(fixture, queue: name, concurrency: 2, done: done, total: total, handlerMilliseconds: 100))
        }
        var ids = try await fixture.queue.enqueue(name, (0..<30).map { "before-\($0)" }).ids
        try await eventually(timeout: .seconds(30), "work to be under way") {
            try await fixture.client.send("HLEN", done).decode(Int.self) >= 3
        }
        try await fixture.queue.pause(name)
        let pausedAt = try #require(try await fixture.queue.queueState(name).pausedSince).milliseconds
        ids += try await fixture.queue.enqueue(name, (0..<30).map { "during-\($0)" }).ids
        // Running tasks finish; the workers, woken by every finish and enqueue, take nothing.
        try await eventually(timeout: .seconds(30), "the running tasks to finish") {
            try await fixture.queue.queueState(name).active == 0
        }
        try await fixture.queue.requestWork(name)
        let waiting = try await fixture.queue.queueState(name).waiting
        #expect(waiting > 0)
        let resumedAt = try await serverMilliseconds(fixture.client)
        try await fixture.queue.resume(name)
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        var startedWhilePaused = 0
        for id in ids {
            let started = try #require(try await fixture.queue.task(name, id)?.startedAt).milliseconds
            if started > pausedAt && started < resumedAt { startedWhilePaused += 1 }
        }
        #expect(startedWhilePaused == 0)
        #expect(try await fixture.client.send("HVALS", done).decode([Int].self).allSatisfy { $0 == 1 })
    }
}

@Suite struct LimitTests {
    /// 50 starts a second over 4 worker processes of concurrency 10, for 5 s: no window of
    /// one second (sliding, by the records' server-clock start times) holds more than 50.
    @Test func aRateLimitHoldsAcrossFourWorkerProcesses() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let done = uniqueKey("done")
        let total = 250
        try await fixture.queue.setLimits(name, QueueLimits(rate: RateLimit(50, per: .seconds(1))))
        #expect(try await fixture.queue.queueState(name).limits.rate == RateLimit(50, per: .seconds(1)))
        var workers: [HelperProcess] = []
        for _ in 0..<4 {
            workers.append(try await spawnRunner(fixture, queue: name, concurrency: 10, done: done, total: total, handlerMilliseconds: 0))
        }
        let ids = try await fixture.queue.enqueue(name, (0..<total).map { "t\($0)" }).ids
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        var starts: [Int64] = []
        for id in ids { starts.append(try #require(try await fixture.queue.task(name, id)?.startedAt).milliseconds) }
        starts.sort()
        var busiest = 0
        var low = 0
        for high in starts.indices {
            while starts[high] - starts[low] >= 1000 { low += 1 }
            busiest = max(busiest, high - low + 1)
        }
        #expect(busiest <= 50)
        #expect(busiest >= 40, "the limit was reached (\(busiest) in the busiest second)")
        let seconds = Dictionary(grouping: starts) { $0 / 1000 }.mapValues(\.count)
        print("rate limit 50/s, starts per second window: \(seconds.sorted { $0.key < $1.key }.map(\.value))")
    }

    /// A concurrency limit of 3 over 4 worker processes of concurrency 10: never more than 3
    /// handlers at once across the fleet.
    @Test func globalConcurrencyNeverExceedsItsLimit() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let done = uniqueKey("done")
        let total = 60
        try await fixture.queue.setLimits(name, QueueLimits(concurrency: 3))
        var workers: [HelperProcess] = []
        for _ in 0..<4 {
            workers.append(try await spawnRunner(fixture, queue: name, concurrency: 10, done: done, total: total, handlerMilliseconds: 30))
        }
        try await fixture.queue.enqueue(name, (0..<total).map { "t\($0)" })
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        let peak = try await fixture.client.send("GET", done + ":peak").decode(Int.self)
        #expect(peak <= 3)
        #expect(peak >= 2, "several ran at once")
        #expect(try await fixture.client.send("HVALS", done).decode([Int].self).allSatisfy { $0 == 1 })
    }

    /// A worker killed with `kill -9` holds the only slot; once a peer recovers it, the
    /// slot is free again.
    @Test func aDeadWorkersSlotReturnsWithItsTasks() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.setLimits(name, QueueLimits(concurrency: 1))
        try await fixture.queue.enqueue(name, ["held", "next"])
        let holder = try HelperProcess(["queue-hold", fixture.redis.url, fixture.prefix, name, "2", "5000"])
        for await line in holder.lines { #expect(line == "held held"); break }
        let worker = try await fixture.queue.startWorker()
        _ = try await worker.startWork(name)
        #expect(try await worker.dequeue(name) == nil)
        holder.signal(SIGKILL)
        _ = await holder.exitStatus()
        try await eventually(timeout: .seconds(30), "the dead worker to be recovered") {
            try await !fixture.queue.recoverDeadWorkers().workers.isEmpty
        }
        #expect(try await fixture.queue.queueState(name).active == 0)
        #expect(try await worker.dequeue(name, max: 2).map(\.string) == ["held"])
    }
}
