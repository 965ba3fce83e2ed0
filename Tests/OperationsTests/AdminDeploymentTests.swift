import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport
import Testing

/// `hiredis-admin` reaching Redis through Sentinel and on a cluster.
@Suite(.enabled(if: TestRedis.ownsServers)) struct AdminDeploymentTests {
    @Test func queuesThroughSentinelFindTheMaster() async throws {
        let master = try await RedisServer.start()
        let sentinel = try await RedisServer.startSentinel(monitoring: master.port, masterName: "ops", quorum: 1)
        defer { withExtendedLifetime((master, sentinel)) {} }
        let prefix = "s" + UUID().uuidString.prefix(8).lowercased()
        let queue = try WorkQueue(client: try await master.connect(), subscriber: try await RedisSubscriber.connect(master.configuration),
                                  options: WorkQueueOptions(prefix: prefix))
        try await queue.enqueue("mail", ["a", "b"])
        let run = try await AdminRun.run(["queues", "--json", "--sentinel", "127.0.0.1:\(sentinel.port)", "--master-name", "ops",
                                          "--queue-prefix", prefix])
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try run.json([QueueSummary].self) == [QueueSummary(name: "mail", waiting: 2, inFlight: 0, deadLetters: 0)])
    }

    /// Sentinels with a password of their own: `--sentinel-password-file` reaches them (the
    /// password never printed); without it the command fails with one line.
    @Test func sentinelsWithAPasswordAreReachedWithTheSentinelPasswordFile() async throws {
        let master = try await RedisServer.start()
        let sentinel = try await RedisServer.startSentinel(monitoring: master.port, masterName: "ops", quorum: 1,
                                                           ["--requirepass", "sentinel-s3cret"])
        defer { withExtendedLifetime((master, sentinel)) {} }
        let prefix = "p" + UUID().uuidString.prefix(8).lowercased()
        let queue = try WorkQueue(client: try await master.connect(), subscriber: try await RedisSubscriber.connect(master.configuration),
                                  options: WorkQueueOptions(prefix: prefix))
        try await queue.enqueue("mail", ["a"])
        let passwordFile = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-password-\(prefix)")
        try "sentinel-s3cret\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: passwordFile) }
        let options = ["--sentinel", "127.0.0.1:\(sentinel.port)", "--master-name", "ops", "--queue-prefix", prefix]

        let run = try await AdminRun.run(["queues", "--json", "--sentinel-password-file", passwordFile.path] + options)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try run.json([QueueSummary].self) == [QueueSummary(name: "mail", waiting: 1, inFlight: 0, deadLetters: 0)])
        #expect(!(run.stdout + run.stderr).contains("sentinel-s3cret"))

        let refused = try await AdminRun.run(["queues"] + options)
        #expect(refused.status != 0)
        #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
    }

    @Test func queuesAndLocksOnAClusterAreFoundOnEveryPrimary() async throws {
        let cluster = try await TestCluster.start(primaries: 3, replicas: 0)
        defer { withExtendedLifetime(cluster) {} }
        let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
        let prefix = "c" + UUID().uuidString.prefix(8).lowercased()
        let queue = try WorkQueue(client: client, subscriber: try await client.subscriber(), options: WorkQueueOptions(prefix: prefix))
        let names = (0..<6).map { "queue-\($0)" }   // spread over the primaries by their hash tags
        for name in names { try await queue.enqueue(name, ["t"]) }
        let locks = try CallbackQueue(client: client, pubsub: try await client.subscriber(),
                                      options: CallbackQueueOptions(channel: prefix, lockPrefix: prefix + ":",
                                                                    lock: LockOptions(timeout: .seconds(120))))
        var held: [Lock] = []   // 120 s: they outlive two admin runs on a loaded machine
        for name in names { held.append(try await locks.once(name)) }

        let seeds = cluster.nodes.flatMap { ["--cluster", "127.0.0.1:\($0.port)"] }
        let queues = try await AdminRun.run(["queues", "--json", "--queue-prefix", prefix] + seeds)
        #expect(queues.status == 0, "\(queues.stderr)")
        #expect(try queues.json([QueueSummary].self).map(\.name) == names)
        let listed = try await AdminRun.run(["locks", "--json", "--lock-prefix", prefix + ":"] + seeds)
        struct Report: Decodable { var locks: [LockInfo] }
        #expect(try listed.json(Report.self).locks.map(\.key) == names)
        for lock in held { try await lock.release() }
    }
}
