import Logging
import Synchronization

/// How to reach a Redis Cluster: a few seed nodes, and the options every node connection
/// shares (authentication, timeouts, logger) taken from ``node``.
public struct RedisClusterConfiguration: Sendable {
    /// Nodes to ask for the topology at start-up (any of them; more is sturdier). Later
    /// refreshes ask the nodes the topology itself names first.
    public var seeds: [RedisConfiguration.Endpoint]
    /// The template of every node connection: username, password, timeouts, client name,
    /// logger. Its endpoint is ignored; `database` must be 0 (a cluster has one database).
    public var node: RedisConfiguration
    /// How many `MOVED`/`ASK` redirections one command may follow before it fails with
    /// ``RedisError/Code/tooManyRedirections`` (default 16).
    public var maximumRedirections: Int = 16

    /// A cluster reached through `seeds` (any few of its nodes: the rest are learned from
    /// them), each node connected with `node`'s settings.
    public init(seeds: [RedisConfiguration.Endpoint], node: RedisConfiguration = RedisConfiguration()) {
        self.seeds = seeds
        self.node = node
    }

    func validate() throws {
        guard !seeds.isEmpty else { throw RedisError.invalidArgument("a cluster configuration needs at least one seed node") }
        guard node.database == 0 else { throw RedisError.invalidArgument("a Redis Cluster has only database 0") }
        guard node.sentinel == nil else { throw RedisError.invalidArgument("a cluster node cannot be found through Sentinel") }
        guard maximumRedirections >= 1 else { throw RedisError.invalidArgument("maximumRedirections must be at least 1") }
        try node.validate()
    }
}

/// A Redis Cluster client: it learns the topology (`CLUSTER SHARDS`, or `CLUSTER SLOTS`),
/// keeps one multiplexed ``RedisConnection`` per primary, and sends each command to the
/// primary of its key's slot (hash tags honoured).
///
/// - `MOVED`: the slot map is corrected, a refresh is started (one at a time), and the
///   command is sent again to the node named.
/// - `ASK`: `ASKING` and the command are sent once to the node named (a slot in migration).
/// - `TRYAGAIN`, `CLUSTERDOWN`: tried again with a growing pause until the command's timeout.
/// - A lost primary: the topology is refreshed until a replica took over; a command that
///   had certainly not been sent (``RedisError/wasNeverSent``) goes to the new primary, one
///   that may have run fails with ``RedisError/Code/connectionClosed``, never re-sent blindly.
/// - Keys of one command in different slots: ``RedisError/Code/crossSlot`` before sending.
///
/// ```swift
/// let cluster = try await RedisCluster.connect(RedisClusterConfiguration(
///     seeds: [.tcp(host: "10.0.0.1", port: 6379), .tcp(host: "10.0.0.2", port: 6379)]))
/// try await cluster.send("SET", "user:{42}:name", "Ada")
/// ```
public final class RedisCluster: RedisClient {
    /// The seeds and node settings this client was made with.
    public let configuration: RedisClusterConfiguration
    private let state: Mutex<State>
    var logger: Logger { configuration.node.logger }

    private struct State {
        var topology = ClusterTopology.empty
        var connections: [RedisConfiguration.Endpoint: Task<RedisConnection, any Error>] = [:]
        /// The connections of `connections` that are up: the hot path takes them without a wait.
        var ready: [RedisConfiguration.Endpoint: RedisConnection] = [:]
        var refresh: Task<ClusterTopology, any Error>?
        var keys = CommandKeys()
        var closed = false
        var redirections = RedirectionCounts()
    }

    /// How often commands were redirected, for tests and diagnostics.
    public struct RedirectionCounts: Sendable, Hashable {
        /// `MOVED` replies followed (a slot had moved for good; the topology was refreshed).
        public var moved = 0
        /// `ASK` replies followed (a slot in migration; the command went to its target once).
        public var ask = 0
        /// `TRYAGAIN` replies waited out (a multi-key command during a slot migration).
        public var tryAgain = 0
        /// Topology refreshes (`CLUSTER SHARDS`, or `CLUSTER SLOTS` before Redis 7).
        public var refreshes = 0
    }

    private init(configuration: RedisClusterConfiguration) {
        self.configuration = configuration
        state = Mutex(State())
    }

    /// Connects to the cluster: asks the seeds for the topology and the command table.
    ///
    /// - Throws: ``RedisError/Code/invalidArgument`` for a bad configuration,
    ///   ``RedisError/Code/clusterUnreachable`` when no seed answered.
    public static func connect(_ configuration: RedisClusterConfiguration) async throws -> RedisCluster {
        try configuration.validate()
        let cluster = RedisCluster(configuration: configuration)
        let topology = try await cluster.refreshTopology()
        if let endpoint = topology.primaries.first, let connection = try? await cluster.connection(to: endpoint),
           let reply = try? await connection.send(RedisCommand("COMMAND")) {
            let specs = CommandKeys.parse(reply)
            if !specs.isEmpty { cluster.state.withLock { $0.keys = CommandKeys(specs: specs) } }
        }
        return cluster
    }

    /// The primaries of the last topology read.
    public var primaries: [RedisConfiguration.Endpoint] { state.withLock { $0.topology.primaries } }

    /// The primary serving `key`'s slot in the last topology read.
    public func primary(for key: String) -> RedisConfiguration.Endpoint? {
        state.withLock { $0.topology.owner(of: ClusterSlot.of(key)) }
    }

    /// Redirections and refreshes so far.
    public var redirections: RedirectionCounts { state.withLock { $0.redirections } }

    /// Closes every node connection. Commands in flight fail with
    /// ``RedisError/Code/connectionClosed``.
    public func close() async {
        let tasks = state.withLock { state -> [Task<RedisConnection, any Error>] in
            state.closed = true
            state.ready = [:]
            defer { state.connections = [:] }
            return Array(state.connections.values)
        }
        for task in tasks { if let connection = try? await task.value { await connection.close() } }
    }

    // MARK: Sending

    public nonisolated(nonsending) func send(_ command: RedisCommand, timeout: Duration? = nil) async throws -> RedisReply {
        try command.validate()
        let slot = try await slot(of: command)
        return try await send(command, slot: slot, timeout: timeout)
    }

    /// Sends a command and arguments, routed by its keys.
    @discardableResult
    public nonisolated(nonsending) func send<each Argument: RedisArgument>(_ name: String, _ arguments: repeat each Argument) async throws -> RedisReply {
        try await send(RedisCommand(name, repeat each arguments), timeout: nil)
    }

    public nonisolated(nonsending) func send(_ command: RedisCommand, routedBy key: [UInt8], timeout: Duration? = nil) async throws -> RedisReply {
        try command.validate()
        return try await send(command, slot: ClusterSlot.of(key), timeout: timeout)
    }

    /// Sends `command` to one node, as it is (no routing, no redirection): for per-node
    /// commands such as `INFO`, `DBSIZE`, `SCAN` or `CLUSTER NODES`.
    public func send(_ command: RedisCommand, to node: RedisConfiguration.Endpoint, timeout: Duration? = nil) async throws -> RedisReply {
        try command.validate()
        return try await connection(to: node).send(command, timeout: timeout)
    }

    public nonisolated(nonsending) func run(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = [],
                    timeout: Duration? = nil) async throws -> RedisReply {
        var slot: Int?
        var bytes: [UInt8] = []
        for key in keys {
            bytes.removeAll(keepingCapacity: true)
            key.appendRedisBytes(to: &bytes)
            let keySlot = ClusterSlot.of(bytes)
            if let slot, slot != keySlot {
                throw RedisError(.crossSlot, "the keys of a script must share one slot (use a hash tag): " + describe(keys))
            }
            slot = keySlot
        }
        if script.sha1 == nil {
            let load = RedisCommand("SCRIPT", "LOAD", script.source)
            let loaded = try await send(load, slot: slot, timeout: timeout).decode(String.self)
            script.remember(loaded)
        }
        do {
            return try await send(script.command("EVALSHA", script.sha1!, keys: keys, arguments: arguments), slot: slot, timeout: timeout)
        } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
            return try await send(script.command("EVAL", script.source, keys: keys, arguments: arguments), slot: slot, timeout: timeout)
        }
    }

    public nonisolated(nonsending) func pipeline(_ commands: [RedisCommand], timeout: Duration? = nil) async throws -> [Result<RedisReply, RedisError>] {
        for command in commands { try command.validate() }
        var routes: [Int?] = []
        routes.reserveCapacity(commands.count)
        for command in commands { routes.append(try await slot(of: command)) }
        let slots = routes
        // One batch per node, sent concurrently; results back in the caller's order.
        var groups: [RedisConfiguration.Endpoint: [Int]] = [:]
        let topology = state.withLock { $0.topology }
        for (index, slot) in slots.enumerated() {
            var endpoint = slot.flatMap { topology.owner(of: $0) }
            if endpoint == nil { endpoint = try await self.endpoint(for: slot) }
            groups[endpoint!, default: []].append(index)
        }
        var results = [Result<RedisReply, RedisError>?](repeating: nil, count: commands.count)
        try await withThrowingTaskGroup(of: [(Int, Result<RedisReply, RedisError>)].self) { group in
            for (endpoint, indices) in groups {
                group.addTask {
                    let batch = indices.map { commands[$0] }
                    let replies: [Result<RedisReply, RedisError>]
                    do {
                        replies = try await self.connection(to: endpoint).pipeline(batch, timeout: timeout)
                    } catch let error as RedisError where error.wasNeverSent || error.code == .connectionFailed {
                        // Nothing of this batch ran: each goes the long way, with routing.
                        self.forget(endpoint)
                        var one: [(Int, Result<RedisReply, RedisError>)] = []
                        for index in indices {
                            one.append((index, await self.result { try await self.send(commands[index], slot: slots[index], timeout: timeout) }))
                        }
                        return one
                    }
                    var out: [(Int, Result<RedisReply, RedisError>)] = []
                    for (position, reply) in replies.enumerated() {
                        let index = indices[position]
                        if case .failure(let error) = reply, Self.isRedirection(error) {
                            // Moved, in migration or refused for now: this one again, routed.
                            out.append((index, await self.result { try await self.send(commands[index], slot: slots[index], timeout: timeout) }))
                        } else {
                            out.append((index, reply))
                        }
                    }
                    return out
                }
            }
            for try await batch in group {
                for (index, result) in batch { results[index] = result }
            }
        }
        return results.map { $0! }
    }

    public func scanKeys(matching pattern: String) async throws -> [String] {
        var keys: [String] = []
        for primary in try await currentTopology().primaries {
            keys += try await connection(to: primary).scanKeys(matching: pattern)
        }
        return keys
    }

    /// A subscriber for classic pub/sub on the cluster (messages published on any node
    /// reach every node): connected to one node, it moves to another known node when its
    /// node is lost, and reports the gap as every ``RedisSubscriber`` does.
    public func subscriber() async throws -> RedisSubscriber {
        let nodes = try await currentTopology().nodes
        var configuration = configuration.node
        configuration.endpoint = nodes.first ?? configuration.endpoint
        configuration.fallbackEndpoints = Array(nodes.dropFirst()) + self.configuration.seeds
        return try await RedisSubscriber.connect(configuration)
    }

    // MARK: Routing

    private func result(_ body: () async throws -> RedisReply) async -> Result<RedisReply, RedisError> {
        do {
            return .success(try await body())
        } catch let error as RedisError {
            return .failure(error)
        } catch {
            return .failure(RedisError(.connectionClosed, "\(error)"))
        }
    }

    private static func isRedirection(_ error: RedisError) -> Bool {
        guard let prefix = error.serverErrorPrefix else { return false }
        return prefix == "MOVED" || prefix == "ASK" || prefix == "TRYAGAIN" || prefix == "CLUSTERDOWN"
    }

    /// The one slot of `command`'s keys; `nil` for a keyless command.
    func slot(of command: RedisCommand) async throws -> Int? {
        let table = state.withLock { $0.keys }   // routed outside the lock
        switch try table.route(command) {
        case .slot(let slot): return slot
        case .askServer:
            var getKeys = RedisCommand("COMMAND", "GETKEYS")
            command.forEachWord { _, bytes in
                getKeys.append(Array(bytes))
                return true
            }
            let keys = try await send(getKeys, slot: nil, timeout: nil).decode([RedisBytes].self).map(\.bytes)
            guard let first = keys.first else { return nil }
            let slot = ClusterSlot.of(first)
            for key in keys.dropFirst() where ClusterSlot.of(key) != slot {
                throw RedisError(.crossSlot, "the keys of \(command.name) are in different slots (use a hash tag): "
                                 + keys.map { String(decoding: $0.prefix(64), as: UTF8.self) }.joined(separator: ", "))
            }
            return slot
        }
    }

    private func describe(_ keys: [any RedisArgument]) -> String {
        keys.map { key in
            var bytes: [UInt8] = []
            key.appendRedisBytes(to: &bytes)
            return String(decoding: bytes.prefix(64), as: UTF8.self)
        }.joined(separator: ", ")
    }

    /// The primary for `slot` (any primary for `nil`); refreshes once when it is unknown.
    private func endpoint(for slot: Int?) async throws -> RedisConfiguration.Endpoint {
        let topology = state.withLock { $0.topology }
        if let endpoint = Self.pick(slot, in: topology) { return endpoint }
        if let endpoint = Self.pick(slot, in: try await refreshTopology()) { return endpoint }
        throw RedisError(.slotNotServed, "no primary serves slot \(slot.map(String.init) ?? "any")")
    }

    private static func pick(_ slot: Int?, in topology: ClusterTopology) -> RedisConfiguration.Endpoint? {
        if let slot { return topology.owner(of: slot) }
        return topology.primaries.randomElement()
    }

    /// Sends `command` to the primary of `slot`, following redirections until its timeout.
    private func send(_ command: RedisCommand, slot: Int?, timeout: Duration?) async throws -> RedisReply {
        let clock = ContinuousClock()
        let limit = timeout ?? configuration.node.commandTimeout ?? .seconds(30)
        let deadline = clock.now + limit
        var redirected = 0
        var asking: RedisConfiguration.Endpoint?
        var moved: RedisConfiguration.Endpoint?
        var pause = Duration.milliseconds(20)
        var lastError: RedisError?
        func waitOrGiveUp(_ error: RedisError) async throws {
            lastError = error
            guard clock.now + pause < deadline else { throw error }
            try await Task.sleep(for: pause)
            pause = min(pause * 2, .milliseconds(500))
        }
        while true {
            try Task.checkCancellation()
            let remaining = deadline - clock.now
            guard remaining > .zero else {
                throw lastError ?? RedisError(.timeout, "no reply within \(limit)")
            }
            // The usual case: the slot's primary is known and its connection is up (one
            // lock, no wait).
            var ready: (RedisConfiguration.Endpoint, RedisConnection)?
            if asking == nil, moved == nil, let slot {
                ready = state.withLock { state in
                    state.topology.owner(of: slot).flatMap { endpoint in state.ready[endpoint].map { (endpoint, $0) } }
                }
            }
            let endpoint: RedisConfiguration.Endpoint
            do {
                if let ready {
                    endpoint = ready.0
                } else if let target = asking ?? moved {
                    endpoint = target
                } else {
                    endpoint = try await self.endpoint(for: slot)
                }
            } catch let error as RedisError where error.code == .slotNotServed || error.code == .clusterUnreachable {
                try await waitOrGiveUp(error)
                continue
            }
            do {
                let connection: RedisConnection
                if let ready { connection = ready.1 } else { connection = try await self.connection(to: endpoint) }
                if asking != nil {
                    let replies = try await connection.pipeline([RedisCommand("ASKING"), command], timeout: remaining)
                    asking = nil
                    return try replies[1].get()
                }
                moved = nil
                return try await connection.send(command, timeout: remaining)
            } catch let error as RedisError {
                if let prefix = error.serverErrorPrefix, prefix == "MOVED" || prefix == "ASK" {
                    redirected += 1
                    guard redirected <= configuration.maximumRedirections else {
                        throw RedisError(.tooManyRedirections, "\(command.name) was redirected \(redirected) times; last: \(error.message)")
                    }
                    guard let (target, movedSlot) = Self.redirection(error.message) else { throw error }
                    if prefix == "MOVED" {
                        state.withLock {
                            $0.topology.assign(movedSlot, to: target)
                            $0.redirections.moved += 1
                        }
                        moved = target
                        asking = nil
                        startRefresh()
                    } else {
                        state.withLock { $0.redirections.ask += 1 }
                        asking = target
                    }
                    continue
                }
                if let prefix = error.serverErrorPrefix, prefix == "TRYAGAIN" || prefix == "CLUSTERDOWN" {
                    state.withLock { $0.redirections.tryAgain += 1 }
                    asking = nil
                    moved = nil
                    if prefix == "CLUSTERDOWN" { startRefresh() }
                    try await waitOrGiveUp(error)
                    continue
                }
                if error.wasNeverSent || error.code == .connectionFailed {
                    // The node is gone (or going): nothing was sent, so another try is safe
                    // once the topology names the slot's new primary.
                    forget(endpoint)
                    asking = nil
                    moved = nil
                    _ = try? await refreshTopology()
                    try await waitOrGiveUp(error)
                    continue
                }
                if error.code == .connectionClosed {
                    // The connection is gone, and the command may have run: it is never sent
                    // again. The next command finds the slot's primary anew. (A timeout
                    // leaves the connection to the others in flight on it.)
                    forget(endpoint)
                    startRefresh()
                }
                throw error
            }
        }
    }

    /// `MOVED 3999 127.0.0.1:6381` → (endpoint, slot).
    static func redirection(_ message: String) -> (RedisConfiguration.Endpoint, Int)? {
        let parts = message.split(separator: " ")
        guard parts.count >= 3, let slot = Int(parts[1]), let colon = parts[2].lastIndex(of: ":"),
              let port = Int(parts[2][parts[2].index(after: colon)...]) else { return nil }
        var host = String(parts[2][..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (.tcp(host: host, port: port), slot)
    }

    // MARK: Connections and topology

    /// The pooled connection to `endpoint`, connecting once for every concurrent caller.
    func connection(to endpoint: RedisConfiguration.Endpoint) async throws -> RedisConnection {
        enum Pooled { case ready(RedisConnection), connecting(Task<RedisConnection, any Error>) }
        let pooled = try state.withLock { state -> Pooled in
            if state.closed { throw RedisError.closed("the cluster client is closed").neverSent() }
            if let ready = state.ready[endpoint] { return .ready(ready) }
            if let task = state.connections[endpoint] { return .connecting(task) }
            var configuration = self.configuration.node
            configuration.endpoint = endpoint
            // A lost node connection is not re-established in place: the pool makes a new
            // one where the topology says, so commands do not wait on a dead primary.
            configuration.reconnect = .never
            let task = Task { try await RedisConnection.connect(configuration) }
            state.connections[endpoint] = task
            return .connecting(task)
        }
        let task: Task<RedisConnection, any Error>
        switch pooled {
        case .ready(let connection): return connection
        case .connecting(let connecting): task = connecting
        }
        do {
            let connection = try await task.value
            state.withLock { state in if state.connections[endpoint] == task { state.ready[endpoint] = connection } }
            return connection
        } catch {
            forget(endpoint, task)
            if let error = error as? RedisError { throw error }
            throw RedisError(.connectionFailed, "\(endpoint): \(error)")
        }
    }

    /// Drops the pooled connection to `endpoint` (closed in the background).
    private func forget(_ endpoint: RedisConfiguration.Endpoint, _ only: Task<RedisConnection, any Error>? = nil) {
        let dropped = state.withLock { state -> Task<RedisConnection, any Error>? in
            guard let task = state.connections[endpoint], only == nil || only == task else { return nil }
            state.connections[endpoint] = nil
            state.ready[endpoint] = nil
            return task
        }
        if let dropped { Task { if let connection = try? await dropped.value { await connection.close() } } }
    }

    private func currentTopology() async throws -> ClusterTopology {
        let topology = state.withLock { $0.topology }
        if !topology.primaries.isEmpty { return topology }
        return try await refreshTopology()
    }

    /// Starts a refresh in the background unless one runs.
    private func startRefresh() {
        Task { _ = try? await self.refreshTopology() }
    }

    /// Reads the topology again (one refresh at a time: concurrent callers share it).
    @discardableResult
    func refreshTopology() async throws -> ClusterTopology {
        let task = state.withLock { state -> Task<ClusterTopology, any Error> in
            if let running = state.refresh { return running }
            let candidates = state.topology.nodes + configuration.seeds.filter { !state.topology.nodes.contains($0) }
            let task = Task { try await self.readTopology(from: candidates) }
            state.refresh = task
            return task
        }
        do {
            let topology = try await task.value
            state.withLock { state in
                if state.refresh == task { state.refresh = nil }
                state.topology = topology
                state.redirections.refreshes += 1
            }
            return topology
        } catch {
            state.withLock { state in if state.refresh == task { state.refresh = nil } }
            throw error
        }
    }

    /// Asks the candidates in turn; the first healthy, complete answer wins (a node that
    /// has not yet heard of a failover may still name a dead primary: a later refresh, or
    /// the next `MOVED`, corrects it).
    private func readTopology(from candidates: [RedisConfiguration.Endpoint]) async throws -> ClusterTopology {
        var failures: [String] = []
        var partial: ClusterTopology?
        for endpoint in candidates {
            var configuration = configuration.node
            configuration.endpoint = endpoint
            configuration.reconnect = .never
            configuration.commandTimeout = configuration.connectTimeout
            do {
                let connection = try await RedisConnection.connect(configuration)
                defer { Task { await connection.close() } }
                let topology: ClusterTopology
                do {
                    topology = try ClusterTopology(shards: try await connection.send("CLUSTER", "SHARDS"),
                                                   tls: configuration.tls != nil)
                } catch let error as RedisError where error.code == .server {
                    topology = try ClusterTopology(slots: try await connection.send("CLUSTER", "SLOTS"))
                }
                if topology.unservedSlots == 0 { return topology }
                if partial == nil || topology.unservedSlots < partial!.unservedSlots { partial = topology }
            } catch {
                failures.append("\(endpoint) (\(error))")
            }
        }
        if let partial { return partial }
        logger.warning("no cluster node answered", metadata: ["nodes": "\(failures)"])
        throw RedisError(.clusterUnreachable, "no cluster node answered: \(failures.joined(separator: ", "))")
    }
}

extension ClusterTopology {
    static let empty = ClusterTopology()
    private init() {}
}
