import Foundation
import Hiredis
import RedisTestSupport

/// The cluster of the cluster shapes (3 primaries, 1 replica each, loopback): started by
/// the first shape that asks for it, killed by ``stop()`` at the end of the run.
actor BenchCluster {
    /// What the shapes need of the cluster.
    struct Layout: Sendable {
        let seeds: [RedisConfiguration.Endpoint]
        /// One primary, for the single-node figures.
        let primary: RedisConfiguration.Endpoint
        /// Keys taking the primaries in turn (any 3 in a row span all three).
        let keys: [String]
        /// Keys of `primary`'s slots, as many.
        let primaryKeys: [String]
    }

    private var starting: Task<(TestCluster, Layout), any Error>?

    /// Starts the cluster on first use and spreads keys over its primaries.
    func layout() async throws -> Layout {
        if starting == nil {
            starting = Task {
                let cluster = try await TestCluster.start()
                let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: cluster.seeds))
                defer { Task { await client.close() } }
                let primaries = client.primaries
                guard primaries.count == 3 else { throw BenchError("the cluster has \(primaries.count) primaries, not 3") }
                var byPrimary: [RedisConfiguration.Endpoint: [String]] = [:]
                var index = 0
                while primaries.contains(where: { byPrimary[$0, default: []].count < 256 }) {
                    let key = "bench:cluster:\(index)"
                    if let owner = client.primary(for: key), byPrimary[owner, default: []].count < 256 { byPrimary[owner, default: []].append(key) }
                    index += 1
                }
                print("cluster: 3 primaries + 3 replicas on 127.0.0.1 ports \(cluster.nodes.map { String($0.port) }.joined(separator: ", ")); single node: \(primaries[0])")
                let keys = (0..<256).flatMap { position in primaries.map { byPrimary[$0]![position] } }
                return (cluster, Layout(seeds: cluster.seeds, primary: primaries[0], keys: keys, primaryKeys: byPrimary[primaries[0]]!))
            }
        }
        return try await starting!.value.1
    }

    /// Kills every node of the cluster, if it was started.
    func stop() async {
        guard let started = try? await starting?.value else { return }
        starting = nil
        for node in started.0.nodes { await node.kill() }
    }
}

/// A single-node measurement taken right beside a cluster shape's, round by round: the
/// cluster figure is reported as a ratio to it.
struct Baseline: Sendable {
    let label: String
    let run: @Sendable (Context, Int) async throws -> Run
}

/// Sequential SETs, 50 tasks of SETs, and 50-command pipelines through ``RedisCluster``
/// (keys over the 3 primaries), each beside the same shape on one ``RedisConnection`` to
/// one of those primaries (keys of its slots).
func clusterShapes(_ context: Context) -> [Shape] {
    let value = "xxx"
    let single = "single node (1 RedisConnection to one primary)"
    return [
        Shape(name: "cluster: sequential SET, 1 in flight, keys over 3 primaries", unit: "ops/s", count: context.count(100_000),
              reference: nil, target: 0.9, ours: { context, count in
            try await withCluster(context) { client, keys in
                try await sequentialSets(count, keys) { try await client.send("SET", $0, value) }
            }
        }, baseline: Baseline(label: single) { context, count in
            try await withPrimary(context) { connection, keys in
                try await sequentialSets(count, keys) { try await connection.send("SET", $0, value) }
            }
        }),
        Shape(name: "cluster: 50 tasks, SET, keys over 3 primaries", unit: "ops/s", count: context.count(200_000),
              reference: nil, target: 0.9, ours: { context, count in
            try await withCluster(context) { client, keys in
                try await concurrentSets(count, keys) { try await client.send("SET", $0, value) }
            }
        }, baseline: Baseline(label: single) { context, count in
            try await withPrimary(context) { connection, keys in
                try await concurrentSets(count, keys) { try await connection.send("SET", $0, value) }
            }
        }),
        Shape(name: "cluster: explicit pipeline, 50 per batch over 3 primaries", unit: "ops/s", count: context.count(500_000),
              reference: nil, target: nil, ours: { context, count in
            try await withCluster(context) { client, keys in
                try await pipelines(count, keys) { try await client.pipeline($0) }
            }
        }, baseline: Baseline(label: single) { context, count in
            try await withPrimary(context) { connection, keys in
                try await pipelines(count, keys) { try await connection.pipeline($0) }
            }
        }),
    ]
}

private func withCluster(_ context: Context, _ body: (RedisCluster, [String]) async throws -> Run) async throws -> Run {
    let layout = try await context.cluster.layout()
    let client = try await RedisCluster.connect(RedisClusterConfiguration(seeds: layout.seeds))
    defer { Task { await client.close() } }
    let run = try await body(client, layout.keys)
    let redirections = client.redirections
    guard redirections.moved + redirections.ask + redirections.tryAgain == 0 else {
        throw BenchError("the cluster redirected the bench's commands (\(redirections)): the figures would not be routing's")
    }
    return run
}

private func withPrimary(_ context: Context, _ body: (RedisConnection, [String]) async throws -> Run) async throws -> Run {
    let layout = try await context.cluster.layout()
    var configuration = RedisConfiguration()
    configuration.endpoint = layout.primary
    let connection = try await RedisConnection.connect(configuration)
    defer { Task { await connection.close() } }
    return try await body(connection, layout.primaryKeys)
}

private func sequentialSets(_ count: Int, _ keys: [String], _ set: (String) async throws -> Void) async throws -> Run {
    try await timed(count) { tick in
        for index in 0..<count {
            let started = now()
            try await set(keys[index % keys.count])
            tick(now() - started)
        }
    }
}

private func concurrentSets(_ count: Int, _ keys: [String], _ set: @escaping @Sendable (String) async throws -> Void) async throws -> Run {
    try await timed(count) { tick in
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<50 {
                group.addTask {
                    for index in 0..<(count / 50) {
                        let started = now()
                        try await set(keys[(task + index * 50) % keys.count])
                        tick(now() - started)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}

/// Batches of 50 SETs over `keys` in turn (one latency per batch); a failed SET fails the run.
private func pipelines(_ count: Int, _ keys: [String],
                       _ send: ([RedisCommand]) async throws -> [Result<RedisReply, RedisError>]) async throws -> Run {
    let batch = (0..<50).map { RedisCommand("SET", keys[$0 % keys.count], "xxx") }
    return try await timed(count) { tick in
        for _ in 0..<(count / 50) {
            let started = now()
            for result in try await send(batch) { _ = try result.get() }
            tick(now() - started)
        }
    }
}
