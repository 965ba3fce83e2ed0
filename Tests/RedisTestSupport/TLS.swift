import Foundation
import Hiredis
import Synchronization

/// Certificates made for the TLS tests with Debian's `openssl` command, once per process, in
/// a temporary directory: a certificate authority, a server certificate for `localhost`
/// and `127.0.0.1` that it signed, a client certificate (plain and passphrase-protected
/// key), and a second authority that signed nothing the server presents.
public struct TestCertificates: Sendable {
    public let directory: URL
    public var caCertificate: String { path("ca.crt") }
    public var otherCACertificate: String { path("other-ca.crt") }
    public var serverCertificate: String { path("server.crt") }
    public var serverKey: String { path("server.key") }
    public var clientCertificate: String { path("client.crt") }
    public var clientKey: String { path("client.key") }
    /// ``clientKey`` encrypted with ``clientKeyPassphrase``.
    public var encryptedClientKey: String { path("client-encrypted.key") }
    public let clientKeyPassphrase: String

    private func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    /// The certificates of this process (made on first use; later callers await the same
    /// making, without blocking a thread).
    public static func shared() async throws -> TestCertificates {
        let making = made.withLock { made in
            if let made { return made }
            let task = Task { try await make() }
            made = task
            return task
        }
        return try await making.value
    }

    private static let made = Mutex<Task<TestCertificates, any Error>?>(nil)

    private static func make() async throws -> TestCertificates {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("hiredis-kit-certificates-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let passphrase = "client-key-" + UUID().uuidString.prefix(8)
        let certificates = TestCertificates(directory: directory, clientKeyPassphrase: passphrase)
        func run(_ arguments: [String]) async throws {
            try await openssl(arguments, in: directory)
        }
        let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for ca in ["ca", "other-ca"] {
            try await run(["req", "-x509"] + key + ["-keyout", "\(ca).key", "-out", "\(ca).crt", "-days", "3",
                                               "-subj", "/CN=HiredisKit test \(ca)"])
        }
        try "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
            .write(to: directory.appendingPathComponent("server.ext"), atomically: true, encoding: .utf8)
        try "extendedKeyUsage=clientAuth\n"
            .write(to: directory.appendingPathComponent("client.ext"), atomically: true, encoding: .utf8)
        for (name, subject) in [("server", "/CN=localhost"), ("client", "/CN=hiredis-kit-client")] {
            try await run(["req"] + key + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject])
            try await run(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                     "-out", "\(name).crt", "-days", "3", "-extfile", "\(name).ext"])
        }
        try await run(["pkey", "-in", "client.key", "-aes256", "-passout", "pass:\(passphrase)", "-out", "client-encrypted.key"])
        return certificates
    }

    /// Whether the `openssl` command is there.
    public static var opensslAvailable: Bool {
        ["/usr/bin/openssl", "/usr/local/bin/openssl", "/opt/homebrew/bin/openssl"].contains {
            FileManager.default.isExecutableFile(atPath: $0)
        }
    }

    /// Runs `openssl` in `directory` (awaited: see ``ChildProcess/runToEnd()``).
    private static func openssl(_ arguments: [String], in directory: URL) async throws {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["openssl"] + arguments
        process.currentDirectoryURL = directory
        let log = try await process.runToEnd()
        guard process.terminationStatus == 0 else {
            throw TestSupportError("openssl \(arguments.joined(separator: " ")) failed: \(String(decoding: log, as: UTF8.self))")
        }
    }
}

/// A throwaway `redis-server` that listens for TLS on ``tlsPort`` (and plaintext on
/// ``plaintextPort``, for the tests that connect to the wrong one).
public struct TLSRedis: Sendable {
    public let server: RedisServer
    public let tlsPort: Int
    public let certificates: TestCertificates
    public var plaintextPort: Int { server.port }

    /// Whether TLS tests can run here: this build can do TLS (hiredis ≥ 1.0 with
    /// `libhiredis_ssl`) and `openssl` is installed. With `HIREDISKIT_REQUIRE_TLS=1`
    /// (`make test-tls`) the tests run regardless, so that a missing piece fails them
    /// instead of skipping them.
    public static var isAvailable: Bool {
        if ProcessInfo.processInfo.environment["HIREDISKIT_REQUIRE_TLS"] == "1" { return true }
        return RedisTLSConfiguration.isAvailable && TestCertificates.opensslAvailable && TestRedis.ownsServers
    }

    /// Starts a server; `clientCertificates`: whether it requires a client certificate
    /// (`tls-auth-clients yes`).
    public static func start(clientCertificates: Bool = false, _ arguments: [String] = []) async throws -> TLSRedis {
        let certificates = try await TestCertificates.shared()
        var lastError: (any Error)?
        for _ in 0..<5 {
            let tlsPort = try freeLoopbackPort()
            do {
                let server = try await RedisServer.start([
                    "--tls-port", "\(tlsPort)",
                    "--tls-cert-file", certificates.serverCertificate, "--tls-key-file", certificates.serverKey,
                    "--tls-ca-cert-file", certificates.caCertificate,
                    "--tls-auth-clients", clientCertificates ? "yes" : "no",
                ] + arguments)
                return TLSRedis(server: server, tlsPort: tlsPort, certificates: certificates)
            } catch {
                lastError = error  // most likely the TLS port was taken meanwhile
            }
        }
        throw lastError ?? TestSupportError("could not start a TLS redis-server")
    }

    /// A verified TLS configuration for the TLS port, trusting the test authority.
    public func configuration(_ configure: (inout RedisConfiguration) -> Void = { _ in }) -> RedisConfiguration {
        var configuration = RedisConfiguration(host: "127.0.0.1", port: tlsPort)
        configuration.tls = RedisTLSConfiguration(caCertificateFile: certificates.caCertificate)
        configure(&configuration)
        return configuration
    }

    /// Connects over TLS.
    public func connect(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisConnection {
        try await RedisConnection.connect(configuration(configure))
    }

    /// A subscriber over TLS.
    public func subscriber(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisSubscriber {
        try await RedisSubscriber.connect(configuration(configure))
    }

    /// What helper processes are given: a `rediss://` URL (``RedisTarget``), and the
    /// environment that makes them trust the test authority.
    public var helperSpec: String { "rediss://127.0.0.1:\(tlsPort)" }
    public var helperEnvironment: [String: String] { [RedisTarget.caEnvironmentVariable: certificates.caCertificate] }
}

extension TestCertificates {
    /// The client side: verify servers against the test authority.
    public var clientTLS: RedisTLSConfiguration { RedisTLSConfiguration(caCertificateFile: caCertificate) }

    /// `redis-server`/`redis-sentinel` options for a TLS-only server with these certificates
    /// (``RedisServer/startTLSOnly(tls:_:)`` adds `--port 0 --tls-port`): no client
    /// certificate required of clients, TLS to its master (`tls-replication yes`: a
    /// replica's link, a sentinel's monitoring) and, with `cluster`, on the cluster bus and
    /// for `MIGRATE` (`tls-cluster yes`).
    ///
    /// The server presents the client certificate when it connects out: the cluster bus
    /// requires one whatever `tls-auth-clients` says, and the server certificate is for
    /// `serverAuth` only, so a node presenting it would be refused (and `redis-cli
    /// --cluster create` would wait for ever for the nodes to meet).
    public func serverArguments(cluster: Bool = false) -> [String] {
        ["--tls-cert-file", serverCertificate, "--tls-key-file", serverKey, "--tls-ca-cert-file", caCertificate,
         "--tls-client-cert-file", clientCertificate, "--tls-client-key-file", clientKey,
         "--tls-auth-clients", "no", "--tls-replication", "yes"] + (cluster ? ["--tls-cluster", "yes"] : [])
    }
}

/// Sentinel over TLS on loopback: a TLS-only master and one TLS-only `redis-sentinel`
/// (quorum 1) that monitors it over TLS. No replica: what is under test is discovery and
/// the connections, not failover.
public struct TLSSentinelTopology: Sendable {
    public let masterName: String
    public let master: RedisServer
    public let sentinel: RedisServer
    public let certificates: TestCertificates

    /// Starts both and waits until the sentinel has read the master's `INFO` over TLS (it
    /// knows the master's run id), so that it speaks TLS to the master as well as to clients.
    public static func start(masterName: String = "tlsmaster") async throws -> TLSSentinelTopology {
        let certificates = try await TestCertificates.shared()
        let master = try await RedisServer.startTLSOnly(tls: certificates.clientTLS, certificates.serverArguments())
        let sentinel = try await RedisServer.startSentinel(
            monitoring: master.port, masterName: masterName, quorum: 1,
            tls: certificates.clientTLS, certificates.serverArguments())
        let connection = try await sentinel.connect()
        defer { Task { await connection.close() } }
        try await eventually(timeout: .seconds(15), "the sentinel to reach the master over TLS") {
            let fields = try await connection.send("SENTINEL", "master", masterName).decode([String].self)
            let info = Dictionary(stride(from: 0, to: fields.count - 1, by: 2).map { (fields[$0], fields[$0 + 1]) },
                                  uniquingKeysWith: { first, _ in first })
            return info["flags"] == "master" && !(info["runid"] ?? "").isEmpty
        }
        return TLSSentinelTopology(masterName: masterName, master: master, sentinel: sentinel, certificates: certificates)
    }

    /// The master through the sentinel, each with its own TLS settings: `sentinelTLS` for
    /// the sentinel, `masterTLS` for the master (both verified against the test authority
    /// unless given).
    public func configuration(sentinelTLS: RedisTLSConfiguration? = nil,
                              masterTLS: RedisTLSConfiguration? = nil) -> RedisConfiguration {
        var configuration = RedisConfiguration.sentinel(sentinels: [(sentinel.host, sentinel.port)], masterName: masterName)
        configuration.sentinel?.tls = sentinelTLS ?? certificates.clientTLS
        configuration.tls = masterTLS ?? certificates.clientTLS
        return configuration
    }
}
