import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// A password no other text contains by chance.
func makeSecret(_ name: String) -> String { "\(name)-\(UUID().uuidString.prefix(12))" }

/// Every form in which a value (an error, a configuration) might be shown.
func renderings(_ value: some Any) -> [String] {
    var dumped = ""
    dump(value, to: &dumped)
    return ["\(value)", String(reflecting: value), dumped]
}

// MARK: - Descriptions

@Suite struct RedactedDescriptionTests {
    @Test func aConfigurationShowsWhereAndAsWhomButNotThePassword() {
        let password = makeSecret("password")
        let passphrase = makeSecret("passphrase")
        var configuration = RedisConfiguration(host: "10.0.0.7", port: 6380)
        configuration.username = "alice"
        configuration.password = password
        configuration.database = 2
        configuration.clientName = "billing"
        configuration.tls = RedisTLSConfiguration(
            caCertificateFile: "/etc/ca.pem", certificateFile: "/etc/client.pem", privateKeyFile: "/etc/client.key",
            privateKeyPassphrase: passphrase, serverName: "cache.internal")
        for text in renderings(configuration) {
            #expect(!text.contains(password), "\(text)")
            #expect(!text.contains(passphrase), "\(text)")
            #expect(text.contains("(redacted)"))
            #expect(text.contains("10.0.0.7:6380"))
            #expect(text.contains("alice"))
            #expect(text.contains("/etc/client.key"))
        }
        #expect("\(configuration)".contains("database: 2"))
        #expect("\(configuration)".contains("password: (redacted)"))
        #expect("\(configuration)".contains("privateKeyPassphrase: (redacted)"))
        #expect(String(reflecting: configuration).contains("connectTimeout"))
        // No password, nothing redacted.
        #expect(!"\(RedisConfiguration())".contains("password"))
    }

    @Test func sentinelAndClusterConfigurationsRedactEveryPassword() {
        let masterPassword = makeSecret("master")
        let sentinelPassword = makeSecret("sentinel")
        let sentinel = RedisConfiguration.sentinel(
            sentinels: [("10.0.0.1", 26379), ("10.0.0.2", 26379)], masterName: "orders",
            username: "app", password: masterPassword, sentinelUsername: "watcher", sentinelPassword: sentinelPassword)
        for text in renderings(sentinel) + renderings(sentinel.sentinel!) {
            #expect(!text.contains(masterPassword), "\(text)")
            #expect(!text.contains(sentinelPassword), "\(text)")
            #expect(text.contains("10.0.0.2:26379"))
            #expect(text.contains("orders"))
            #expect(text.contains("(redacted)"))
        }
        var node = RedisConfiguration()
        node.password = masterPassword
        let cluster = RedisClusterConfiguration(seeds: [.tcp(host: "10.0.1.1", port: 7000), .tcp(host: "::1", port: 7001)], node: node)
        for text in renderings(cluster) {
            #expect(!text.contains(masterPassword), "\(text)")
            #expect(text.contains("10.0.1.1:7000") && text.contains("[::1]:7001"))
            #expect(text.contains("(redacted)"))
        }
    }

    @Test func aTLSConfigurationRedactsThePassphraseAndSaysWhetherItVerifies() {
        let passphrase = makeSecret("passphrase")
        let verified = RedisTLSConfiguration(certificateFile: "/c.pem", privateKeyFile: "/k.pem", privateKeyPassphrase: passphrase)
        let insecure = RedisTLSConfiguration.insecureNoVerification(privateKeyPassphrase: passphrase)
        #expect(verified.verifyPeer)
        #expect(!insecure.verifyPeer)
        #expect(!RedisTLSConfiguration().description.contains("NOT"))
        #expect(insecure.description.contains("NOT verified"))
        for text in renderings(verified) + renderings(insecure) {
            #expect(!text.contains(passphrase), "\(text)")
        }
    }
}
