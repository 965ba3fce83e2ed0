import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A `queue-worker` helper process and what it printed.
struct WorkerProcess {
    let helper: HelperProcess
    let id: String

    static func spawn(_ redis: TestRedis, prefix: String, queue: String, concurrency: Int,
                      log: String, done: String, total: Int, handlerMilliseconds: Int) async throws -> WorkerProcess {
        try await spawn(redis.url, prefix: prefix, queue: queue, concurrency: concurrency, log: log, done: done,
                        total: total, handlerMilliseconds: handlerMilliseconds)
    }

    /// A worker process on the Redis `spec` names (a URL, or a cluster: ``RedisTarget``).
    static func spawn(_ spec: String, prefix: String, queue: String, concurrency: Int,
                      log: String, done: String, total: Int, handlerMilliseconds: Int) async throws -> WorkerProcess {
        let helper = try HelperProcess(["queue-worker", spec, prefix, queue, "\(concurrency)", log, done,
                                        "\(total)", "\(handlerMilliseconds)"])
        var id = ""
        for await line in helper.lines {
            id = String(line.dropFirst("worker ".count))
            break
        }
        guard !id.isEmpty else { throw TestSupportError("the worker process did not start") }
        return WorkerProcess(helper: helper, id: id)
    }
}

/// One line of the helpers' start log: "start|worker|task|delivery|ms".
struct Start {
    let worker: String
    let task: String
    let delivery: Int
    let milliseconds: Int64

    init(_ line: String) {
        let parts = line.split(separator: "|", omittingEmptySubsequences: false)
        worker = String(parts[1])
        task = String(parts[2])
        delivery = Int(parts[3])!
        milliseconds = Int64(parts[4])!
    }
}

@Suite struct CrossProcessQueueTests {
    /// 10,000 tasks, 4 worker processes: every task finished exactly once, none left.
    @Test func tenThousandTasksFourProcessesEachDoneOnce() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let log = uniqueKey("log"), done = uniqueKey("done")
        let total = 10_000
        // The workers first, so that no early one drains the queue before the last is up.
        var workers: [WorkerProcess] = []
        for _ in 0..<4 {
            workers.append(try await WorkerProcess.spawn(fixture.redis, prefix: fixture.prefix, queue: name, concurrency: 8,
                                                         log: log, done: done, total: total, handlerMilliseconds: 0))
        }
        for batch in stride(from: 0, to: total, by: 1000) {
            try await fixture.queue.enqueue(name, (batch..<batch + 1000).map { "task-\($0)" })
        }
        for worker in workers {
            #expect(await worker.helper.lines.collect().last == "done")
            #expect(await worker.helper.exitStatus() == 0)
        }
        let counts = try await fixture.client.send("HVALS", done).decode([Int].self)
        #expect(counts.count == total)
        #expect(counts.allSatisfy { $0 == 1 }, "\(counts.filter { $0 != 1 }.count) tasks ran more than once")
        let starts = try await fixture.client.send("LRANGE", log, 0, -1).decode([String].self).map(Start.init)
        #expect(starts.count == total)
        #expect(Set(starts.map(\.worker)) == Set(workers.map(\.id)), "every process took work")
        #expect(try await fixture.queue.countQueue(name) == 0)
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        #expect(try await fixture.queue.getWorkers().isEmpty)
    }

    /// 4 worker processes, 2 of them killed with `kill -9` while holding tasks: every task
    /// is done; only tasks in flight in a killed worker ran twice; those went back to the
    /// front and were picked up within cleanup interval + timeout + 4 s (slack for a loaded
    /// machine; the helpers' 5 s timeout keeps a stalled live helper from looking dead); a live worker's
    /// tasks were never handed to another.
    @Test func killedWorkersTasksAreRecoveredAndOnlyTheirs() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let log = uniqueKey("log"), done = uniqueKey("done")
        let total = 2000
        // The workers first: with the tasks already queued, the first ones up could do
        // them all while a loaded machine starts the others, and hold nothing at the kill.
        var workers: [WorkerProcess] = []
        for _ in 0..<4 {
            workers.append(try await WorkerProcess.spawn(fixture.redis, prefix: fixture.prefix, queue: name, concurrency: 4,
                                                         log: log, done: done, total: total, handlerMilliseconds: 20))
        }
        try await fixture.queue.enqueue(name, (0..<total).map { "task-\($0)" })
        let killed = Array(workers.prefix(2))
        try await eventually(timeout: .seconds(30), "work to be under way in the workers to be killed") {
            let starts = try await fixture.client.send("LRANGE", log, 0, -1).decode([String].self).map(Start.init)
            return starts.count >= 300 && killed.allSatisfy { worker in starts.contains { $0.worker == worker.id } }
        }
        let killTime = Int64(Date().timeIntervalSince1970 * 1000)
        for worker in killed { worker.helper.signal(SIGKILL) }
        for worker in killed { _ = await worker.helper.exitStatus() }
        for worker in workers.dropFirst(2) {
            #expect(await worker.helper.lines.collect().last == "done")
            #expect(await worker.helper.exitStatus() == 0)
        }

        let killedIDs = Set(killed.map(\.id))
        let counts = try await fixture.client.send("HGETALL", done).decode([String].self)
        var doneCount: [String: Int] = [:]
        for index in stride(from: 0, to: counts.count, by: 2) { doneCount[counts[index]] = Int(counts[index + 1])! }
        #expect(doneCount.count == total, "every task was done")
        let starts = try await fixture.client.send("LRANGE", log, 0, -1).decode([String].self).map(Start.init)
        let byTask = Dictionary(grouping: starts, by: \.task)
        var recovered = 0
        for (task, taskStarts) in byTask where taskStarts.count > 1 {
            // Every start but the last was in a worker that was then killed.
            for start in taskStarts.dropLast() {
                #expect(killedIDs.contains(start.worker), "\(task) was taken from live worker \(start.worker)")
            }
            let restart = taskStarts.last!
            #expect(restart.delivery == taskStarts.count)
            #expect(restart.milliseconds - killTime <= 500 + 5000 + 4000,
                    "\(task) restarted \(restart.milliseconds - killTime) ms after the kill")
            recovered += 1
        }
        for (task, count) in doneCount where count > 1 {
            #expect(byTask[task]?.contains { killedIDs.contains($0.worker) } == true, "\(task) ran twice in live workers")
        }
        #expect(recovered >= 1, "tasks held at the kill were recovered")
        #expect(try await fixture.queue.countQueue(name) == 0)
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
        #expect(try await fixture.queue.deadLetters(name).isEmpty)
        #expect(try await fixture.queue.getWorkers().isEmpty, "dead workers were deregistered by their peers")
    }

    /// A worker paused (SIGSTOP) past its timeout: a peer recovers and does its tasks; on
    /// SIGCONT it learns it was failed and its `finish` of those tasks is refused.
    @Test func aPausedWorkerIsFailedAndCannotFinishWhatWasRecovered() async throws {
        // The peer's own timeout is roomy: a stall of the loaded test process must not
        // make it look dead. The paused holder's heartbeat lives 800 ms (its own option).
        let fixture = try await QueueFixture.start {
            $0.heartbeatInterval = .milliseconds(250)
            $0.workerTimeout = .seconds(60)
            $0.cleanupInterval = .milliseconds(200)
        }
        let name = uniqueName()
        try await fixture.queue.enqueue(name, ["h1", "h2", "h3"])
        let holder = try HelperProcess(["queue-hold", fixture.redis.url, fixture.prefix, name, "3"])
        var lines: [String] = []
        for await line in holder.lines {
            lines.append(line)
            break
        }
        #expect(lines == ["held h1,h2,h3"])
        holder.signal(SIGSTOP)
        let done = Inbox<WorkProcess>()
        let peer = try await fixture.queue.startWorker()
        let run = Task { try await peer.run(name, concurrency: 3) { done.put($0) } }
        let recovered = try await done.take(3, within: .seconds(15))
        #expect(Set(recovered.map(\.string)) == ["h1", "h2", "h3"])
        #expect(recovered.allSatisfy { $0.deliveries == 2 })
        holder.signal(SIGCONT)
        #expect(await holder.lines.collect() == ["finish rejected 3 of 3"])
        #expect(await holder.exitStatus() == 0)
        run.cancel()
        try await run.value
        #expect(try await fixture.queue.countQueue(name) == 0)
        #expect(try await fixture.queue.getProcesses(name).isEmpty)
    }
}
