import Foundation
import Hiredis
import RedisTestSupport
import Synchronization
import Testing

/// Unit tests of the routing pieces: no server.
@Suite struct ClusterSlotTests {
    @Test func slotsAreRedisClusterSlots() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        #expect(ClusterSlot.of("123456789") == 12739)
        #expect(ClusterSlot.of("foo") == 12182)
        #expect(ClusterSlot.of("{user1000}.following") == ClusterSlot.of("user1000"))
        #expect(ClusterSlot.of("{}x") == ClusterSlot.of("{}x"))
        #expect(ClusterSlot.of("foo{}{bar}") != ClusterSlot.of("bar"))   // an empty tag does not count
        #expect(ClusterSlot.of("foo{{bar}}zap") == ClusterSlot.of("{bar"))
    }
}

/// Against a real cluster: 3 primaries, 1 replica each, on loopback. One cluster for the
/// suite's read-only tests keeps `make test` short; tests that change the topology make
/// their own.
@Suite(.serialized) struct ClusterTests {
    static func connect(_ cluster: TestCluster, _ configure: (inout RedisClusterConfiguration) -> Void = { _ in })
        async throws -> RedisCluster {
        var configuration = RedisClusterConfiguration(seeds: Array(cluster.seeds.prefix(2)))
        configuration.node.commandTimeout = .seconds(15)
        configure(&configuration)
        return try await RedisCluster.connect(configuration)
    }

    @Test func keysLandOnTheNodeThatOwnsTheirSlot() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        #expect(client.primaries.count == 3)
        let keys = (0..<10_000).map { "key:\($0)" }
        for batch in stride(from: 0, to: keys.count, by: 500) {
            // Concurrent senders, as a service would have.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for key in keys[batch..<batch + 500] {
                    group.addTask { try await client.send("SET", key, key) }
                }
                try await group.waitForAll()
            }
        }
        // Each primary holds exactly the keys whose slot it serves, as the server computes it.
        var total = 0
        var perNode: [Int] = []
        for primary in try await cluster.primaries() {
            let connection = try await primary.connect()
            let count = try await connection.send("DBSIZE").decode(Int.self)
            perNode.append(count)
            total += count
            // A sample: each key sits in a slot this node serves, as the server computes it
            // (a node answers MOVED for a key of another's slot, so a key is here or nowhere).
            for key in keys.prefix(300) {
                let slot = try await connection.send("CLUSTER", "KEYSLOT", key).decode(Int.self)
                #expect(slot == ClusterSlot.of(key))
                let owner = try await cluster.owner(ofSlot: slot)
                guard owner.port == primary.port else { continue }
                #expect(try await connection.send("EXISTS", key).decode(Int.self) == 1)
            }
            await connection.close()
        }
        #expect(total == keys.count)
        #expect(perNode.allSatisfy { $0 > 2_500 })
        print("10,000 keys over the primaries: \(perNode)")
        #expect(try await client.send("GET", "key:4242").decode(String.self) == "key:4242")
    }

    @Test func hashTaggedKeysStayTogetherAndCrossSlotCommandsAreRefusedBeforeSending() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        try await client.send("MSET", "{user:7}:name", "Ada", "{user:7}:mail", "ada@example.com")
        let values = try await client.send("MGET", "{user:7}:name", "{user:7}:mail").decode([String].self)
        #expect(values == ["Ada", "ada@example.com"])
        await #expect {
            try await client.send("MSET", "a", "1", "b", "2")
        } throws: { error in
            guard let error = error as? RedisError, error.code == .crossSlot else { return false }
            return error.message.contains("a") && error.message.contains("b")
        }
        let script = RedisScript("return redis.call('GET', KEYS[1])")
        #expect(try await client.run(script, keys: ["{user:7}:name"]).decode(String.self) == "Ada")
        await #expect { try await client.run(script, keys: ["x", "y"]) } throws: {
            ($0 as? RedisError)?.code == .crossSlot
        }
        // Nothing of the refused commands was written anywhere.
        #expect(try await client.send("EXISTS", "a").decode(Int.self) == 0)
        #expect(try await client.send("EXISTS", "b").decode(Int.self) == 0)
    }

    @Test func aPipelineAcrossThePrimariesKeepsTheCallersOrder() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        let keys = (0..<300).map { "p:\($0)" }
        let writes = try await client.pipeline(keys.map { RedisCommand("SET", $0, "v-" + $0) })
        #expect(writes.count == keys.count)
        #expect(writes.allSatisfy { (try? $0.get()) == .status("OK") })
        let reads = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
        for (key, read) in zip(keys, reads) {
            #expect(try read.get().decode(String.self) == "v-" + key)
        }
        #expect(Set(keys.compactMap { client.primary(for: $0) }).count == 3)
    }

    @Test func writesKeepWorkingWhileTheirSlotsMigrateAndEveryAcknowledgedValueIsReadable() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        // Keys in three slots, all owned by one primary at first.
        let tags = ["mig-a", "mig-b", "mig-c"]
        let acknowledged = Locked<[String: Int]>([:])
        let failures = Locked<[String]>([])
        let stop = Locked(false)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<50 {
                group.addTask {
                    var round = 0
                    while !stop.withLock({ $0 }) {
                        round += 1
                        let key = "{\(tags[writer % 3])}:w\(writer)"
                        do {
                            try await client.send("SET", key, round)
                            acknowledged.withLock { $0[key] = round }
                        } catch let error as RedisError {
                            failures.withLock { $0.append("\(error.code)") }
                        }
                    }
                }
            }
            // Move each tag's slot to another primary, in small batches, under the load.
            for tag in tags {
                let slot = ClusterSlot.of(tag)
                let owner = try await cluster.owner(ofSlot: slot)
                let target = try await cluster.primaries().first { $0.port != owner.port }!
                try await cluster.migrate(slot: slot, to: target, batch: 3)
            }
            stop.withLock { $0 = true }
            try await group.waitForAll()
        }
        // Typed errors only, and every acknowledged write is there.
        let failed = failures.withLock { $0 }
        #expect(failed.allSatisfy { ["timeout", "connectionClosed", "tooManyRedirections"].contains($0) })
        for (key, round) in acknowledged.withLock({ $0 }) {
            let stored = try await client.send("GET", key).decode(Int.self)
            #expect(stored >= round)
        }
        let counts = client.redirections
        print("resharding under load: \(acknowledged.withLock { $0.count }) keys, \(counts.moved) MOVED, \(counts.ask) ASK, \(failed.count) failed writes")
        #expect(counts.moved > 0)
    }

    @Test func aMigratingSlotIsServedThroughAsk() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        let tag = "{ask-test}"
        for index in 0..<20 { try await client.send("SET", "\(tag):\(index)", index) }
        let slot = ClusterSlot.of("ask-test")
        let owner = try await cluster.owner(ofSlot: slot)
        let target = try await cluster.primaries().first { $0.port != owner.port }!
        // Half the keys moved, the slot still MIGRATING: reads of moved keys get ASK.
        let moved = Locked(0)
        let readDuringMigration = Locked<[Int]>([])
        try await cluster.migrate(slot: slot, to: target, batch: 10) { () async throws -> Void in
            guard moved.withLock({ $0 += 1; return $0 }) == 1 else { return }
            for index in 0..<20 {
                let value = try await client.send("GET", "\(tag):\(index)").decode(Int.self)
                readDuringMigration.withLock { $0.append(value) }
            }
        }
        #expect(readDuringMigration.withLock { $0 } == Array(0..<20))
        #expect(client.redirections.ask > 0)
        for index in 0..<20 {
            #expect(try await client.send("GET", "\(tag):\(index)").decode(Int.self) == index)
        }
        #expect(client.redirections.moved > 0)
    }

    @Test func theClientFollowsAFailoverWithoutBeingRecreated() async throws {
        let cluster = try await TestCluster.start(nodeTimeout: .seconds(1))
        let client = try await Self.connect(cluster)
        let key = "failover-key"
        try await client.send("SET", key, 0)
        let primary = try await cluster.owner(ofSlot: ClusterSlot.of(key))
        let clock = ContinuousClock()
        let killedAt = clock.now
        await primary.kill()
        // Writes fail (typed) or wait until the promoted replica serves the slot.
        var recovered: Duration?
        var failures: [String] = []
        for round in 1...600 {
            do {
                try await client.send("SET", key, round)
                recovered = clock.now - killedAt
                break
            } catch let error as RedisError {
                failures.append("\(error.code)")
            }
        }
        let time = try #require(recovered)
        print("failover: recovered after \(time) (\(failures.count) failed attempts: \(Set(failures).sorted()))")
        let newOwner = try await cluster.owner(ofSlot: ClusterSlot.of(key))
        #expect(newOwner.port != primary.port)
        #expect(client.primary(for: key) == .tcp(host: "127.0.0.1", port: newOwner.port))
    }

    @Test func aSubscriberOnTheClusterHearsMessagesPublishedOnAnyNode() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        let subscriber = try await client.subscriber()
        let messages = try await subscriber.subscribe(["news"])
        let heard = Locked<Set<String>>([])
        let listening = Task {
            for try await event in messages {
                if case .message(let message) = event { heard.withLock { _ = $0.insert(message.string) } }
            }
        }
        // The cluster bus forwards a message once, best effort (a link that a loaded machine
        // made time out drops it): publish again from each primary not heard yet.
        let primaries = try await cluster.primaries()
        let expected = Set(primaries.map { "from \($0.port)" })
        for _ in 0..<60 where heard.withLock({ $0 }) != expected {
            for primary in primaries where !heard.withLock({ $0.contains("from \(primary.port)") }) {
                _ = try await client.send(RedisCommand("PUBLISH", "news", "from \(primary.port)"), to: .tcp(host: "127.0.0.1", port: primary.port))
            }
            try? await eventually(timeout: .milliseconds(500), "the messages") { heard.withLock { $0 } == expected }
        }
        #expect(heard.withLock { $0 } == expected)
        listening.cancel()
        await subscriber.close()
    }

    @Test func aSlotThatNoPrimaryServesIsATypedErrorAtTheCommandsTimeout() async throws {
        let cluster = try await TestCluster.start()
        let client = try await Self.connect(cluster)
        let slot = ClusterSlot.of("orphan")
        for node in cluster.nodes {
            let connection = try await node.connect()
            _ = try? await connection.send("CLUSTER", "DELSLOTS", slot)
            await connection.close()
        }
        try await eventually(timeout: .seconds(20), "every node to forget the slot") {
            for node in cluster.nodes {
                let connection = try await node.connect()
                defer { Task { await connection.close() } }
                let shards = try await connection.send("CLUSTER", "SLOTS")
                guard case .array(let ranges) = shards else { return false }
                for case .array(let range) in ranges {
                    let start = try range[0].decode(Int.self), end = try range[1].decode(Int.self)
                    if (start...end).contains(slot) { return false }
                }
            }
            return true
        }
        await #expect {
            try await client.send(RedisCommand("SET", "orphan", "x"), timeout: .seconds(1))
        } throws: { error in
            (error as? RedisError)?.code == .slotNotServed
        }
    }

    @Test func anUnreachableClusterIsATypedError() async throws {
        let port = try freeClusterPort()
        var configuration = RedisClusterConfiguration(seeds: [.tcp(host: "127.0.0.1", port: port)])
        configuration.node.connectTimeout = .seconds(1)
        await #expect { try await RedisCluster.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .clusterUnreachable
        }
        await #expect { try await RedisCluster.connect(RedisClusterConfiguration(seeds: [])) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
    }
}
