import Hiredis
import RedisTestSupport
import Testing

@Suite struct ScriptTests {
    static let compareAndSet = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('SET', KEYS[1], ARGV[2])
            return 1
        end
        return 0
        """)

    @Test func runsWithKeysAndArguments() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        try await connection.send("SET", key, "a")
        let script = RedisScript(Self.compareAndSet.source)
        #expect(try await connection.run(script, keys: [key], arguments: ["a", "b"]) == .integer(1))
        #expect(try await connection.run(script, keys: [key], arguments: ["a", "c"]) == .integer(0))
        #expect(try await connection.send("GET", key) == .bulk(Array("b".utf8)))
        #expect(script.sha1?.count == 40)
        await connection.close()
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func worksAgainAfterScriptFlush() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let key = uniqueKey()
        let script = RedisScript("return redis.call('INCR', KEYS[1])")
        #expect(try await connection.run(script, keys: [key]) == .integer(1))
        try await connection.send("SCRIPT", "FLUSH")
        #expect(try await connection.send("SCRIPT", "EXISTS", script.sha1!) == .array([.integer(0)]))
        #expect(try await connection.run(script, keys: [key]) == .integer(2))
        #expect(try await connection.send("SCRIPT", "EXISTS", script.sha1!) == .array([.integer(1)]), "EVAL reloaded it")
        #expect(try await connection.run(script, keys: [key]) == .integer(3))
        await connection.close()
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func worksAfterServerRestart() async throws {
        let server = try await RedisServer.start()
        let connection = try await server.connect {
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
        }
        let script = RedisScript("return ARGV[1] .. '!'")
        #expect(try await connection.run(script, arguments: ["hi"]) == .bulk(Array("hi!".utf8)))
        try await server.restart()
        try await eventually("reconnect") { await connection.isConnected }
        #expect(try await connection.run(script, arguments: ["again"]) == .bulk(Array("again!".utf8)))
        await connection.close()
    }

    @Test func luaErrorIsAServerError() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        await #expect {
            try await connection.run(RedisScript("return redis.call('NOSUCHCOMMAND')"))
        } throws: { ($0 as? RedisError)?.code == .server }
        await connection.close()
    }
}
