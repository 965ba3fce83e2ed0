import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// The work queue and the Redis job store on a real Redis Cluster (3 primaries, 1 replica
/// each), unchanged: the same types over a `RedisCluster` client, workers in other processes.
@Suite(.serialized) struct ClusterQueueTests {
    /// 3 worker processes on the cluster, one killed with `kill -9` while holding tasks:
    /// every task is done, and only the killed worker's tasks ran twice.
    @Test func workersOnTheClusterRecoverAKilledWorkersTasksAndOnlyTheirs() async throws {
        let cluster = try await TestCluster.start()
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = uniqueName("p")
        let queue = try WorkQueue(client: client, subscriber: try await client.subscriber(),
                                  options: WorkQueueOptions(prefix: prefix, workerTimeout: .seconds(10)))
        let name = "jobs:{tenant 7}"   // any name, on the cluster too
        let log = uniqueKey("log"), done = uniqueKey("done")
        let total = 1000
        var workers: [WorkerProcess] = []
        for _ in 0..<3 {
            workers.append(try await WorkerProcess.spawn(cluster.spec, prefix: prefix, queue: name, concurrency: 4,
                                                         log: log, done: done, total: total, handlerMilliseconds: 10))
        }
        try await queue.enqueue(name, (0..<total).map { "task-\($0)" })
        let killed = workers[0]
        try await eventually(timeout: .seconds(30), "the doomed worker to be at work") {
            let starts = try await client.send("LRANGE", log, 0, -1).decode([String].self).map(Start.init)
            return starts.count >= 100 && starts.contains { $0.worker == killed.id }
        }
        killed.helper.signal(SIGKILL)
        _ = await killed.helper.exitStatus()
        for worker in workers.dropFirst() {
            #expect(await worker.helper.lines.collect().last == "done")
            #expect(await worker.helper.exitStatus() == 0)
        }
        let counts = try await client.send("HGETALL", done).decode([String].self)
        var doneCount: [String: Int] = [:]
        for index in stride(from: 0, to: counts.count, by: 2) { doneCount[counts[index]] = Int(counts[index + 1])! }
        #expect(doneCount.count == total, "every task was done")
        let starts = try await client.send("LRANGE", log, 0, -1).decode([String].self).map(Start.init)
        for (task, taskStarts) in Dictionary(grouping: starts, by: \.task) where taskStarts.count > 1 {
            for start in taskStarts.dropLast() {
                #expect(start.worker == killed.id, "\(task) was taken from live worker \(start.worker)")
            }
        }
        // The live workers may have finished before the dead one's heartbeat expired: then
        // the next recovery, anyone's, deregisters it.
        try await eventually(timeout: .seconds(20), "the dead worker to be deregistered") {
            try await queue.recoverDeadWorkers()
            return try await queue.getWorkers().isEmpty
        }
        #expect(try await queue.getProcesses(name).isEmpty)
        // A task whose handler had run in the killed worker (so it counts as done) but that
        // was not finished yet is given back by that recovery, after the live workers left:
        // only such tasks may remain queued.
        let killedTasks = Set(starts.filter { $0.worker == killed.id }.map(\.task))
        let left = try await queue.getTasks(name).map { String(decoding: $0, as: UTF8.self) }
        #expect(left.allSatisfy { killedTasks.contains($0) }, "left in the queue: \(left)")
    }

    /// The primary serving a queue is killed (`kill -9`) while 2 worker processes work on
    /// it: a replica takes over, the workers follow, and every task whose enqueue was
    /// acknowledged by a replica (`minReplicas: 1`) is done at least once. (A finish or a
    /// dequeue the old primary had not replicated is lost with it: such a task runs again.)
    @Test func aPrimaryKilledMidRunLosesNoAcknowledgedTask() async throws {
        let cluster = try await TestCluster.start(nodeTimeout: .seconds(1))
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = uniqueName("p")
        let book = uniqueName("book")
        let log = "{\(book)}:log", done = "{\(book)}:done"   // one slot
        // The bookkeeping lives on primaries that survive: the queue's own is the one killed.
        let spared = Set([log, done, "{\(prefix)}"].map { client.primary(for: $0)! })
        guard let name = (0..<200).map({ "q\($0)" }).first(where: {
            !spared.contains(client.primary(for: "{\(prefix):\($0)}:queue")!)
        }) else {
            Issue.record("no queue name on another primary")
            return
        }
        let queue = try WorkQueue(client: client, subscriber: try await client.subscriber(),
                                  options: WorkQueueOptions(prefix: prefix, workerTimeout: .seconds(10)))
        let total = 600
        var workers: [WorkerProcess] = []
        for _ in 0..<2 {
            workers.append(try await WorkerProcess.spawn(cluster.spec, prefix: prefix, queue: name, concurrency: 4,
                                                         log: log, done: done, total: total, handlerMilliseconds: 20))
        }
        for batch in stride(from: 0, to: total, by: 50) {
            try await queue.enqueue(name, (batch..<batch + 50).map { "task-\($0)" }, minReplicas: 1)
        }
        try await eventually(timeout: .seconds(30), "work to be under way") {
            try await client.send("LLEN", log).decode(Int.self) >= 150
        }
        let primary = try await cluster.owner(ofSlot: ClusterSlot.of("\(prefix):\(name)"))
        let clock = ContinuousClock()
        let killedAt = clock.now
        await primary.kill()
        for worker in workers {
            #expect(await worker.helper.lines.collect().last == "done")
            #expect(await worker.helper.exitStatus() == 0)
        }
        let finishedAfter = clock.now - killedAt
        let counts = try await client.send("HGETALL", done).decode([String].self)
        var doneCount: [String: Int] = [:]
        for index in stride(from: 0, to: counts.count, by: 2) { doneCount[counts[index]] = Int(counts[index + 1])! }
        #expect(doneCount.count == total, "every acknowledged task was done")
        let again = doneCount.values.filter { $0 > 1 }.count
        print("primary kill under the queue: all \(doneCount.count) tasks done \(finishedAfter) after the kill; \(again) ran twice")
    }

    /// Queues spread over the primaries: each queue's keys in its own slot.
    @Test func queuesSpreadOverThePrimaries() async throws {
        let cluster = try await TestCluster.start()
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = uniqueName("p")
        let queue = try WorkQueue(client: client, subscriber: try await client.subscriber(),
                                  options: WorkQueueOptions(prefix: prefix))
        var perPrimary: [RedisConfiguration.Endpoint: Int] = [:]
        for index in 0..<60 {
            try await queue.enqueue("queue-\(index)", "t")
            perPrimary[client.primary(for: "{\(prefix):queue-\(index)}:queue")!, default: 0] += 1
        }
        #expect(perPrimary.count == 3)
        #expect(try await queue.getQueues().count == 60, "SCAN of every primary finds them all")
    }

    /// Eight processes pull 500 jobs from one Redis job store spread over 16 shards on the
    /// cluster: each job is fulfilled exactly once, and the shards live on several primaries.
    @Test func pullWorkIsExclusiveAcrossProcessesOnTheCluster() async throws {
        let cluster = try await TestCluster.start()
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = uniqueName("jobs")
        let store = try RedisJobStore<String>(client: client, prefix: prefix, shards: 16)   // as the helper's
        #expect(Set((0..<16).map { client.primary(for: "{\(prefix):\($0)}:pending")! }).count > 1)
        var created: Set<String> = []
        for index in 0..<500 { created.insert(try await store.create(request: "job-\(index)").rawValue) }
        let helpers = try (0..<8).map { _ in try HelperProcess(["jobs-pull", "redis-sharded", cluster.spec, prefix, "10000"]) }
        var fulfilled: [String] = []
        for helper in helpers {
            let lines = await helper.lines.collect()
            #expect(await helper.exitStatus() == 0)
            fulfilled += lines.first { $0.hasPrefix("fulfilled ") }.map {
                $0.dropFirst("fulfilled ".count).split(separator: ",").map(String.init)
            } ?? []
            #expect(lines.last == "lost 0")
        }
        #expect(fulfilled.count == 500)
        #expect(Set(fulfilled) == created)
        #expect(try await store.pullWork() == nil)
    }
}
