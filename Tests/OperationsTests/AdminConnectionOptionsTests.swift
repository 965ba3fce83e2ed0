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

    @Test func aRedissURLTakesTheTLSFilesAndServerNameVerified() throws {
        let configuration = try server([
            "--url", "rediss://cache.internal:6380/3", "--tls-ca-file", "/etc/redis/ca.pem", "--tls-ca-directory", "/etc/redis/cas",
            "--tls-cert", "/etc/redis/client.pem", "--tls-key", "/etc/redis/client.key", "--tls-server-name", "redis.example",
        ])
        #expect(configuration.tls == RedisTLSConfiguration(
            caCertificateFile: "/etc/redis/ca.pem", caCertificateDirectory: "/etc/redis/cas",
            certificateFile: "/etc/redis/client.pem", privateKeyFile: "/etc/redis/client.key", serverName: "redis.example"))
        #expect(configuration.tls?.verifyPeer == true)
        #expect(configuration.database == 3)
    }

    @Test func theInsecureOptOutTurnsVerificationOff() throws {
        let configuration = try server(["--url", "rediss://127.0.0.1:6380", "--tls-insecure-no-verification"])
        #expect(configuration.tls == .insecureNoVerification())
        #expect(configuration.tls?.verifyPeer == false)
    }

    @Test func theKeyPassphraseIsTheFirstLineOfItsFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("passphrase-" + UUID().uuidString)
        try Data("open sesame\nnot this\n".utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let configuration = try server(["--url", "rediss://127.0.0.1", "--tls-cert", "/c.pem", "--tls-key", "/k.pem",
                                        "--tls-key-passphrase-file", file.path])
        #expect(configuration.tls?.privateKeyPassphrase == "open sesame")
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

    @Test func sentinelTLSGivesTheSentinelsTheTLSFilesWithTheirOwnServerName() throws {
        let configuration = try server([
            "--url", "rediss://127.0.0.1", "--sentinel", "127.0.0.1:26379", "--master-name", "main", "--sentinel-tls",
            "--tls-ca-file", "/ca.pem", "--tls-server-name", "master.example", "--sentinel-tls-server-name", "sentinel.example",
        ])
        #expect(configuration.tls == RedisTLSConfiguration(caCertificateFile: "/ca.pem", serverName: "master.example"))
        #expect(configuration.sentinel?.tls == RedisTLSConfiguration(caCertificateFile: "/ca.pem", serverName: "sentinel.example"))
    }

    @Test func theSentinelsGetTheirOwnUserAndThePasswordFromItsFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sentinel-password-\(UUID().uuidString)")
        try "watchers\nnot this line\n".write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let configuration = try server(["--url", "redis://:data@127.0.0.1", "--sentinel", "127.0.0.1:26379", "--master-name", "main",
                                        "--sentinel-user", "sentinel-ops", "--sentinel-password-file", file.path])
        #expect(configuration.password == "data")
        #expect(configuration.sentinel?.username == "sentinel-ops" && configuration.sentinel?.password == "watchers")
    }

    @Test func everyClusterNodeGetsTheURLsTLSAndCredentials() throws {
        let configuration = try cluster(["--url", "rediss://:s3cret@ignored.example", "--cluster", "127.0.0.1:7000",
                                         "--cluster", "127.0.0.1:7001", "--tls-ca-file", "/ca.pem"])
        #expect(configuration.seeds == [.tcp(host: "127.0.0.1", port: 7000), .tcp(host: "127.0.0.1", port: 7001)])
        #expect(configuration.node.tls == RedisTLSConfiguration(caCertificateFile: "/ca.pem"))
        #expect(configuration.node.password == "s3cret")
    }

    @Test(arguments: [
        (["--url", "redis://127.0.0.1", "--tls-ca-file", "/ca.pem"], "--tls-ca-file needs TLS"),
        (["--url", "redis://127.0.0.1", "--tls-server-name", "redis.example"], "--tls-server-name needs a rediss:// URL"),
        (["--url", "rediss://127.0.0.1", "--tls-insecure-no-verification", "--tls-ca-file", "/ca.pem"], "takes no --tls-ca-file"),
        (["--url", "rediss://127.0.0.1", "--tls-cert", "/c.pem"], "--tls-cert and --tls-key go together"),
        (["--url", "rediss://127.0.0.1", "--sentinel-tls"], "--sentinel-tls needs --sentinel"),
        (["--url", "redis://127.0.0.1", "--sentinel-password-file", "/p"], "--sentinel-password-file need --sentinel"),
        (["--url", "redis://127.0.0.1", "--sentinel", "127.0.0.1:26379", "--master-name", "m", "--sentinel-user", "u"],
         "--sentinel-user needs --sentinel-password-file"),
    ])
    func tlsOptionsThatWouldDoNothingOrContradictAreRefused(_ arguments: [String], _ message: String) {
        let error = #expect(throws: (any Error).self) { try ConnectionOptions.parse(arguments) }
        #expect(error.map { ConnectionOptions.message(for: $0) }?.contains(message) == true, "\(String(describing: error))")
    }
}
