@testable import Hiredis
import Testing

/// How `CLUSTER SHARDS` is read over TLS (no server): a cluster with `tls-cluster yes`
/// lists a node's TLS port as `tls-port`, and its plaintext port, if any, as `port`.
@Suite struct TLSClusterTopologyTests {
    static func shards(ports: [(port: Int?, tlsPort: Int?)]) -> RedisReply {
        func bulk(_ text: String) -> RedisReply { .bulk(Array(text.utf8)) }
        let span = ClusterSlot.count / ports.count
        return .array(ports.enumerated().map { index, listed in
            var node: [RedisReply] = [bulk("id"), bulk("node\(index)")]
            if let port = listed.port { node += [bulk("port"), .integer(Int64(port))] }
            if let tlsPort = listed.tlsPort { node += [bulk("tls-port"), .integer(Int64(tlsPort))] }
            node += [bulk("ip"), bulk("127.0.0.1"), bulk("endpoint"), bulk("127.0.0.1"), bulk("role"), bulk("master"),
                     bulk("health"), bulk("online")]
            let last = index == ports.count - 1 ? ClusterSlot.count - 1 : (index + 1) * span - 1
            return .array([bulk("slots"), .array([.integer(Int64(index * span)), .integer(Int64(last))]),
                           bulk("nodes"), .array([.array(node)])])
        })
    }

    /// TLS-only nodes (`port 0`): only `tls-port` is listed, and a TLS client takes it.
    @Test func aTLSClientReadsTheTLSPortOfTLSOnlyNodes() throws {
        let topology = try ClusterTopology(shards: Self.shards(ports: [(nil, 7001), (nil, 7002), (nil, 7003)]), tls: true)
        #expect(topology.unservedSlots == 0)
        #expect(topology.primaries == [7001, 7002, 7003].map { .tcp(host: "127.0.0.1", port: $0) })
    }

    /// Nodes with both ports: a TLS client takes `tls-port`, a plaintext one `port`.
    @Test func eachClientTakesItsOwnPortWhenTLSNodesHaveBoth() throws {
        let reply = Self.shards(ports: [(6001, 7001), (6002, 7002), (6003, 7003)])
        #expect(try ClusterTopology(shards: reply, tls: true).primaries == [7001, 7002, 7003].map { .tcp(host: "127.0.0.1", port: $0) })
        #expect(try ClusterTopology(shards: reply, tls: false).primaries == [6001, 6002, 6003].map { .tcp(host: "127.0.0.1", port: $0) })
    }
}
