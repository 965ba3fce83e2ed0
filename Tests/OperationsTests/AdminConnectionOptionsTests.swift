import ArgumentParser
import Foundation
import Hiredis
@testable import hiredis_admin
import RedisTestSupport
import Testing

/// The configuration `hiredis-admin`'s connection options describe, built without
/// connecting: the URL's TLS, credentials and database reach the server that holds the
/// data, whether it is the URL's own, a master found through sentinels or a cluster node.
@Suite struct AdminConnectionOptionsTests {
    /// The single-server configuration of `arguments`.
    private func server(_ arguments: [String]) throws -> RedisConfiguration {
        guard case .server(let configuration) = try ConnectionOptions.parse(arguments).target() else {
            throw TestSupportError("\(arguments) did not describe a single server")
        }
        return configuration
    }

    /// The cluster configuration of `arguments`.
    private func cluster(_ arguments: [String]) throws -> RedisClusterConfiguration {
        guard case .cluster(let configuration) = try ConnectionOptions.parse(arguments).target() else {
            throw TestSupportError("\(arguments) did not describe a cluster")
        }
        return configuration
    }

    @Test func aRedisURLConnectsInPlaintextToItsDatabase() throws {
        let configuration = try server(["--url", "redis://127.0.0.1:6380/4"])
        #expect(configuration.tls == nil)
        #expect(configuration.endpoint == .tcp(host: "127.0.0.1", port: 6380))
        #expect(configuration.database == 4)
    }

    @Test func sentinelWithARedissURLKeepsTheMastersTLSCredentialsAndDatabase() throws {
        let configuration = try server(["--url", "rediss://ops:s3cret@ignored.example:6380/2",
                                        "--sentinel", "127.0.0.1:26379", "--sentinel", "127.0.0.1:26380", "--master-name", "main"])
        #expect(configuration.tls == RedisTLSConfiguration())
        #expect(configuration.database == 2)
        #expect(configuration.username == "ops" && configuration.password == "s3cret")
        #expect(configuration.sentinel == SentinelConfiguration(
            sentinels: [.tcp(host: "127.0.0.1", port: 26379), .tcp(host: "127.0.0.1", port: 26380)], masterName: "main"))
    }

    @Test func everyClusterNodeGetsTheURLsTLSAndCredentials() throws {
        let configuration = try cluster(["--url", "rediss://:s3cret@ignored.example", "--cluster", "127.0.0.1:7000",
                                         "--cluster", "127.0.0.1:7001"])
        #expect(configuration.seeds == [.tcp(host: "127.0.0.1", port: 7000), .tcp(host: "127.0.0.1", port: 7001)])
        #expect(configuration.node.tls == RedisTLSConfiguration())
        #expect(configuration.node.password == "s3cret")
    }
}
