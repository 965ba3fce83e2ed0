import Foundation
import Hiredis

/// A real Redis Cluster on loopback: 3 primaries with 1 replica each (by default), made
/// with `redis-cli --cluster create`, free ports (≤ 55535, bus port free too) and
/// temporary directories. Servers are killed when the value is released.
public struct TestCluster: Sendable {
    public let nodes: [RedisServer]

    /// Starts `primaries × (1 + replicas)` nodes, creates the cluster and waits until every
    /// node reports `cluster_state:ok`, knows every other node, and every replica is in sync.
    ///
    /// With `tls`, every node is TLS-only (``RedisServer/startTLSOnly(tls:_:)``: `port 0`,
    /// `tls-port`) with `tls-cluster yes` and `tls-replication yes`, so the cluster bus,
    /// replication and `MIGRATE` are TLS as well; `redis-cli --cluster create --tls` makes
    /// the cluster, and every node's ``RedisServer/configuration`` (so the helpers here)
    /// trusts the test authority.
    ///
    /// `nodeTimeout`: how long a primary may be silent before its replica takes over. 5 s
    /// unless given, so that a loaded machine stalling a node for a second or two does not
    /// fail it over under a test about something else; tests that kill a primary give 1 s
    /// (failovers then take about 2 s).
    public static func start(primaries: Int = 3, replicas: Int = 1, tls: TestCertificates? = nil,
                             nodeTimeout: Duration = .seconds(5)) async throws -> TestCluster {
        var nodes: [RedisServer] = []
        for _ in 0..<(primaries * (1 + replicas)) {
            nodes.append(try await RedisServer.startClusterNode(nodeTimeoutMilliseconds: Int(nodeTimeout.redisMilliseconds),
                                                                tls.map { $0.serverArguments(cluster: true) } ?? [],
                                                                tls: tls?.clientTLS))
        }
        let cli = ChildProcess()
        // Under coreutils' `timeout`: `redis-cli --cluster create` waits for ever for nodes
        // that never agree (a TLS cluster bus without client certificates, for one).
        // (macOS has no `timeout` unless coreutils is installed: there it runs bare.)
        let timeout = findExecutable("timeout")
        let bounded = timeout.hasPrefix("/")
        cli.executableURL = URL(fileURLWithPath: bounded ? timeout : findExecutable("redis-cli"))
        cli.arguments = (bounded ? ["--kill-after=5", "60", findExecutable("redis-cli")] : [])
            + (tls.map { ["--tls", "--cacert", $0.caCertificate] } ?? [])
            + ["--cluster", "create"] + nodes.map { "127.0.0.1:\($0.port)" }
            + ["--cluster-replicas", "\(replicas)", "--cluster-yes"]
        let log = try await cli.runToEnd()
        guard cli.terminationStatus == 0 else {
            throw TestSupportError("redis-cli --cluster create failed (status \(cli.terminationStatus); 124: it did not finish "
                                   + "within 60 s):\n\(String(decoding: log.suffix(2000), as: UTF8.self))")
        }
        let cluster = TestCluster(nodes: nodes)
        try await cluster.waitUntilHealthy(nodes: nodes.count)
        return cluster
    }

    /// Seed addresses for a cluster client.
    public var seeds: [RedisConfiguration.Endpoint] { nodes.map { .tcp(host: $0.host, port: $0.port) } }

    /// A configuration reaching one node (for a plain connection or a subscriber).
    public var configuration: RedisConfiguration { nodes[0].configuration }

    /// Waits until every running node says `cluster_state:ok`, sees `nodes` nodes that are
    /// not failed, and every replica's link to its primary is up.
    public func waitUntilHealthy(nodes expected: Int? = nil, timeout: Duration = .seconds(30)) async throws {
        let live = nodes.filter { $0.pid != nil }
        for node in live {
            let connection = try await node.connect()
            defer { Task { await connection.close() } }
            try await eventually(timeout: timeout, "node \(node.port) to see a healthy cluster") {
                let info = try await connection.send("CLUSTER", "INFO").decode(String.self)
                guard info.contains("cluster_state:ok") else { return false }
                let table = try await connection.send("CLUSTER", "NODES").decode(String.self)
                let lines = table.split(separator: "\n")
                let healthy = lines.filter { !$0.contains("fail") && !$0.contains("handshake") && !$0.contains("noaddr") }
                if let expected, healthy.count != expected { return false }
                let role = try await connection.send("ROLE")
                if case .array(let parts) = role, let first = parts.first, (try? first.decode(String.self)) == "slave" {
                    return try await connection.info("master_link_status") == "up"
                }
                return true
            }
        }
    }

    /// The node (among the running ones) that serves `slot` as primary.
    public func owner(ofSlot slot: Int) async throws -> RedisServer {
        for node in nodes where node.pid != nil {
            let connection = try await node.connect()
            defer { Task { await connection.close() } }
            guard try await isPrimary(connection) else { continue }
            let id = try await connection.send("CLUSTER", "MYID").decode(String.self)
            let owned = try await slots(of: id, asSeenBy: connection)
            if owned.contains(slot) { return node }
        }
        throw TestSupportError("no running primary serves slot \(slot)")
    }

    /// The running primaries.
    public func primaries() async throws -> [RedisServer] {
        var result: [RedisServer] = []
        for node in nodes where node.pid != nil {
            let connection = try await node.connect()
            if try await isPrimary(connection) { result.append(node) }
            await connection.close()
        }
        return result
    }

    /// The slot of `key`, as the cluster computes it.
    public func slot(of key: String) async throws -> Int {
        let connection = try await nodes.first { $0.pid != nil }!.connect()
        defer { Task { await connection.close() } }
        return try await connection.send("CLUSTER", "KEYSLOT", key).decode(Int.self)
    }

    /// Moves `slot` from the primary that serves it to `target`, the way `redis-cli
    /// --cluster reshard` does: IMPORTING on the target, MIGRATING on the source, `MIGRATE`
    /// of the keys in batches of `batch` (clients get `ASK` for keys already moved), then
    /// `SETSLOT … NODE` everywhere (clients get `MOVED`). `between` runs after each batch.
    public func migrate(slot: Int, to target: RedisServer, batch: Int = 10,
                        between: @Sendable () async throws -> Void = {}) async throws {
        let source = try await owner(ofSlot: slot)
        guard source.port != target.port else { return }
        let from = try await source.connect()
        let to = try await target.connect()
        defer { Task { await from.close(); await to.close() } }
        let fromID = try await from.send("CLUSTER", "MYID").decode(String.self)
        let toID = try await to.send("CLUSTER", "MYID").decode(String.self)
        try await to.send("CLUSTER", "SETSLOT", slot, "IMPORTING", fromID)
        try await from.send("CLUSTER", "SETSLOT", slot, "MIGRATING", toID)
        while true {
            let keys = try await from.send("CLUSTER", "GETKEYSINSLOT", slot, batch).decode([String].self)
            if keys.isEmpty { break }
            var command = RedisCommand("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS")
            command.append(contentsOf: keys)
            try await from.send(command)
            try await between()
        }
        for node in nodes where node.pid != nil {
            let connection = try await node.connect()
            guard try await isPrimary(connection) else {
                await connection.close()
                continue
            }
            try await connection.send("CLUSTER", "SETSLOT", slot, "NODE", toID)
            await connection.close()
        }
    }

    /// Kills `node` (SIGKILL) and, when it was a primary, waits until a replica took over
    /// its slots and the cluster is `ok` again.
    public func kill(_ node: RedisServer) async throws {
        await node.kill()
        try await waitUntilHealthy()
    }

    private func isPrimary(_ connection: RedisConnection) async throws -> Bool {
        guard case .array(let parts) = try await connection.send("ROLE"), let first = parts.first else { return false }
        return try first.decode(String.self) == "master"
    }

    private func slots(of id: String, asSeenBy connection: RedisConnection) async throws -> [Int] {
        let table = try await connection.send("CLUSTER", "NODES").decode(String.self)
        guard let line = table.split(separator: "\n").first(where: { $0.hasPrefix(id) }) else { return [] }
        var owned: [Int] = []
        for field in line.split(separator: " ").dropFirst(8) where !field.hasPrefix("[") {
            let bounds = field.split(separator: "-").compactMap { Int($0) }
            if bounds.count == 2 { owned += Array(bounds[0]...bounds[1]) } else if bounds.count == 1 { owned.append(bounds[0]) }
        }
        return owned
    }
}

/// A Redis to reach, as helper processes are told on their command line: a port, a
/// `redis://` URL, `cluster:host:port,host:port…` (seed nodes of a cluster), or
/// `tls-cluster:host:port,…` (a TLS-only cluster; the authority to trust comes from
/// ``caEnvironmentVariable``, as for a `rediss://` URL).
public enum RedisTarget: Sendable {
    case single(RedisConfiguration)
    /// Seed nodes, and the configuration of every node connection (TLS, for one).
    case cluster([RedisConfiguration.Endpoint], node: RedisConfiguration)

    public init(_ spec: String) throws {
        if let port = Int(spec) {
            self = .single(RedisConfiguration(host: "127.0.0.1", port: port))
        } else if let prefix = ["cluster:", "tls-cluster:"].first(where: spec.hasPrefix) {
            let seeds = spec.dropFirst(prefix.count).split(separator: ",").compactMap { seed -> RedisConfiguration.Endpoint? in
                guard let colon = seed.lastIndex(of: ":"), let port = Int(seed[seed.index(after: colon)...]) else { return nil }
                return .tcp(host: String(seed[..<colon]), port: port)
            }
            guard !seeds.isEmpty else { throw TestSupportError("no seed in \(spec)") }
            var node = RedisConfiguration()
            if prefix == "tls-cluster:" {
                guard let ca = ProcessInfo.processInfo.environment[Self.caEnvironmentVariable] else {
                    throw TestSupportError("\(spec): \(Self.caEnvironmentVariable) names no certificate authority")
                }
                node.tls = RedisTLSConfiguration(caCertificateFile: ca)
            }
            self = .cluster(seeds, node: node)
        } else {
            var configuration = try RedisConfiguration(url: spec)
            if configuration.tls != nil, let ca = ProcessInfo.processInfo.environment[Self.caEnvironmentVariable] {
                configuration.tls?.caCertificateFile = ca
            }
            self = .single(configuration)
        }
    }

    /// For a `rediss://` or `tls-cluster:` spec: the certificate authority to trust (the tests' own).
    public static let caEnvironmentVariable = "HIREDISKIT_TEST_TLS_CA"

    /// A new client: a connection, or a cluster client.
    public func client() async throws -> any RedisClient {
        switch self {
        case .single(let configuration): return try await RedisConnection.connect(configuration)
        case .cluster(let seeds, let node): return try await RedisCluster.connect(RedisClusterConfiguration(seeds: seeds, node: node))
        }
    }

    /// A new subscriber (on a cluster: one that moves between nodes).
    public func subscriber() async throws -> RedisSubscriber {
        switch self {
        case .single(let configuration): return try await RedisSubscriber.connect(configuration)
        case .cluster(let seeds, let node):
            var configuration = node
            configuration.endpoint = seeds[0]
            configuration.fallbackEndpoints = Array(seeds.dropFirst())
            return try await RedisSubscriber.connect(configuration)
        }
    }
}

extension TestCluster {
    /// The spec helper processes take (``RedisTarget``).
    /// `tls-cluster:` for a TLS-only cluster: its helpers need ``helperEnvironment`` too.
    public var spec: String {
        (nodes[0].tls == nil ? "cluster:" : "tls-cluster:") + nodes.map { "127.0.0.1:\($0.port)" }.joined(separator: ",")
    }

    /// The environment of helper processes: for a TLS-only cluster, the authority to trust.
    public var helperEnvironment: [String: String] {
        guard let ca = nodes[0].tls?.caCertificateFile else { return [:] }
        return [RedisTarget.caEnvironmentVariable: ca]
    }
}
