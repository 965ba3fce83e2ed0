import Foundation
import Hiredis
import LockKit
import RedisTestSupport
import Testing

/// Locks on a Sentinel-managed master (real redis-sentinel processes).
@Suite(.enabled(if: TestRedis.ownsServers)) struct LockHighAvailabilityTests {
    func queue(_ topology: SentinelTopology, minReplicas: Int, replicationTimeout: Duration = .seconds(5)) async throws -> CallbackQueue {
        var configuration = topology.configuration
        configuration.connectTimeout = .seconds(2)
        configuration.commandTimeout = .seconds(2) + replicationTimeout   // WAIT runs that long
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(300))
        var lock = LockOptions(timeout: .seconds(10), retries: 0)
        lock.minReplicas = minReplicas
        lock.replicationTimeout = replicationTimeout
        return try CallbackQueue(client: try await RedisConnection.connect(configuration),
                                 pubsub: try await RedisSubscriber.connect(configuration),
                                 options: CallbackQueueOptions(channel: "ha:locks", lock: lock))
    }

    @Test func minReplicasWaitsUntilTheReplicaHasTheLock() async throws {
        let topology = try await SentinelTopology.start(downAfter: .seconds(10))
        let locks = try await queue(topology, minReplicas: 1)
        let lock = try await locks.once("replicated")
        let replica = try await topology.replica.connect()
        #expect(try await replica.send("GET", lock.redisKey).decode(String?.self) == lock.token,
                "the replica has the lock when once() returns")
        try await lock.release()
    }

    @Test func moreReplicasThanThereAreFailsAndReleases() async throws {
        let topology = try await SentinelTopology.start(downAfter: .seconds(10))
        let locks = try await queue(topology, minReplicas: 2, replicationTimeout: .milliseconds(200))
        await #expect(throws: LockAcquisitionError.self) { try await locks.once("underreplicated") }
        #expect(try await locks.client.send("EXISTS", "dlock:underreplicated") == .integer(0), "given back")
    }

    /// With `minReplicas: 1` a lock's fencing counter reaches the replica before the lock
    /// is used, so after the master dies the promoted replica hands out larger tokens.
    /// The promoted replica has no replica of its own: `minReplicas: 1` is refused there
    /// until one is attached, while locks without it work at once.
    @Test func locksWorkAfterAFailoverAndFencingTokensKeepIncreasing() async throws {
        let topology = try await SentinelTopology.start()
        let replicated = try await queue(topology, minReplicas: 1, replicationTimeout: .seconds(1))
        let plain = try await queue(topology, minReplicas: 0)
        let before = try await replicated.once("resource")
        try await before.release()
        await topology.master.kill()
        var after: Lock?
        try await eventually(timeout: .seconds(60), "a lock on the promoted replica") {
            do {
                after = try await plain.once("resource")
                return try await plain.client.info("tcp_port") == "\(topology.replica.port)"
            } catch let error as RedisError where [.connectionClosed, .timeout, .noMasterAvailable, .server].contains(error.code) {
                return false
            } catch is LockAcquisitionError {
                return false   // a release that did not replicate: the lease runs out
            }
        }
        let lock = try #require(after)
        #expect(lock.fencingToken > before.fencingToken)
        try await lock.release()
        await #expect(throws: LockAcquisitionError.self, "no replica is left to acknowledge") {
            try await replicated.once("resource")
        }
    }
}
