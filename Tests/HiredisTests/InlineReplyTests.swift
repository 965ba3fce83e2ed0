import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// A caller alone on its connection waits for its reply on its own thread, with the read
/// source parked (``RedisConfiguration/inlineReplyWait``). Nothing the server sends may be
/// missed meanwhile: replies that take longer, a close while idle, a close between commands.
@Suite struct InlineReplyTests {
    func fastReconnect(_ configuration: inout RedisConfiguration) {
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(10), maximumDelay: .milliseconds(50))
    }

    /// The server closes the connection between two sequential commands. The close is read
    /// before the next command is written, so that command waits for the reconnection
    /// instead of being written to a dead socket and failing with `connectionClosed`.
    @Test func aCloseBetweenSequentialCommandsIsReadBeforeTheNextOneIsWritten() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect(fastReconnect)
        let killer = try await redis.connect()
        for _ in 0..<20 { try await connection.send("PING") }
        let id = try await connection.send("CLIENT", "ID").decode(Int.self)
        // Redis closes the socket before it replies to the killer, and loopback delivers the
        // FIN before that reply.
        #expect(try await killer.send("CLIENT", "KILL", "ID", id) == .integer(1))
        #expect(try await connection.send("PING") == .status("PONG"))
        #expect(try await connection.send("CLIENT", "ID").decode(Int.self) != id)
        await connection.close()
        await killer.close()
    }

    /// After sequential commands, the connection sits idle and the server closes it: the
    /// connection notices by itself and reconnects, without a command to find out.
    @Test func aCloseWhileIdleAfterSequentialCommandsIsNoticed() async throws {
        let redis = try await TestRedis.start()
        let name = "inline-\(UInt32.random(in: 0...UInt32.max))"
        let connection = try await redis.connect {
            fastReconnect(&$0)
            $0.clientName = name
        }
        let killer = try await redis.connect()
        for _ in 0..<20 { try await connection.send("PING") }
        let id = try await connection.send("CLIENT", "ID").decode(Int.self)
        #expect(try await killer.send("CLIENT", "KILL", "ID", id) == .integer(1))
        try await eventually("a new connection named \(name), with no command sent") {
            let clients = try await killer.send("CLIENT", "LIST").decode(String.self)
            return clients.split(separator: "\n").contains { $0.contains("name=\(name) ") && !$0.hasPrefix("id=\(id) ") }
        }
        await connection.close()
        await killer.close()
    }

    /// A command whose reply takes longer than the inline wait (a blocking pop) gets it when
    /// it comes, through the read source.
    @Test func aReplySlowerThanTheInlineWaitStillArrives() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect()
        let other = try await redis.connect()
        let key = uniqueKey()
        for _ in 0..<20 { try await connection.send("PING") }
        let id = try await connection.send("CLIENT", "ID").decode(Int.self)
        let popped = Task { try await connection.send("BLPOP", key, 20) }
        try await eventually("BLPOP to block") {
            try await other.send("CLIENT", "LIST", "ID", id).decode(String.self).contains("cmd=blpop")
        }
        try await other.send("RPUSH", key, "value")
        #expect(try await popped.value == .array([.bulk(Array(key.utf8)), .bulk(Array("value".utf8))]))
        #expect(try await connection.send("PING") == .status("PONG"))
        await connection.close()
        await other.close()
    }

    /// Turned off, every command suspends and is answered the usual way.
    @Test func zeroInlineWaitStillAnswersEveryCommand() async throws {
        let redis = try await TestRedis.start()
        let connection = try await redis.connect { $0.inlineReplyWait = .zero }
        let key = uniqueKey()
        for index in 1...200 {
            #expect(try await connection.send("INCR", key) == .integer(Int64(index)))
        }
        let replies = try await connection.pipeline((0..<50).map { _ in RedisCommand("INCR", key) })
        #expect(replies.last.flatMap { try? $0.get() } == .integer(250))
        await connection.close()
    }
}
