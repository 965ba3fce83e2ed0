import Foundation
import Hiredis
@testable import LockKit
import MetricsTestKit
import QueueKit
import RedisTestSupport
import Testing

/// A CallbackQueue on its own connections whose metrics go to `metrics`.
/// A roomy keep-alive lease by default: a loaded machine stalls these processes for
/// seconds, and a fanout's lock must not lapse while its job waits for the others.
private func lockQueue(_ redis: TestRedis, _ metrics: TestMetrics, prefix: String,
                       lock: LockOptions = LockOptions(keepAliveLease: .seconds(10))) async throws -> CallbackQueue {
    var options = CallbackQueueOptions(channel: prefix + "channel", lockPrefix: prefix, lock: lock)
    options.metricsFactory = metrics
    options.metricsDimensions = [("service", "test")]
    return try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(), options: options)
}

private func count(_ metrics: TestMetrics, _ label: String, _ dimensions: [(String, String)]) -> Int64 {
    (try? metrics.expectCounter(label, dimensions).totalValue) ?? 0
}

@Suite struct LockKitMetricsTests {
    let lock = [("service", "test"), ("kind", "lock")]

    @Test func anAcquisitionCountsAndTimesItsWait() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let queue = try await lockQueue(redis, metrics, prefix: uniqueKey() + ":")
        let held = try await queue.once("report")
        #expect(count(metrics, "lockkit_acquisitions_total", lock) == 1)
        #expect(try metrics.expectTimer("lockkit_wait_duration", lock).values.count == 1)
        try await held.release()
    }

    @Test func everyTryThatFindsTheLockHeldIsContention() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let queue = try await lockQueue(redis, metrics, prefix: uniqueKey() + ":",
                                        lock: LockOptions(retries: 2, delay: .milliseconds(5)))
        let held = try await queue.once("report")
        await #expect(throws: LockAcquisitionError.self) { try await queue.once("report") }
        #expect(count(metrics, "lockkit_contention_total", lock) == 3)
        #expect(count(metrics, "lockkit_acquisitions_total", lock) == 1)
        try await held.release()
    }

    @Test func theWatchdogCountsExtensionsAndTheLostLease() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let queue = try await lockQueue(redis, metrics, prefix: uniqueKey() + ":", lock: LockOptions(timeout: .milliseconds(300)))
        let other = try await redis.connect()
        await #expect(throws: LockLostError.self) {
            try await queue.withLock("report") { [lock] held in
                try await eventually("a watchdog extension") { count(metrics, "lockkit_watchdog_extensions_total", lock) >= 1 }
                try await other.send("DEL", held.redisKey)   // taken away: the next extension is refused
                try await untilCancelled()
            }
        }
        #expect(count(metrics, "lockkit_lease_lost_total", lock) == 1)
    }

    @Test func aFanoutRunsOnceAndCountsTheCoalescedCallers() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let queue = try await lockQueue(redis, metrics, prefix: uniqueKey() + ":")
        let gate = Latch(count: 1)
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<3 {
                group.addTask { try await queue.fanout("job") { await gate.wait(); return 42 } }
            }
            try await eventually("three callers") { await queue.entries["job"]?.waiters.count == 3 }
            gate.arrive()
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results == [42, 42, 42])
        #expect(count(metrics, "lockkit_fanout_runs_total", [("service", "test")]) == 1)
        #expect(count(metrics, "lockkit_fanout_coalesced_total", [("service", "test")]) == 2)
    }

    @Test func aCallerInAnotherProcessIsCoalescedAndTheLeaderIsNot() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let prefix = uniqueKey() + ":"
        let leader = try await lockQueue(redis, metrics, prefix: prefix)
        let other = try await lockQueue(redis, metrics, prefix: prefix)
        let started = Latch(count: 1)
        let gate = Latch(count: 1)
        async let first = leader.fanout("job") { started.arrive(); await gate.wait(); return 7 }
        await started.wait()
        async let second = other.fanout("job") { 8 }
        try await eventually("the other caller to wait for the leader") { await other.waitsForAnotherOwner("job") }
        gate.arrive()
        #expect(try await [first, second] == [7, 7])
        #expect(count(metrics, "lockkit_fanout_runs_total", [("service", "test")]) == 1)
        #expect(count(metrics, "lockkit_fanout_coalesced_total", [("service", "test")]) == 1)
    }

    @Test func aSemaphoreCountsPermitsAndContention() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        // A roomy keep-alive lease: the full suite stalls this process for seconds at times.
        let queue = try await lockQueue(redis, metrics, prefix: uniqueKey() + ":", lock: LockOptions(keepAliveLease: .seconds(10)))
        let semaphore = try queue.semaphore("printer", permits: 1)
        let permit = try await semaphore.take()
        await #expect(throws: LockAcquisitionError.self) { try await semaphore.take(timeout: .milliseconds(50)) }
        let dimensions = [("service", "test"), ("kind", "semaphore")]
        #expect(count(metrics, "lockkit_acquisitions_total", dimensions) == 1)
        #expect(count(metrics, "lockkit_contention_total", dimensions) >= 1)
        try await permit.leave()
    }
}

/// One scenario, both backends: 2 jobs created, one pulled and fulfilled with two targets
/// notified by the `respond` handler, the other pulled and its lease taken away.
@Suite struct JobStoreMetricsTests {
    enum Backend: String, CaseIterable { case redis, file }

    @Test(arguments: Backend.allCases)
    func theCountersFollowTheScenario(_ backend: Backend) async throws {
        let metrics = TestMetrics()
        let respond: JobResponder<String> = { _, _, _ in true }
        let dimensions = [("service", "test"), ("backend", backend.rawValue)]
        let store: any JobStore<String>
        let takeLeaseAway: @Sendable (JobID) async throws -> Void
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        switch backend {
        case .redis:
            let client = try await redis.connect()
            let prefix = "m" + UUID().uuidString.prefix(8).lowercased()
            store = try RedisJobStore<String>(client: client, prefix: prefix, leaseTimeout: .seconds(9),
                                              metricsFactory: metrics, metricsDimensions: [("service", "test")], respond: respond)
            takeLeaseAway = { id in try await client.send("DEL", "{\(prefix)}:lease:\(id.rawValue)") }
        case .file:
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("metrics-" + UUID().uuidString)
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            store = try FileJobStore<String>(directory: directory, leaseTimeout: .seconds(9),
                                             metricsFactory: metrics, metricsDimensions: [("service", "test")], respond: respond)
            takeLeaseAway = { id in
                try FileManager.default.removeItem(at: directory.appendingPathComponent("leases/work-\(id.rawValue)"))
            }
        }
        let first = try await store.create(request: "one")
        let second = try await store.create(request: "two")
        try await store.queue(first, target: "ada")
        try await store.queue(first, target: "grace")
        var leases: [JobLease] = []
        while let lease = try await store.pullWork() { leases.append(lease) }
        let done = try #require(leases.first { $0.id == first })
        let lost = try #require(leases.first { $0.id == second })
        try await store.fulfill(first, value: "1")
        try await done.release()
        try await takeLeaseAway(second)
        await lost.compromised.wait()

        #expect(count(metrics, "jobstore_created_total", dimensions) == 2)
        #expect(count(metrics, "jobstore_pulled_total", dimensions) == 2)
        #expect(count(metrics, "jobstore_fulfilled_total", dimensions) == 1)
        #expect(count(metrics, "jobstore_notified_total", dimensions) == 2)
        #expect(count(metrics, "jobstore_lease_lost_total", dimensions) == 1)
    }
}

@Suite struct ConnectionMetricsTests {
    @Test func aKilledConnectionCountsOneReconnect() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let connection = try await redis.connect { $0.metricsFactory = metrics }
        let id = try await connection.send("CLIENT", "ID").decode(Int.self)
        try await redis.connect().send("CLIENT", "KILL", "ID", id)
        try await eventually("the reconnect") { count(metrics, "hiredis_reconnects_total", []) == 1 }
        #expect(try await connection.send("PING").decode(String.self) == "PONG")
    }

    @Test func aCommandWithoutReplyInTimeCountsATimeoutAndStaysInFlightUntilItsReply() async throws {
        let metrics = TestMetrics()
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let connection = try await redis.connect { $0.metricsFactory = metrics }
        await #expect(throws: RedisError.self) {
            try await connection.send(RedisCommand("BLPOP", uniqueKey(), 1), timeout: .milliseconds(50))
        }
        #expect(count(metrics, "hiredis_timeouts_total", [("kind", "command")]) == 1)
        let inFlight = try metrics.expectMeter("hiredis_commands_in_flight")
        #expect(inFlight.values.max() == 1)
        try await eventually("the late reply") { inFlight.lastValue == 0 }
    }

    /// A loopback listener whose accept queue is full: the TCP handshake never completes.
    @Test func aConnectAttemptWithoutAnswerInTimeCountsAConnectTimeout() async throws {
        let metrics = TestMetrics()
        let listener = try FullBacklogListener()
        defer { withExtendedLifetime(listener) {} }
        var configuration = RedisConfiguration(host: "127.0.0.1", port: listener.port)
        configuration.connectTimeout = .milliseconds(300)
        configuration.metricsFactory = metrics
        let error = await #expect(throws: RedisError.self) { try await RedisConnection.connect(configuration) }
        #expect(error?.code == .timeout)
        #expect(count(metrics, "hiredis_timeouts_total", [("kind", "connect")]) == 1)
    }
}
