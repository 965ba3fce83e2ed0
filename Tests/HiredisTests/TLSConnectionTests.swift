import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// TLS against real `redis-server --tls-port` processes, with certificates made by
/// `openssl` for the run. They need a build whose hiredis has TLS (`make test-tls` builds
/// hiredis 1.x with `libhiredis_ssl`); elsewhere they are skipped.
@Suite(.enabled(if: TLSRedis.isAvailable, "needs hiredis >= 1.0 with libhiredis_ssl, and openssl (make test-tls)"))
struct TLSConnectionTests {
    private func expectCode(_ code: RedisError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                            _ body: () async throws -> Void) async -> RedisError? {
        let error = await #expect(throws: RedisError.self, sourceLocation: sourceLocation) { try await body() }
        #expect(error?.code == code, "\(String(describing: error))", sourceLocation: sourceLocation)
        return error
    }

    @Test func tlsIsAvailableInThisBuild() {
        #expect(RedisTLSConfiguration.isAvailable, "\(String(describing: RedisTLSConfiguration.unavailableReason))")
    }

    /// Commands, a pipeline and a 1 MB value (many TLS records each way) over TLS.
    @Test func commandsRoundTripOverTLS() async throws {
        let redis = try await TLSRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let big = [UInt8]((0..<1_048_576).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        try await connection.send("SET", key, big)
        #expect(try await connection.send("GET", key) == .bulk(big))
        let replies = try await connection.pipeline((0..<100).map { _ in RedisCommand("INCR", key + ":n") })
        #expect(try replies.last?.get() == .integer(100))
        // Concurrent callers share the connection (and its TLS session).
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<20 {
                group.addTask {
                    try await connection.send("SET", "\(key):\(index)", "v\(index)")
                    #expect(try await connection.send("GET", "\(key):\(index)").decode(String.self) == "v\(index)")
                }
            }
            try await group.waitForAll()
        }
        await connection.close()
    }

    /// The TLS port speaks only TLS: the same server's plaintext port is a separate listener,
    /// and a `rediss://` URL reaches the TLS one.
    @Test func aRedissURLConnectsWithTheConfiguredAuthority() async throws {
        let redis = try await TLSRedis.start()
        var configuration = try RedisConfiguration(url: "rediss://127.0.0.1:\(redis.tlsPort)/2")
        configuration.tls?.caCertificateFile = redis.certificates.caCertificate
        let connection = try await RedisConnection.connect(configuration)
        try await connection.send("SET", "in-db-2", "yes")
        let plain = try await redis.server.connect { $0.database = 2 }
        #expect(try await plain.send("GET", "in-db-2").decode(String.self) == "yes")
        await connection.close()
        await plain.close()
    }

    @Test func pubSubOverTLS() async throws {
        let redis = try await TLSRedis.start()
        let subscriber = try await redis.subscriber()
        let channel = uniqueKey("channel")
        let messages = try await subscriber.subscribe([channel])
        let publisher = try await redis.connect()
        try await publisher.send("PUBLISH", channel, "over tls")
        var iterator = messages.makeAsyncIterator()
        let event = try await iterator.next()
        #expect(event == .message(RedisPubSubMessage(channel: channel, payload: Array("over tls".utf8))))
        await subscriber.close()
        await publisher.close()
    }

    /// A server that requires client certificates refuses a client without one, typed; the
    /// same client with a certificate, or with a passphrase-protected key, gets in.
    @Test func mutualTLSRefusesAClientWithoutACertificate() async throws {
        let redis = try await TLSRedis.start(clientCertificates: true)
        let certificates = redis.certificates
        let error = await expectCode(.tlsHandshakeFailed) { _ = try await redis.connect() }
        #expect(error?.message.contains("certificate") == true, "\(String(describing: error))")

        let withCertificate = try await redis.connect {
            $0.tls?.certificateFile = certificates.clientCertificate
            $0.tls?.privateKeyFile = certificates.clientKey
        }
        #expect(try await withCertificate.send("PING") == .status("PONG"))
        await withCertificate.close()

        let withEncryptedKey = try await redis.connect {
            $0.tls?.certificateFile = certificates.clientCertificate
            $0.tls?.privateKeyFile = certificates.encryptedClientKey
            $0.tls?.privateKeyPassphrase = certificates.clientKeyPassphrase
        }
        #expect(try await withEncryptedKey.send("PING") == .status("PONG"))
        await withEncryptedKey.close()
    }

    /// A wrong passphrase (or none) for an encrypted key: an invalid argument that names
    /// the key file and never shows the passphrase; nothing is sent.
    @Test func aWrongKeyPassphraseIsAnInvalidArgument() async throws {
        let redis = try await TLSRedis.start(clientCertificates: true)
        let certificates = redis.certificates
        let wrong = makeSecret("passphrase")
        let error = await expectCode(.invalidArgument) {
            _ = try await redis.connect {
                $0.tls?.certificateFile = certificates.clientCertificate
                $0.tls?.privateKeyFile = certificates.encryptedClientKey
                $0.tls?.privateKeyPassphrase = wrong
            }
        }
        #expect(error?.message.contains(certificates.encryptedClientKey) == true)
        #expect(!"\(String(describing: error))".contains(wrong))
        _ = await expectCode(.invalidArgument) {
            _ = try await redis.connect {
                $0.tls?.certificateFile = certificates.clientCertificate
                $0.tls?.privateKeyFile = certificates.encryptedClientKey
            }
        }
    }

    /// A certificate signed by an authority the client does not trust is refused.
    @Test func aWrongCertificateAuthorityIsAVerificationError() async throws {
        let redis = try await TLSRedis.start()
        let error = await expectCode(.tlsVerificationFailed) {
            _ = try await redis.connect { $0.tls?.caCertificateFile = redis.certificates.otherCACertificate }
        }
        #expect(error?.message.contains("certificate") == true, "\(String(describing: error))")
        // The explicit opt-out accepts it (and still encrypts).
        let insecure = try await redis.connect { $0.tls = .insecureNoVerification() }
        #expect(try await insecure.send("PING") == .status("PONG"))
        await insecure.close()
    }

    /// The certificate names `localhost` and `127.0.0.1`: another name is refused, those two
    /// are accepted.
    @Test func aWrongServerNameIsAVerificationError() async throws {
        let redis = try await TLSRedis.start()
        let error = await expectCode(.tlsVerificationFailed) {
            _ = try await redis.connect { $0.tls?.serverName = "redis.example.org" }
        }
        #expect(error?.message.contains("hostname mismatch") == true, "\(String(describing: error))")
        let byName = try await redis.connect { $0.tls?.serverName = "localhost" }
        #expect(try await byName.send("PING") == .status("PONG"))
        await byName.close()
        let byAddress = try await redis.connect()  // checks 127.0.0.1, the host connected to
        #expect(try await byAddress.send("PING") == .status("PONG"))
        await byAddress.close()
    }

    /// TLS to the plaintext port: a typed handshake error that says so. A plaintext Redis
    /// takes the TLS hello for the start of a command line and waits for its end, so the
    /// error comes from the connect timeout (or at once, when the hello happens to contain
    /// a newline and Redis answers with an error the TLS layer cannot read).
    @Test func tlsToThePlaintextPortIsAHandshakeError() async throws {
        let redis = try await TLSRedis.start()
        let error = await expectCode(.tlsHandshakeFailed) {
            _ = try await RedisConnection.connect(redis.configuration {
                $0.endpoint = .tcp(host: "127.0.0.1", port: redis.plaintextPort)
                $0.connectTimeout = .seconds(2)
            })
        }
        #expect(error?.message.contains("plaintext port") == true, "\(String(describing: error))")
    }

    /// A TLS connection that never reached a server (nothing listens on the port) is a
    /// failed connect, not a TLS error: no handshake byte was sent.
    @Test func aRefusedTLSConnectIsConnectionFailed() async throws {
        let redis = try await TLSRedis.start()
        let port = try freeLoopbackPort()
        _ = await expectCode(.connectionFailed) {
            _ = try await RedisConnection.connect(redis.configuration { $0.endpoint = .tcp(host: "127.0.0.1", port: port) })
        }
    }

    /// Plaintext to the TLS port: the server drops the connection; the client gets a typed
    /// error, not a hang (the command timeout is long, so a hang would show as a timeout).
    @Test func plaintextToTheTLSPortFailsWithATypedError() async throws {
        let redis = try await TLSRedis.start()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: redis.tlsPort)
        configuration.password = "anything"  // AUTH in the handshake: the failure is the connect's
        configuration.connectTimeout = .seconds(60)
        configuration.commandTimeout = .seconds(60)
        let error = await #expect(throws: RedisError.self) { _ = try await RedisConnection.connect(configuration) }
        #expect(error?.code == .connectionClosed, "\(String(describing: error))")
    }

    /// After a server restart, the connection comes back over TLS and authenticates again.
    @Test func reconnectsOverTLSAndReplaysAuth() async throws {
        let password = makeSecret("password")
        let redis = try await TLSRedis.start(["--requirepass", password])
        let connection = try await redis.connect {
            $0.password = password
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(200))
        }
        let key = uniqueKey()
        try await connection.send("SET", key, "before")
        try await redis.server.restart()
        // In flight during the restart or sent after it: it waits for the new connection.
        try await eventually("the connection to come back") {
            (try? await connection.send("SET", key, "after")) != nil
        }
        #expect(try await connection.send("GET", key).decode(String.self) == "after")
        #expect(await connection.isConnected)
        await connection.close()
    }

    /// A subscriber over TLS keeps its subscription across a server restart.
    @Test func aSubscriberResubscribesOverTLSAfterARestart() async throws {
        let redis = try await TLSRedis.start()
        let subscriber = try await redis.subscriber {
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(200))
        }
        let channel = uniqueKey("channel")
        let messages = try await subscriber.subscribe([channel])
        try await redis.server.restart()
        let publisher = try await redis.connect()
        // Publish until the subscriber is back (a message sent before it is lost, as pub/sub is).
        let publishing = Task {
            while !Task.isCancelled {
                _ = try? await publisher.send("PUBLISH", channel, "after restart")
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        var iterator = messages.makeAsyncIterator()
        var received: [UInt8]?
        while let event = try await iterator.next() {
            if case .message(let message) = event {
                received = message.payload
                break
            }
        }
        publishing.cancel()
        #expect(received == Array("after restart".utf8))
        await subscriber.close()
        await publisher.close()
    }
}
