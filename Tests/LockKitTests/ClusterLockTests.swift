import Foundation
import Hiredis
import LockKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// LockKit on a real Redis Cluster (3 primaries, 1 replica each), unchanged: the same
/// `CallbackQueue` over a `RedisCluster` client.
@Suite(.serialized) struct ClusterLockTests {
    static func queue(_ cluster: TestCluster, channel: String = uniqueKey("channel"), lock: LockOptions = LockOptions())
        async throws -> (CallbackQueue, RedisCluster) {
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let queue = try CallbackQueue(client: client, pubsub: try await client.subscriber(),
                                      options: CallbackQueueOptions(channel: channel, lock: lock))
        return (queue, client)
    }

    @Test func locksOfAThousandKeysSpreadOverEveryPrimary() async throws {
        let cluster = try await TestCluster.start()
        let (queue, client) = try await Self.queue(cluster)
        var perPrimary: [RedisConfiguration.Endpoint: Int] = [:]
        var fences: Set<Int64> = []
        for index in 0..<1000 {
            let lock = try await queue.once("resource-\(index)")
            fences.insert(lock.fencingToken)
            perPrimary[client.primary(for: lock.redisKey)!, default: 0] += 1
            try await lock.release()
        }
        let counts = perPrimary.values.sorted()
        print("1,000 locks over the primaries: \(counts)")
        #expect(counts.count == 3)
        #expect(counts.allSatisfy { $0 > 250 })
        #expect(fences == [1], "each key has its own fencing counter, in its own slot")
    }

    @Test func multiLocksOverKeysInDifferentSlotsAreAllOrNothing() async throws {
        let cluster = try await TestCluster.start()
        let (queue, client) = try await Self.queue(cluster, lock: LockOptions(retries: 0))
        let keys = ["alpha", "bravo", "charlie", "delta", "echo"]
        #expect(Set(keys.map { client.primary(for: "dlock:" + $0)! }).count > 1, "the keys live on several primaries")
        let multi = try await queue.multi(keys)
        #expect(multi.locks.map(\.key) == keys)
        // Another owner cannot take any of them, and takes nothing.
        let (other, _) = try await Self.queue(cluster, lock: LockOptions(retries: 0))
        let failure = await catching { try await other.multi(["zulu", "charlie"]) }
        guard case .failure(let error as MultiLockError) = failure else {
            Issue.record("expected a MultiLockError, got \(failure)")
            return
        }
        #expect(error.errors.keys.sorted() == ["charlie"])
        #expect(try await client.send("EXISTS", "dlock:zulu").decode(Int.self) == 0, "nothing left taken")
        try await multi.extend()
        _ = await multi.release()
        let again = try await other.multi(["zulu", "charlie"])
        _ = await again.release()
    }

    /// Four processes increment a counter under one lock while the lock's slot (with its
    /// fencing counter) migrates to another primary: no lost update, fences keep growing.
    @Test func mutualExclusionHoldsAcrossProcessesThroughASlotMigration() async throws {
        let cluster = try await TestCluster.start()
        let key = "{counter-\(UUID().uuidString.prefix(8))}"
        let channel = uniqueKey("channel")
        let helpers = try (0..<4).map { _ in
            try HelperProcess(["lock-cycles", cluster.spec, key, "400", channel])
        }
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        // The lock key and the counter share the hash tag: one slot, moved under load.
        let slot = ClusterSlot.of(key)
        try await eventually(timeout: .seconds(30), "the helpers to start counting") {
            (try await client.send("GET", key).decode(Int?.self) ?? 0) > 20
        }
        let owner = try await cluster.owner(ofSlot: slot)
        let target = try await cluster.primaries().first { $0.port != owner.port }!
        try await cluster.migrate(slot: slot, to: target, batch: 1)
        let countedWhenMoved = try await client.send("GET", key).decode(Int.self)
        #expect(countedWhenMoved < 1600, "the slot moved while the processes were still counting")
        for helper in helpers {
            #expect(await helper.lines.collect().last == "done")
            #expect(await helper.exitStatus() == 0)
        }
        #expect(try await client.send("GET", key).decode(Int.self) == 1600)
        let fences = try await client.send("LRANGE", key + ":fences", 0, -1).decode([Int].self)
        #expect(fences.count == 1600)
        #expect(zip(fences, fences.dropFirst()).allSatisfy { $0 < $1 }, "fencing tokens strictly increase")
        #expect(try await cluster.owner(ofSlot: slot).port == target.port)
    }

    /// 3 processes × 5 callers of one id on the cluster: the job runs once.
    @Test func fanoutAcrossThreeProcessesRunsTheJobOnceOnTheCluster() async throws {
        let cluster = try await TestCluster.start()
        let channel = uniqueKey("channel"), id = uniqueKey("job"), runs = uniqueKey("runs")
        let helpers = try (0..<3).map { _ in
            try HelperProcess(["fanout", cluster.spec, channel, id, runs, "5", "3000", "30000", "15"])
        }
        for helper in helpers {
            let lines = await helper.lines.collect()
            #expect(lines.last == "results value-1 5", "\(lines)")
        }
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        #expect(try await client.send("GET", runs).decode(Int.self) == 1)
    }
}
