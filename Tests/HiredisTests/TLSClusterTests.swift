import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// Redis Cluster over TLS against real processes: 3 TLS-only primaries (`port 0`,
/// `tls-port`, `tls-cluster yes`), made with `redis-cli --cluster create --tls`.
@Suite(.enabled(if: TLSRedis.isAvailable, "needs hiredis >= 1.0 with libhiredis_ssl, and openssl (make test-tls)"))
struct TLSClusterTests {
    static func start() async throws -> TestCluster {
        try await TestCluster.start(primaries: 3, replicas: 0, tls: await TestCertificates.shared())
    }

    static func connect(_ cluster: TestCluster) async throws -> RedisCluster {
        var node = RedisConfiguration()
        node.tls = try await TestCertificates.shared().clientTLS
        node.commandTimeout = .seconds(15)
        return try await RedisCluster.connect(RedisClusterConfiguration(seeds: [cluster.seeds[0]], node: node))
    }

    /// One key in a slot of each primary, until every primary has one.
    static func keyPerPrimary(_ client: RedisCluster) -> [RedisConfiguration.Endpoint: String] {
        var keys: [RedisConfiguration.Endpoint: String] = [:]
        var index = 0
        while keys.count < client.primaries.count {
            let key = "tls-cluster:\(index)"
            if let primary = client.primary(for: key), keys[primary] == nil { keys[primary] = key }
            index += 1
        }
        return keys
    }

    /// The client learns the three primaries at their TLS ports (one seed given) and each
    /// key's command reaches the primary of its slot: a direct TLS connection to that
    /// primary (which would answer `MOVED` for another's key) reads it back.
    @Test func commandsReachEveryTLSPrimary() async throws {
        let cluster = try await Self.start()
        let client = try await Self.connect(cluster)
        #expect(Set(client.primaries) == Set(cluster.seeds))
        let keys = Self.keyPerPrimary(client)
        #expect(keys.count == 3)
        for (primary, key) in keys {
            try await client.send("SET", key, "on \(primary)")
            #expect(try await client.send("GET", key).decode(String.self) == "on \(primary)")
            var configuration = cluster.configuration
            configuration.endpoint = primary
            let direct = try await RedisConnection.connect(configuration)
            #expect(try await direct.send("GET", key).decode(String.self) == "on \(primary)")
            await direct.close()
        }
        await client.close()
    }

    /// A pipeline whose commands span the slots of every primary: one batch per node over
    /// TLS, replies in the caller's order.
    @Test func aPipelineAcrossTheTLSPrimariesKeepsTheCallersOrder() async throws {
        let cluster = try await Self.start()
        let client = try await Self.connect(cluster)
        let keys = (0..<60).map { "tls-pipeline:\($0)" }
        #expect(Set(keys.compactMap { client.primary(for: $0) }).count == 3)
        let sets = try await client.pipeline(keys.map { RedisCommand("SET", $0, "value of \($0)") })
        #expect(try sets.map { try $0.get() } == Array(repeating: .status("OK"), count: keys.count))
        let gets = try await client.pipeline(keys.map { RedisCommand("GET", $0) })
        #expect(try gets.map { try $0.get().decode(String.self) } == keys.map { "value of \($0)" })
        await client.close()
    }

    /// A slot moved to another primary (`MIGRATE` between the nodes over TLS, then
    /// `SETSLOT … NODE`): the client, still on the old map, gets `MOVED` and follows it to the
    /// new owner over TLS.
    @Test func aMovedAfterASlotMigrationIsFollowedOverTLS() async throws {
        let cluster = try await Self.start()
        let client = try await Self.connect(cluster)
        let key = "tls-moved:{slot}"
        try await client.send("SET", key, "before the move")
        let slot = ClusterSlot.of(key)
        let source = try #require(client.primary(for: key))
        let target = try #require(try await cluster.primaries().first { RedisConfiguration.Endpoint.tcp(host: $0.host, port: $0.port) != source })
        try await cluster.migrate(slot: slot, to: target)
        #expect(try await cluster.owner(ofSlot: slot).port == target.port)

        let before = client.redirections.moved
        #expect(try await client.send("GET", key).decode(String.self) == "before the move")
        #expect(client.redirections.moved > before)
        try await client.send("SET", key, "after the move")
        let direct = try await target.connect()
        #expect(try await direct.send("GET", key).decode(String.self) == "after the move")
        await direct.close()
        await client.close()
    }

    /// The cluster's subscriber uses the nodes' TLS settings too.
    @Test func aClusterSubscriberHearsMessagesOverTLS() async throws {
        let cluster = try await Self.start()
        let client = try await Self.connect(cluster)
        let subscriber = try await client.subscriber()
        let channel = uniqueKey("channel")
        let messages = try await subscriber.subscribe([channel])
        let heard = Locked<Set<String>>([])
        let listening = Task {
            for try await event in messages {
                if case .message(let message) = event { heard.withLock { _ = $0.insert(message.string) } }
            }
        }
        // Published on every primary in turn: a node forwards it over the TLS cluster bus,
        // once and best effort, so again from each primary not heard yet.
        let expected = Set(client.primaries.map { "from \($0)" })
        for _ in 0..<60 where heard.withLock({ $0 }) != expected {
            for primary in client.primaries where !heard.withLock({ $0.contains("from \(primary)") }) {
                _ = try await client.send(RedisCommand("PUBLISH", channel, "from \(primary)"), to: primary)
            }
            try? await eventually(timeout: .milliseconds(500), "the messages") { heard.withLock { $0 } == expected }
        }
        #expect(heard.withLock { $0 } == expected)
        listening.cancel()
        await subscriber.close()
        await client.close()
    }
}
