import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// Real `redis-sentinel` processes on loopback: 1 master, 1 replica, 3 sentinels.
@Suite(.enabled(if: TestRedis.ownsServers)) struct SentinelTests {
    func port(_ connection: RedisConnection) async throws -> Int? {
        try await connection.info("tcp_port").flatMap { Int($0) }
    }

    @Test func connectsToTheMasterByName() async throws {
        let topology = try await SentinelTopology.start(downAfter: .seconds(10))
        let connection = try await RedisConnection.connect(topology.configuration)
        try await connection.send("SET", "sentinel:key", "value")
        #expect(try await connection.send("GET", "sentinel:key") == .bulk(Array("value".utf8)))
        #expect(try await port(connection) == topology.master.port)
        let role = try await connection.send("ROLE").decode([RedisReply].self)
        #expect(role.first == .bulk(Array("master".utf8)))
        await connection.close()
    }

    @Test func anUnknownMasterNameIsATypedError() async throws {
        let topology = try await SentinelTopology.start()
        let configuration = RedisConfiguration.sentinel(sentinels: topology.addresses, masterName: "nosuchmaster")
        await #expect { try await RedisConnection.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .unknownMaster
        }
    }

    @Test func noReachableSentinelIsATypedError() async throws {
        var configuration = RedisConfiguration.sentinel(
            sentinels: [("127.0.0.1", try freeLoopbackPort()), ("127.0.0.1", try freeLoopbackPort())], masterName: "mymaster")
        configuration.connectTimeout = .seconds(2)
        await #expect { try await RedisConnection.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .noSentinelReachable
        }
    }

    @Test func anEmptySentinelListIsRefused() async throws {
        let configuration = RedisConfiguration.sentinel(sentinels: [], masterName: "mymaster")
        await #expect { try await RedisConnection.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
    }

    /// The master is killed during a stream of writes: the connection ends up on the
    /// promoted replica without being recreated; commands in flight at the loss fail with
    /// `connectionClosed` (or time out waiting for the new master); later ones succeed.
    @Test func followsAFailoverWhenTheMasterIsKilled() async throws {
        let topology = try await SentinelTopology.start()
        var configuration = topology.configuration
        configuration.commandTimeout = .seconds(2)
        configuration.connectTimeout = .seconds(2)
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(300))
        let connection = try await RedisConnection.connect(configuration)
        let subscriber = try await RedisSubscriber.connect(configuration)
        let messages = try await subscriber.subscribe(["failover:news"])
        #expect(try await port(connection) == topology.master.port)

        let clock = ContinuousClock()
        var failures: [RedisError.Code] = []
        var firstFailure: ContinuousClock.Instant?
        var recovered: ContinuousClock.Instant?
        var writes = 0
        // A command in flight at the loss fails with connectionClosed (it may have run).
        let inFlight = Task { try await connection.send(RedisCommand("BLPOP", "failover:nothing", 30), timeout: .seconds(60)) }
        let observer = try await topology.master.connect()
        try await eventually("BLPOP to block on the master") { try await observer.info("blocked_clients") == "1" }
        await topology.master.kill()
        let killedAt = clock.now
        await #expect { try await inFlight.value } throws: { ($0 as? RedisError)?.code == .connectionClosed }
        let deadline = clock.now + .seconds(60)
        while clock.now < deadline {
            do {
                try await connection.send("INCR", "failover:counter")
                writes += 1
                // The old master is dead, so a write that succeeded on the replica's port
                // landed on the promoted replica. (No command need fail first: one sent
                // during the failover may wait for the reconnection and succeed.)
                if try await port(connection) == topology.replica.port {
                    recovered = clock.now
                    break
                }
            } catch let error as RedisError {
                if firstFailure == nil { firstFailure = clock.now }
                failures.append(error.code)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let back = try #require(recovered, "the connection never reached the promoted replica")
        print("sentinel failover: writes resumed \(back - killedAt) after the kill (first failure after \((firstFailure ?? back) - killedAt)); \(failures.count) failed commands, \(writes) writes")
        #expect(failures.allSatisfy { [.connectionClosed, .timeout, .noMasterAvailable].contains($0) }, "\(failures)")
        #expect(try await port(connection) == topology.replica.port)
        #expect(await connection.isOpen)

        // The subscriber followed too: it resubscribed on the new master, said so with a
        // gap, and then hears what is published there.
        let publisher = try await topology.replica.connect()
        let heard = try await within(.seconds(30)) { () async throws -> (gap: Bool, message: String?) in
            var gap = false
            for try await event in messages {
                switch event {
                case .gap:
                    gap = true
                    try await publisher.send("PUBLISH", "failover:news", "hello")
                case .message(let message):
                    return (gap, message.string)
                }
            }
            return (gap, nil)
        }
        #expect(heard?.gap == true)
        #expect(heard?.message == "hello")
        await subscriber.close()
    }

    /// A graceful failover turns the old master into a replica while the connection stays
    /// open: the first write gets READONLY, and the connection asks the sentinels again.
    @Test func aReadonlyReplyMakesTheConnectionFindTheNewMaster() async throws {
        let topology = try await SentinelTopology.start(downAfter: .seconds(10))
        var configuration = topology.configuration
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(300))
        let connection = try await RedisConnection.connect(configuration)
        #expect(try await port(connection) == topology.master.port)
        let sentinel = try await topology.sentinels[0].connect()
        // NOGOODSLAVE until the sentinel has its first INFO from the replica.
        try await eventually(timeout: .seconds(30), "the sentinel to start a failover") {
            do {
                try await sentinel.send("SENTINEL", "FAILOVER", topology.masterName)
                return true
            } catch let error as RedisError where error.code == .server {
                return error.message.contains("INPROG")
            }
        }
        try await eventually(timeout: .seconds(30), "the sentinels to name the replica") {
            try await sentinel.send("SENTINEL", "get-master-addr-by-name", topology.masterName)
                .decode([String].self).last == "\(topology.replica.port)"
        }
        // Demote the old master now, not at the sentinels' next look at it (about 10 s on):
        // the connection, still open to it, gets READONLY on its next write.
        let oldMaster = try await topology.master.connect()
        try await oldMaster.send("REPLICAOF", topology.replica.host, topology.replica.port)
        try await eventually(timeout: .seconds(60), "writes to land on the promoted replica") {
            do {
                try await connection.send("SET", "readonly:key", "x")
                return try await port(connection) == topology.replica.port
            } catch let error as RedisError where [.server, .connectionClosed, .timeout, .noMasterAvailable].contains(error.code) {
                return false
            }
        }
        #expect(try await port(connection) == topology.replica.port)
    }
}
