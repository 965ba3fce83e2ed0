import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

/// A work queue on a Sentinel-managed master that is killed mid-run.
@Suite(.enabled(if: TestRedis.ownsServers)) struct QueueHighAvailabilityTests {
    /// 2,000 tasks enqueued with `minReplicas: 1`, 3 workers, the master killed mid-run:
    /// no acknowledged task is lost and every task is finished; duplicates are counted.
    @Test func noAcknowledgedTaskIsLostInAFailover() async throws {
        let topology = try await SentinelTopology.start()
        var configuration = topology.configuration
        configuration.connectTimeout = .seconds(2)
        configuration.commandTimeout = .seconds(2)
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(300))
        var options = WorkQueueOptions(prefix: uniqueName("ha"), heartbeatInterval: .milliseconds(250),
                                       workerTimeout: .seconds(5), cleanupInterval: .seconds(1))
        options.pollInterval = .milliseconds(250)
        options.reregisterAfterFailure = true
        options.replicationTimeout = .seconds(5)   // a loaded machine's replica may lag
        func makeQueue() async throws -> WorkQueue {
            try WorkQueue(client: try await RedisConnection.connect(configuration),
                          subscriber: try await RedisSubscriber.connect(configuration), options: options)
        }
        let producer = try await makeQueue()
        let total = 2000
        for first in stride(from: 0, to: total, by: 100) {
            try await producer.enqueue("jobs", (first..<first + 100).map { "task-\($0)" }, minReplicas: 1)
        }
        let done = Locked<[String: Int]>([:])
        let progress = Inbox<Int>()
        var runs: [Task<Void, any Error>] = []
        for _ in 0..<3 {
            let worker = try await makeQueue().startWorker()
            runs.append(Task {
                try await worker.run("jobs", concurrency: 4) { process in
                    try await Task.sleep(for: .milliseconds(2))
                    let count = done.withLock { state -> Int in
                        state[process.string, default: 0] += 1
                        return state.count
                    }
                    progress.put(count)
                }
            })
        }
        for await count in progress.stream where count >= 500 { break }
        await topology.master.kill()
        let killedAt = ContinuousClock.now
        try await eventually(timeout: .seconds(90), "every task to be done") {
            done.withLock { $0.count } == total
        }
        let finishedAfter = ContinuousClock.now - killedAt
        for run in runs { run.cancel() }
        for run in runs { _ = await run.result }
        let counts = done.withLock { $0 }
        let duplicates = counts.values.filter { $0 > 1 }.count
        print("work queue across a failover: \(total) tasks done, \(duplicates) ran twice, all done \(finishedAfter) after the kill")
        #expect(counts.count == total, "no acknowledged task was lost")
        let left = try await producer.countQueue("jobs")
        #expect(left == 0)
    }
}
