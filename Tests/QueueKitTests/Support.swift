import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

/// A name usable as a prefix or queue name (no `:`), unique to one test.
func uniqueName(_ base: String = "q") -> String {
    base + UUID().uuidString.replacingOccurrences(of: "-", with: "").prefix(12).lowercased()
}

/// One Redis and any number of `WorkQueue`s on it, each with its own two connections (as
/// separate processes would have), sharing a prefix unique to the test.
struct QueueFixture {
    let redis: TestRedis
    let prefix: String
    let options: WorkQueueOptions
    let queue: WorkQueue

    static func start(redis given: TestRedis? = nil, _ configure: (inout WorkQueueOptions) -> Void = { _ in }) async throws -> QueueFixture {
        let redis: TestRedis
        if let given { redis = given } else { redis = try await TestRedis.start() }
        // A roomy worker timeout unless a test sets its own: a loaded test process stalls
        // for a second or two, and a live worker must not look dead meanwhile.
        var options = WorkQueueOptions(prefix: uniqueName("p"), heartbeatInterval: .milliseconds(500), workerTimeout: .seconds(10))
        configure(&options)
        let queue = try WorkQueue(client: try await redis.connect(), subscriber: try await redis.subscriber(), options: options)
        return QueueFixture(redis: redis, prefix: options.prefix, options: options, queue: queue)
    }

    /// Another client of the same queues, on connections of its own.
    func peer(_ configure: (inout WorkQueueOptions) -> Void = { _ in }) async throws -> WorkQueue {
        var options = self.options
        configure(&options)
        return try WorkQueue(client: try await redis.connect(), subscriber: try await redis.subscriber(), options: options)
    }

    var client: any RedisClient { queue.client }

    /// Every key of this test's prefix (to prove that nothing was written, or all was cleaned).
    func keys() async throws -> [String] {
        try await client.scanKeys(matching: "*\(prefix)*").sorted()
    }
}

extension AsyncStream<WorkEvent> {
    /// The next event, or `nil` when the stream ended or `timeout` passed.
    func next(within timeout: Duration = .seconds(5)) async -> WorkEvent? {
        let stream = self
        return try? await RedisTestSupport.within(timeout) {
            var iterator = stream.makeAsyncIterator()
            return await iterator.next()
        } ?? nil
    }
}

extension AsyncStream<WorkEvent> {
    /// The next event that is not `.work`.
    func nextSkippingWork(within timeout: Duration = .seconds(5)) async -> WorkEvent? {
        while true {
            let event = await next(within: timeout)
            if case .work = event { continue }
            return event
        }
    }
}

extension Array where Element == UInt8 {
    var string: String { String(decoding: self, as: UTF8.self) }
}
