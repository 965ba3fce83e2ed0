import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

/// The features beyond worqr on a real Redis Cluster: every script touches the queue's one
/// slot (its keys share one hash tag), so the same calls work unchanged.
@Suite(.serialized) struct ClusterFeatureTests {
    @Test func idsDelaysRetriesPrioritiesLimitsAndRepeatablesRunOnACluster() async throws {
        let cluster = try await TestCluster.start()
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = uniqueName("p")
        var options = WorkQueueOptions(prefix: prefix, workerTimeout: .seconds(10))
        options.pollInterval = .milliseconds(500)
        let queue = try WorkQueue(client: client, subscriber: try await client.subscriber(), options: options)
        let name = "mail:{tenant 7}"
        try await queue.setLimits(name, QueueLimits(rate: RateLimit(100, per: .seconds(1)), concurrency: 4))
        try await queue.pause(name)
        let flaky = try await queue.enqueue(name, "flaky", options: TaskOptions(
            id: "flaky-1", retry: .fixed(attempts: 3, delay: .milliseconds(50)))).id
        let later = try await queue.enqueue(name, "later", options: TaskOptions(delay: .milliseconds(300))).id
        let urgent = try await queue.enqueue(name, "urgent", options: TaskOptions(priority: 10)).id
        try await queue.addRepeatable(name, name: "beat", "beat", schedule: .every(.milliseconds(100)))
        #expect(try await queue.getTasks(name).map(\.string) == ["urgent", "flaky"])
        #expect(try await queue.queueState(name).isPaused)

        let failures = Locked(0)
        let running = try await queue.startWorker(on: name, concurrency: 2) { process in
            if process.taskID == flaky && failures.withLock({ $0 += 1; return $0 }) == 1 { throw Poison() }
        }
        try await queue.resume(name)
        let repeats = Task { try await queue.runRepeatables(name) }
        for id in [flaky, later, urgent] {
            let info = try await queue.waitUntilFinished(name, id, timeout: .seconds(30))
            #expect(info.state == .completed, "\(id)")
        }
        #expect(try await queue.task(name, flaky)?.attempts == 2)
        try await eventually(timeout: .seconds(30), "a repeatable tick to run") {
            try await queue.queueState(name).completed > 3
        }
        repeats.cancel()
        try await repeats.value
        try await running.shutdown()
        let tags = Set(try await client.scanKeys(matching: "{\(prefix):*").map { key in
            String(key[key.index(after: key.startIndex)..<key.firstIndex(of: "}")!])
        })
        #expect(tags.count == 1, "\(tags)")
        try await queue.deleteQueue(name)
        await client.close()
    }
}
