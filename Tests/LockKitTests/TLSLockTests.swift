import Foundation
import Hiredis
import LockKit
import RedisTestSupport
import Testing

/// LockKit's cross-process claims, with every process on TLS connections (`rediss://`).
@Suite(.enabled(if: TLSRedis.isAvailable, "needs hiredis >= 1.0 with libhiredis_ssl, and openssl (make test-tls)"))
struct TLSLockTests {
    /// 3 processes × 100 lock cycles of a non-atomic read-modify-write over TLS: no lost
    /// update, fencing tokens strictly increase.
    @Test func processesNeverOverlapOverTLS() async throws {
        let redis = try await TLSRedis.start()
        let key = uniqueKey("counter")
        let channel = uniqueKey("channel")
        let helpers = try (0..<3).map { _ in
            try HelperProcess(["lock-cycles", redis.helperSpec, key, "100", channel], environment: redis.helperEnvironment)
        }
        for helper in helpers {
            #expect(await helper.lines.collect().last == "done")
            #expect(await helper.exitStatus() == 0)
        }
        let connection = try await redis.connect()
        #expect(try await connection.send("GET", key).decode(Int.self) == 300)
        let fences = try await connection.send("LRANGE", key + ":fences", 0, -1).decode([Int].self)
        #expect(fences.count == 300)
        #expect(zip(fences, fences.dropFirst()).allSatisfy { $0 < $1 }, "fencing tokens strictly increase")
        await connection.close()
    }

    /// 3 processes × 100 lock cycles on a TLS-only cluster (3 primaries, `tls-cluster yes`):
    /// the helpers find the cluster through a `tls-cluster:` spec and trust the test
    /// authority; no lost update, fencing tokens strictly increase.
    @Test func processesNeverOverlapOnATLSCluster() async throws {
        let cluster = try await TestCluster.start(primaries: 3, replicas: 0, tls: await TestCertificates.shared())
        let key = "{counter-\(UUID().uuidString.prefix(8))}"
        let channel = uniqueKey("channel")
        let helpers = try (0..<3).map { _ in
            try HelperProcess(["lock-cycles", cluster.spec, key, "100", channel], environment: cluster.helperEnvironment)
        }
        for helper in helpers {
            #expect(await helper.lines.collect().last == "done")
            #expect(await helper.exitStatus() == 0)
        }
        var node = RedisConfiguration()
        node.tls = try await TestCertificates.shared().clientTLS
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds, node: node))
        #expect(try await client.send("GET", key).decode(Int.self) == 300)
        let fences = try await client.send("LRANGE", key + ":fences", 0, -1).decode([Int].self)
        #expect(fences.count == 300)
        #expect(zip(fences, fences.dropFirst()).allSatisfy { $0 < $1 }, "fencing tokens strictly increase")
        await client.close()
    }

    /// 2 processes × 3 callers fan out one job over TLS: it runs once, all 6 get its value.
    @Test func fanoutAcrossProcessesRunsTheJobOnceOverTLS() async throws {
        let redis = try await TLSRedis.start()
        let channel = uniqueKey("channel")
        let id = uniqueKey("job")
        let runs = uniqueKey("runs")
        let helpers = try (0..<2).map { _ in
            try HelperProcess(["fanout", redis.helperSpec, channel, id, runs, "3", "3000", "30000", "6"], environment: redis.helperEnvironment)
        }
        for helper in helpers {
            let lines = await helper.lines.collect()
            #expect(lines.last == "results value-1 3", "\(lines)")
        }
        let connection = try await redis.connect()
        #expect(try await connection.send("GET", runs).decode(Int.self) == 1)
        await connection.close()
    }
}
