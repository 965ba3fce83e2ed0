import Hiredis
import RedisTestSupport
import Testing

@Test func pingPong() async throws {
    let redis = try await TestRedis.start()
    let connection = try await redis.connect()
    let reply = try await connection.send("PING")
    #expect(reply == .status("PONG"))
    await connection.close()
}
