import Foundation
import Hiredis
import Logging
import RedisTestSupport
import Synchronization
import Testing

extension LogCapture {
    /// Records an issue for every entry that contains one of `secrets`.
    func expectNone(of secrets: [String], sourceLocation: SourceLocation = #_sourceLocation) {
        let entries = all
        #expect(!entries.isEmpty, "nothing was logged", sourceLocation: sourceLocation)
        for entry in entries {
            for secret in secrets where entry.contains(secret) {
                Issue.record("a secret was logged: \(entry)", sourceLocation: sourceLocation)
            }
        }
    }
}

// MARK: - The loggable form of a command

@Suite struct LoggableCommandTests {
    @Test func aCommandShowsItsWordsNotItsBytes() {
        let password = makeSecret("password")
        let auth = RedisCommand("AUTH", "alice", password)
        for text in renderings(auth) {
            #expect(!text.contains(password), "\(text)")
            #expect(text.contains("AUTH (redacted) (redacted)"), "\(text)")
        }
        #expect("\(RedisCommand("GET", "k"))" == "GET k")
    }

    static let pw = "hunter2-secret"

    @Test(arguments: [
        (RedisCommand("AUTH", pw), "AUTH (redacted)"),
        (RedisCommand("auth", "alice", pw), "auth (redacted) (redacted)"),
        (RedisCommand("HELLO", 3, "AUTH", "alice", pw, "SETNAME", "app"), "HELLO 3 AUTH (redacted) (redacted) SETNAME app"),
        (RedisCommand("hello", 2, "auth", "alice", pw), "hello 2 auth (redacted) (redacted)"),
        (RedisCommand("MIGRATE", "10.0.0.2", 6379, "", 0, 5000, "COPY", "AUTH", pw, "KEYS", "a", "AUTH"),
         "MIGRATE 10.0.0.2 6379 \"\" 0 5000 COPY AUTH (redacted) KEYS a AUTH"),
        (RedisCommand("MIGRATE", "10.0.0.2", 6379, "AUTH", 0, 5000, "AUTH2", "bob", pw),
         "MIGRATE 10.0.0.2 6379 AUTH 0 5000 AUTH2 (redacted) (redacted)"),
        (RedisCommand("CONFIG", "SET", "requirepass", pw, "maxmemory", "10mb", "masterauth", pw),
         "CONFIG SET requirepass (redacted) maxmemory 10mb masterauth (redacted)"),
        (RedisCommand("config", "set", "REQUIREPASS", pw), "config set REQUIREPASS (redacted)"),
        (RedisCommand("CONFIG", "SET", "tls-key-file-pass", pw), "CONFIG SET tls-key-file-pass (redacted)"),
        (RedisCommand("CONFIG", "GET", "requirepass"), "CONFIG GET requirepass"),
        (RedisCommand("SENTINEL", "SET", "mymaster", "auth-pass", pw, "quorum", 2),
         "SENTINEL SET mymaster auth-pass (redacted) quorum 2"),
        (RedisCommand("SENTINEL", "CONFIG", "SET", "sentinel-pass", pw), "SENTINEL CONFIG SET sentinel-pass (redacted)"),
        (RedisCommand("ACL", "SETUSER", "u", "on", ">" + pw, "<" + pw, "#abc123", "!def456", "~k:*", "+get", "nopass"),
         "ACL SETUSER u on >(redacted) <(redacted) #(redacted) !(redacted) ~k:* +get nopass"),
        (RedisCommand("acl", "setuser", ">weird", ">" + pw), "acl setuser >weird >(redacted)"),
        (RedisCommand("SET", "k", [0x61, 0x20, 0x00, 0xFF, 0x22, 0x5C, 0x0A] as [UInt8]), #"SET k "a \x00\xff\"\\\n""#),
        (RedisCommand("GET", ""), "GET \"\""),
    ])
    func secretsAreRedacted(_ command: RedisCommand, _ expected: String) {
        #expect(command.loggableDescription == expected)
        #expect(!command.loggableDescription.contains(Self.pw))
    }

    @Test func longWordsAndLongCommandsAreCut() {
        let long = String(repeating: "v", count: 100)
        #expect(RedisCommand("SET", "k", long).loggableDescription == "SET k " + String(repeating: "v", count: 64) + "…(+36 bytes)")
        let password = String(repeating: "p", count: 200)
        #expect(RedisCommand("AUTH", password).loggableDescription == "AUTH (redacted)")
        let many = RedisCommand("DEL", arguments: (1...40).map { "k\($0)" })
        #expect(many.loggableDescription.hasSuffix("k31 …(+9 words)"))
    }
}

// MARK: - Logs and errors during a connection's life

@Suite(.enabled(if: TestRedis.ownsServers)) struct SecretsInLogsTests {
    /// Connect, commands that carry the password, a restart of the server (reconnect with
    /// AUTH again): everything at trace, and the password in no log entry.
    @Test func connectCommandsAndReconnectNeverLogThePassword() async throws {
        let secret = makeSecret("requirepass")
        let server = try await RedisServer.start(["--requirepass", secret])
        let target = try await RedisServer.start(["--requirepass", secret])
        let logs = LogCapture()
        let connection = try await server.connect {
            $0.password = secret
            $0.database = 1
            $0.clientName = "security-test"
            $0.logger = logs.logger
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(200))
        }
        try await connection.send("AUTH", secret)
        try await connection.send("AUTH", "default", secret)
        try await connection.send("HELLO", 2, "AUTH", "default", secret)
        try await connection.send("CONFIG", "SET", "requirepass", secret)
        try await connection.send("CONFIG", "SET", "masterauth", secret)
        try await connection.send("ACL", "SETUSER", "svc", "on", ">" + secret, "~svc:*", "+get")
        try await connection.send("SET", "migrating", "v")
        try await connection.send("MIGRATE", "127.0.0.1", target.port, "migrating", 0, 5000, "AUTH", secret)
        try await connection.send("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "AUTH2", "default", secret, "KEYS", "gone")
        let check = try await target.connect { $0.password = secret }
        #expect(try await check.send("GET", "migrating") == .bulk(Array("v".utf8)), "MIGRATE authenticated")

        try await server.restart()
        try await eventually(timeout: .seconds(15), "the reconnect") {
            logs.all.contains { $0.contains("reconnected") }
        }
        #expect(try await connection.send("PING") == .status("PONG"))

        let entries = logs.all
        logs.expectNone(of: [secret])
        let handshakes = entries.filter { $0.contains("AUTH (redacted)") && $0.contains("redis.handshake") }
        #expect(handshakes.count >= 2, "AUTH logged (redacted) at connect and at reconnect: \(entries)")
        #expect(entries.contains { $0.contains("HELLO 2 AUTH (redacted) (redacted)") })
        #expect(entries.contains { $0.contains("CONFIG SET requirepass (redacted)") })
        #expect(entries.contains { $0.contains("ACL SETUSER svc on >(redacted)") })
        #expect(entries.contains { $0.contains("AUTH2 (redacted) (redacted) KEYS gone") })
        #expect(entries.contains { $0.contains("SET migrating v") }, "other commands are logged in full")
        await connection.close()
        await check.close()
    }

    /// A wrong password (and a wrong ACL user's): `authenticationFailed`, and neither the
    /// wrong nor the right password in the error or the logs.
    @Test func aFailedAuthenticationShowsNoPassword() async throws {
        let right = makeSecret("right")
        let wrong = makeSecret("wrong")
        let server = try await RedisServer.start(["--requirepass", right])
        let logs = LogCapture()
        for username in [nil, "alice"] as [String?] {
            let error = await #expect(throws: RedisError.self) {
                try await server.connect {
                    $0.username = username
                    $0.password = wrong
                    $0.logger = logs.logger
                }
            }
            #expect(error?.code == .authenticationFailed)
            for text in error.map(renderings) ?? [] {
                #expect(!text.contains(wrong) && !text.contains(right), "\(text)")
            }
        }
        logs.expectNone(of: [wrong, right])
        #expect(logs.all.contains { $0.contains("AUTH (redacted)") })
        #expect(logs.all.contains { $0.contains("connect failed") })
    }

    /// A master found through a sentinel that itself wants a password: the sentinel's and
    /// the master's passwords reach neither the logs nor the errors, also when the
    /// sentinel password is wrong.
    @Test func sentinelDiscoveryWithPasswordsLogsNoSecret() async throws {
        let masterPassword = makeSecret("master")
        let sentinelPassword = makeSecret("sentinel")
        let wrongPassword = makeSecret("wrong")
        let master = try await RedisServer.start(["--requirepass", masterPassword])
        let sentinel = try await RedisServer.startSentinel(monitoring: master.port, masterName: "secured", quorum: 1)
        let admin = try await sentinel.connect()
        try await admin.send("SENTINEL", "SET", "secured", "auth-pass", masterPassword)
        // Sentinel has no requirepass setting at run time; the default user's password is the same thing.
        try await admin.send("ACL", "SETUSER", "default", "on", ">" + sentinelPassword)
        await admin.close()
        let anonymous = try await sentinel.connect { $0.reconnect = .never }
        await #expect(throws: RedisError.self, "the sentinel now wants a password") { try await anonymous.send("PING") }
        await anonymous.close()

        let logs = LogCapture()
        var configuration = RedisConfiguration.sentinel(
            sentinels: [(sentinel.host, sentinel.port)], masterName: "secured",
            password: masterPassword, sentinelPassword: sentinelPassword)
        configuration.logger = logs.logger
        configuration.connectTimeout = .seconds(3)
        let connection = try await RedisConnection.connect(configuration)
        #expect(try await connection.send("PING") == .status("PONG"))
        await connection.close()
        #expect(logs.all.contains { $0.contains("AUTH (redacted)") && $0.contains("sentinel") },
                "the sentinel's AUTH is logged, redacted: \(logs.all)")

        var wrong = configuration
        wrong.sentinel?.password = wrongPassword
        let error = await #expect(throws: RedisError.self) { try await RedisConnection.connect(wrong) }
        #expect(error?.code == .noSentinelReachable)
        for text in error.map(renderings) ?? [] {
            for secret in [masterPassword, sentinelPassword, wrongPassword] {
                #expect(!text.contains(secret), "\(text)")
            }
        }
        logs.expectNone(of: [masterPassword, sentinelPassword, wrongPassword])
    }
}
