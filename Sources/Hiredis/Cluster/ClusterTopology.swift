/// Who serves which slot: the primaries, and for each of the 16384 slots the index of its
/// primary (or none). Read from `CLUSTER SHARDS` (Redis 7), or `CLUSTER SLOTS` on older
/// servers. A value: a refresh builds a new one.
struct ClusterTopology: Sendable, Equatable {
    typealias Endpoint = RedisConfiguration.Endpoint

    /// Every primary that serves at least one slot.
    private(set) var primaries: [Endpoint] = []
    /// Every node the topology names (primaries and replicas): where to ask next time.
    private(set) var nodes: [Endpoint] = []
    /// Slot → index in `primaries`; `unserved` when no primary serves it.
    private var owners = [UInt16](repeating: ClusterTopology.unserved, count: ClusterSlot.count)
    private static let unserved = UInt16.max

    /// The primary serving `slot`, if any.
    func owner(of slot: Int) -> Endpoint? {
        let index = owners[slot]
        return index == Self.unserved ? nil : primaries[Int(index)]
    }

    /// How many slots have no primary.
    var unservedSlots: Int { owners.reduce(0) { $0 + ($1 == Self.unserved ? 1 : 0) } }

    /// Records that `endpoint` serves `slot` (after a `MOVED`), until the next refresh.
    mutating func assign(_ slot: Int, to endpoint: Endpoint) {
        owners[slot] = UInt16(index(of: endpoint))
    }

    private mutating func index(of endpoint: Endpoint) -> Int {
        if let index = primaries.firstIndex(of: endpoint) { return index }
        primaries.append(endpoint)
        if !nodes.contains(endpoint) { nodes.append(endpoint) }
        return primaries.count - 1
    }

    private mutating func assign(_ range: ClosedRange<Int>, to endpoint: Endpoint) {
        let index = UInt16(index(of: endpoint))
        for slot in range where (0..<ClusterSlot.count).contains(slot) { owners[slot] = index }
    }

    private mutating func know(_ endpoint: Endpoint) {
        if !nodes.contains(endpoint) { nodes.append(endpoint) }
    }

    /// Reads a `CLUSTER SHARDS` reply (RESP2: each shard and node is a flat list of
    /// field, value pairs). Only healthy (`online`) primaries serve slots. `tls`: whether
    /// the client connects to the nodes over TLS, which decides the port taken (see
    /// ``endpoint(_:tls:)``).
    init(shards reply: RedisReply, tls: Bool = false) throws {
        guard case .array(let shards) = reply else { throw RedisError(.wrongReplyType, "unexpected CLUSTER SHARDS reply") }
        for shard in shards {
            let fields = try Self.fields(shard)
            var ranges: [ClosedRange<Int>] = []
            if case .array(let bounds)? = fields["slots"] {
                let numbers = try bounds.map { try $0.decode(Int.self) }
                for pair in stride(from: 0, to: numbers.count - 1, by: 2) where numbers[pair] <= numbers[pair + 1] {
                    ranges.append(numbers[pair]...numbers[pair + 1])
                }
            }
            guard case .array(let nodes)? = fields["nodes"] else { continue }
            for node in nodes {
                let info = try Self.fields(node)
                guard let endpoint = Self.endpoint(info, tls: tls) else { continue }
                let role = (try? info["role"]?.decode(String.self)) ?? ""
                let health = (try? info["health"]?.decode(String.self)) ?? "online"
                know(endpoint)
                if role == "master", health == "online" {
                    for range in ranges { assign(range, to: endpoint) }
                }
            }
        }
    }

    /// Reads a `CLUSTER SLOTS` reply: `[start, end, [host, port, id…], replicas…]…`.
    init(slots reply: RedisReply) throws {
        guard case .array(let entries) = reply else { throw RedisError(.wrongReplyType, "unexpected CLUSTER SLOTS reply") }
        for entry in entries {
            guard case .array(let parts) = entry, parts.count >= 3 else { continue }
            let start = try parts[0].decode(Int.self), end = try parts[1].decode(Int.self)
            for (position, node) in parts.dropFirst(2).enumerated() {
                guard case .array(let address) = node, address.count >= 2,
                      let host = try? address[0].decode(String.self), let port = try? address[1].decode(Int.self),
                      !host.isEmpty, port > 0 else { continue }
                let endpoint = Endpoint.tcp(host: host, port: port)
                know(endpoint)
                if position == 0, start <= end { assign(start...end, to: endpoint) }
            }
        }
    }

    private static func fields(_ reply: RedisReply) throws -> [String: RedisReply] {
        guard case .array(let flat) = reply else { throw RedisError(.wrongReplyType, "unexpected cluster reply") }
        var fields: [String: RedisReply] = [:]
        for index in stride(from: 0, to: flat.count - 1, by: 2) {
            if let name = try? flat[index].decode(String.self) { fields[name] = flat[index + 1] }
        }
        return fields
    }

    /// A node's address in `CLUSTER SHARDS`. A cluster with `tls-cluster yes` lists a node's
    /// TLS port as `tls-port` and its plaintext port, if it has one, as `port` (a TLS-only
    /// node, `port 0`, has no `port` field at all); without `tls-cluster` it lists only
    /// `port`. A TLS client takes `tls-port` (else `port`: a cluster without `tls-cluster`
    /// knows no TLS port), a plaintext one `port` — what `CLUSTER SLOTS` and `MOVED` give
    /// on such a connection anyway. (Reading `port` alone would skip every node of a
    /// TLS-only cluster, and reach a node with both ports on its plaintext one.)
    private static func endpoint(_ info: [String: RedisReply], tls: Bool) -> Endpoint? {
        func port(_ field: String) -> Int? {
            guard let port = try? info[field]?.decode(Int.self), port > 0 else { return nil }
            return port
        }
        guard let port = tls ? port("tls-port") ?? port("port") : port("port") else { return nil }
        var host = (try? info["endpoint"]?.decode(String.self)) ?? ""
        if host.isEmpty || host == "?" { host = (try? info["ip"]?.decode(String.self)) ?? "" }
        return host.isEmpty ? nil : .tcp(host: host, port: port)
    }
}
