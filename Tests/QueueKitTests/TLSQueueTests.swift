import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

/// The work queue's cross-process claim with every process on TLS connections.
@Suite(.enabled(if: TLSRedis.isAvailable, "needs hiredis >= 1.0 with libhiredis_ssl, and openssl (make test-tls)"))
struct TLSQueueTests {
    /// 1,000 tasks, 3 worker processes over TLS: every task done exactly once, none left.
    @Test func workerProcessesShareTheQueueOverTLS() async throws {
        let redis = try await TLSRedis.start()
        let options = WorkQueueOptions(prefix: uniqueName("p"), heartbeatInterval: .milliseconds(500), workerTimeout: .seconds(10))
        let queue = try WorkQueue(client: try await redis.connect(), subscriber: try await redis.subscriber(), options: options)
        let name = uniqueName()
        let log = uniqueKey("log"), done = uniqueKey("done")
        let total = 1000
        var workers: [HelperProcess] = []
        for _ in 0..<3 {
            let helper = try HelperProcess(["queue-worker", redis.helperSpec, options.prefix, name, "4", log, done, "\(total)", "0"],
                                           environment: redis.helperEnvironment)
            for await line in helper.lines {
                #expect(line.hasPrefix("worker "), "the worker process started: \(line)")
                break
            }
            workers.append(helper)
        }
        for batch in stride(from: 0, to: total, by: 250) {
            try await queue.enqueue(name, (batch..<batch + 250).map { "task-\($0)" })
        }
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        let counts = try await queue.client.send("HVALS", done).decode([Int].self)
        #expect(counts.count == total)
        #expect(counts.allSatisfy { $0 == 1 }, "\(counts.filter { $0 != 1 }.count) tasks ran more than once")
        #expect(try await queue.countQueue(name) == 0)
        #expect(try await queue.getProcesses(name).isEmpty)
    }
}
