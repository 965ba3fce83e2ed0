import Foundation
import Hiredis
import RedisTestSupport
import Testing

private func code(_ expected: RedisError.Code) -> @Sendable (any Error) -> Bool {
    { ($0 as? RedisError)?.code == expected }
}

@Suite struct RoundTripTests {
    @Test func everyReplyType() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        #expect(try await connection.send("SET", key, "v") == .status("OK"))
        #expect(try await connection.send("GET", key) == .bulk(Array("v".utf8)))
        #expect(try await connection.send("INCRBY", key + ":n", -5) == .integer(-5))
        #expect(try await connection.send("GET", key + ":missing") == .null)
        #expect(try await connection.send("RPUSH", key + ":l", "a", "b") == .integer(2))
        #expect(try await connection.send("LRANGE", key + ":l", 0, -1) == .array([.bulk([97]), .bulk([98])]))
        #expect(try await connection.send("LRANGE", key + ":empty", 0, -1) == .array([]))
        // A nested error reply (inside EXEC) is a value, not a thrown error.
        let exec = try await connection.pipeline([
            RedisCommand("MULTI"), RedisCommand("INCR", key), RedisCommand("PING"), RedisCommand("EXEC"),
        ])
        guard case .success(.array(let results)) = exec[3], case .error(let message) = results[0] else {
            Issue.record("EXEC did not return [error, PONG]: \(exec)"); return
        }
        #expect(message.hasPrefix("ERR"))
        #expect(results[1] == .status("PONG"))
        // A top-level error reply is thrown with the server's text.
        await #expect {
            try await connection.send("INCR", key)
        } throws: { error in
            let error = error as? RedisError
            return error?.code == .server && error?.serverErrorPrefix == "ERR" && error!.message.contains("not an integer")
        }
        await connection.close()
    }

    @Test func binaryValuesWithNulAndEmpty() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let binary: [UInt8] = [0, 255, 13, 10, 0, 36, 42, 0]
        try await connection.send("SET", key, binary)
        #expect(try await connection.send("GET", key).bytes() == binary)
        try await connection.send("SET", key, [UInt8]())
        #expect(try await connection.send("GET", key) == .bulk([]))
        let binaryKey: [UInt8] = Array((key + ":bin").utf8) + [0, 1]
        try await connection.send("SET", binaryKey, "x")
        #expect(try await connection.send("GET", key + ":bin") == .null)
        #expect(try await connection.send("GET", binaryKey) == .bulk([120]))
        await connection.close()
    }

    @Test func sixtyFourMebibyteValue() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect { $0.commandTimeout = .seconds(60) }
        let key = uniqueKey()
        var value = [UInt8](repeating: 0, count: 64 << 20)
        for i in stride(from: 0, to: value.count, by: 4096) { value[i] = UInt8(truncatingIfNeeded: i / 4096) }
        try await connection.send("SET", key, value)
        let back = try await connection.send("GET", key).bytes()
        #expect(back.count == value.count)
        // memcmp: the generic == walks 64 Mi elements one by one in a debug build, holding
        // one of the few cooperative threads for about a second.
        #expect(back.withUnsafeBytes { b in value.withUnsafeBytes { v in memcmp(b.baseAddress!, v.baseAddress!, v.count) == 0 } })
        try await connection.send("DEL", key)
        await connection.close()
    }

    @Test func unixSocket() async throws {
        let server = try await RedisServer.start()
        let connection = try await RedisConnection.connect(RedisConfiguration(unixSocketPath: server.unixSocketPath))
        #expect(try await connection.send("ECHO", "over unix") == .bulk(Array("over unix".utf8)))
        await connection.close()
    }
}

@Suite struct ConcurrencyTests {
    /// 100 tasks × 100 commands on ONE connection: every reply belongs to its command.
    @Test func tenThousandConcurrentCommandsAnsweredInOrder() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let mismatches = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<100 {
                group.addTask {
                    var wrong = 0
                    for i in 0..<100 {
                        let payload = "\(task)-\(i)"
                        if try await connection.send("ECHO", payload).decode(String.self) != payload { wrong += 1 }
                        if i % 10 == 0, try await connection.send("INCR", key).decode(Int.self) < 1 { wrong += 1 }
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(mismatches == 0)
        #expect(try await connection.send("GET", key).decode(Int.self) == 1000)
        await connection.close()
    }

    @Test func pipelineKeepsOneResultPerCommandAroundAFailure() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let results = try await connection.pipeline([
            RedisCommand("SET", key, "text"),
            RedisCommand("INCR", key),  // fails: not an integer
            RedisCommand("APPEND", key, "!"),
            RedisCommand("GET", key),
        ])
        #expect(results.count == 4)
        #expect(try results[0].get() == .status("OK"))
        guard case .failure(let error) = results[1] else { Issue.record("INCR should fail"); return }
        #expect(error.code == .server)
        #expect(try results[2].get() == .integer(5))
        #expect(try results[3].get() == .bulk(Array("text!".utf8)))
        #expect(try await connection.pipeline([]).isEmpty)
        await connection.close()
    }
}

@Suite struct AuthenticationTests {
    @Test(.enabled(if: TestRedis.ownsServers)) func wrongPasswordIsAuthenticationFailed() async throws {
        let server = try await RedisServer.start(["--requirepass", "right"])
        await #expect(performing: {
            _ = try await server.connect { $0.password = "wrong" }
        }, throws: code(.authenticationFailed))
        let connection = try await server.connect { $0.password = "right" }
        #expect(try await connection.send("PING") == .status("PONG"))
        await connection.close()
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func aclUserAndPassword() async throws {
        let server = try await RedisServer.start()
        let admin = try await server.connect()
        try await admin.send("ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all")
        let alice = try await server.connect { $0.username = "alice"; $0.password = "pw" }
        #expect(try await alice.send("ACL", "WHOAMI").decode(String.self) == "alice")
        await #expect(performing: {
            _ = try await server.connect { $0.username = "alice"; $0.password = "nope" }
        }, throws: code(.authenticationFailed))
        await alice.close()
        await admin.close()
    }
}

@Suite struct ConnectFailureTests {
    @Test func refusedPortIsConnectionFailed() async throws {
        let port = try freeLoopbackPort()  // nothing listens there
        await #expect {
            _ = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: port))
        } throws: { error in
            let error = error as? RedisError
            return error?.code == .connectionFailed && error!.message.lowercased().contains("refused")
        }
    }

    /// A loopback listener whose accept queue is full: the TCP handshake never completes.
    @Test func unansweredConnectTimesOutWithinTheConnectTimeout() async throws {
        let listener = try FullBacklogListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: listener.port)
        configuration.connectTimeout = .milliseconds(300)
        let started = ContinuousClock.now
        await #expect(performing: { _ = try await RedisConnection.connect(configuration) }, throws: code(.timeout))
        // Without the timer it would wait for ever: any bound proves it fired. A roomy one,
        // as a loaded 2-core machine stalled this process for 6 s once.
        #expect(ContinuousClock.now - started < .seconds(30))
        withExtendedLifetime(listener) {}
    }

    @Test func unresolvableHostIsConnectionFailed() async throws {
        // `.invalid` is reserved (RFC 6761) and never resolves; nothing is sent anywhere.
        await #expect(performing: {
            _ = try await RedisConnection.connect(RedisConfiguration(host: "no-such-host.invalid", port: 6379))
        }, throws: code(.connectionFailed))
    }
}

@Suite struct TimeoutAndCancellationTests {
    @Test(.enabled(if: TestRedis.ownsServers)) func commandTimeoutWithDebugSleepThenLateReplyIsDiscarded() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect { $0.commandTimeout = .milliseconds(200) }
        // A timeout error (not +OK) proves the timer fired before the server answered.
        // 4 s: far past the timeout even if this process stalls for seconds meanwhile.
        await #expect(performing: { try await connection.send("DEBUG", "SLEEP", "4") }, throws: code(.timeout))
        // The late +OK of DEBUG SLEEP must not be taken as the reply to this ECHO.
        let echo = try await connection.send(RedisCommand("ECHO", "after"), timeout: .seconds(15))
        #expect(echo == .bulk(Array("after".utf8)))
        await connection.close()
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func commandTimeoutWhileServerIsStopped() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect { $0.commandTimeout = .milliseconds(200) }
        server.pause()
        await #expect(performing: { try await connection.send("PING") }, throws: code(.timeout))
        server.resume()
        #expect(try await connection.send(RedisCommand("ECHO", "back"), timeout: .seconds(5)) == .bulk(Array("back".utf8)))
        await connection.close()
    }

    @Test func cancellationResumesTheWaiterAndTheConnectionStaysUsable() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let observer = try await redis.connect()
        let key = uniqueKey()
        let blocked = Task { try await connection.send("BLPOP", key, 30) }
        try await eventually("BLPOP to block") { try await observer.info("blocked_clients") == "1" }
        blocked.cancel()
        await #expect(throws: CancellationError.self) { try await blocked.value }
        // Unblock BLPOP: its late reply is discarded, the next command gets its own reply.
        try await observer.send("RPUSH", key, "late")
        #expect(try await connection.send("ECHO", "mine") == .bulk(Array("mine".utf8)))
        await connection.close()
        await observer.close()
    }

    @Test func alreadyCancelledTaskSendsNothing() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await connection.send("SET", key, "x")
        }
        await #expect(throws: CancellationError.self) { try await task.value }
        #expect(try await connection.send("EXISTS", key) == .integer(0))
        await connection.close()
    }

    @Test func nonPositiveTimeoutIsRejected() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        await #expect(performing: { try await connection.send(RedisCommand("PING"), timeout: .zero) },
                      throws: code(.invalidArgument))
        await connection.close()
    }
}

@Suite struct LifecycleTests {
    @Test(.enabled(if: TestRedis.ownsServers)) func restartFailsInFlightThenReconnectsAndReplaysSelectAndName() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect {
            $0.database = 3
            $0.clientName = "lifecycle-test"
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(200))
        }
        let observer = try await server.connect()
        let key = uniqueKey()
        let inFlight = Task { try await connection.send("BLPOP", key, 30) }
        try await eventually("BLPOP to block") { try await observer.info("blocked_clients") == "1" }
        try await server.restart()
        await #expect(performing: { try await inFlight.value }, throws: code(.connectionClosed))
        // Sent while reconnecting (or after): waits for the new connection.
        try await connection.send("SET", key, "in db 3")
        let check = try await server.connect { $0.database = 3 }
        #expect(try await check.send("GET", key) == .bulk(Array("in db 3".utf8)))
        let db0 = try await server.connect()
        #expect(try await db0.send("GET", key) == .null)
        let clients = try await db0.send("CLIENT", "LIST").decode(String.self)
        #expect(clients.contains("name=lifecycle-test"))
        #expect(await connection.isConnected)
        for c in [connection, check, db0, observer] { await c.close() }
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func commandsWaitForReconnectUpToTheConnectTimeout() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect {
            $0.connectTimeout = .milliseconds(300)
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
        }
        await server.kill()
        try await eventually("the loss to be noticed") { await !connection.isConnected }
        await #expect(performing: { try await connection.send("PING") }, throws: code(.timeout))
        #expect(await connection.isOpen, "still trying to reconnect")
        await connection.close()
        await #expect(performing: { try await connection.send("PING") }, throws: code(.connectionClosed))
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func givesUpAfterMaximumReconnectAttempts() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect {
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(20), maximumAttempts: 2)
        }
        await server.kill()
        try await eventually("the connection to give up") { await !connection.isOpen }
        await #expect(performing: { try await connection.send("PING") }, throws: code(.connectionClosed))
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func noReconnectPolicyClosesOnLoss() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect { $0.reconnect = .never }
        await server.kill()
        try await eventually("the connection to close") { await !connection.isOpen }
        await #expect(performing: { try await connection.send("PING") }, throws: code(.connectionClosed))
    }

    @Test func gracefulCloseWaitsForRepliesAlreadyDue() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let observer = try await redis.connect()
        let key = uniqueKey()
        // BLPOP blocks until the observer pushes, so no timing decides the outcome.
        let waiting = Task { try await connection.send("BLPOP", key, "0") }
        try await eventually("BLPOP to block") { try await observer.info("blocked_clients") == "1" }
        let closing = Task { await connection.close() }
        try await eventually("close() to begin") { await !connection.isOpen }
        try await observer.send("LPUSH", key, "due")
        await closing.value
        #expect(try await waiting.value == .array([.bulk(Array(key.utf8)), .bulk(Array("due".utf8))]),
                "BLPOP's reply arrived although close() had begun before it")
        #expect(await !connection.isOpen)
        await #expect(performing: { try await connection.send("PING") }, throws: code(.connectionClosed))
        await connection.close()  // a second close is harmless
        await observer.close()
    }

    @Test func droppedConnectionIsFreedWithoutClose() async throws {
        let redis = try await TestRedis.start()
        let observer = try await redis.connect()
        let before = try await observer.info("connected_clients").flatMap { Int($0) } ?? 0
        for _ in 0..<20 {
            let connection = try await redis.connect()
            _ = try await connection.send("PING")
        }
        try await eventually("dropped connections to disconnect") {
            (try await observer.info("connected_clients").flatMap { Int($0) } ?? 99) <= before
        }
        await observer.close()
    }

    @Test func invalidCommandsAreRejectedBeforeSending() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        try await connection.send("CONFIG", "RESETSTAT")
        await #expect(performing: { try await connection.send("SUBSCRIBE", "x") }, throws: code(.invalidArgument))
        await #expect(performing: { try await connection.send(RedisCommand("")) }, throws: code(.invalidArgument))
        await #expect(performing: { _ = try await connection.pipeline([RedisCommand("PING"), RedisCommand("MONITOR")]) },
                      throws: code(.invalidArgument))
        let stats = try await connection.send("INFO", "commandstats").decode(String.self)
        #expect(!stats.contains("cmdstat_subscribe"))
        #expect(!stats.contains("cmdstat_ping"), "nothing of the rejected pipeline was sent")
        await connection.close()
    }
}

@Suite struct ChurnTests {
    /// Connect, command, close (or drop) over and over from several tasks at once: the
    /// Dispatch sources on each socket are created and cancelled in parallel.
    @Test func connectCommandDisconnectRepeatedly() async throws {
        let redis = try await TestRedis.start()
        let observer = try await redis.connect()
        let failures = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<4 {
                group.addTask {
                    var wrong = 0
                    for round in 0..<150 {
                        let connection = try await redis.connect()
                        if try await connection.send("ECHO", "\(task)/\(round)").decode(String.self) != "\(task)/\(round)" {
                            wrong += 1
                        }
                        if round % 3 == 0 { continue }  // dropped without close()
                        await connection.close()
                    }
                    return wrong
                }
            }
            return try await group.reduce(0, +)
        }
        #expect(failures == 0)
        try await eventually("every churned connection to be gone") {
            try await observer.info("connected_clients") == "1"
        }
        await observer.close()
    }
}

@Suite struct BrokenPipeTests {
    /// Writing to a server that was killed raises SIGPIPE, whose default action ends the
    /// process: the connection ignores it, so the write fails as a lost connection instead
    /// (without that, this test process dies).
    @Test(.enabled(if: TestRedis.ownsServers)) func writingToAKilledServerFailsInsteadOfKillingTheProcess() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect { $0.reconnect = .never }
        try await connection.send("SET", "k", "v")
        await server.kill()
        let big = [UInt8](repeating: 0x61, count: 8 * 1024 * 1024)
        for _ in 0..<3 {
            await #expect(throws: RedisError.self) { try await connection.send("SET", "k", big) }
        }
        var disposition = sigaction()
        _ = sigaction(SIGPIPE, nil, &disposition)
        #expect(disposition.__sigaction_handler.sa_handler != nil, "SIGPIPE is no longer fatal")
    }
}
