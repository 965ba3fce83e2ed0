import Foundation
import Hiredis
import LockKit
import RedisTestSupport
import Testing

/// ``LockInspector`` over both key layouts: a prefix with its own hash tag (every key
/// `prefix+key:suffix`) and keys that carry one.
@Suite struct LockInspectorTests {
    @Test func aHashTaggedPrefixListsItsLocksAndSemaphores() async throws {
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let prefix = "{\(UUID().uuidString.prefix(8))}"
        let queue = try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(),
                                      options: CallbackQueueOptions(channel: prefix + "channel", lockPrefix: prefix,
                                                                    lock: LockOptions(keepAliveLease: .seconds(10))))
        let lock = try await queue.once("a")
        let permit = try await queue.semaphore("s", permits: 4).take()
        #expect(try await queue.inspector.locks().map { [$0.key, $0.token, "\($0.fencingToken ?? -1)"] }
                == [["a", lock.token, "\(lock.fencingToken)"]])
        let semaphores = try await queue.inspector.semaphores()
        #expect(semaphores.map(\.key) == ["s"] && semaphores.first?.permits == 4 && semaphores.first?.holders.map(\.token) == [permit.token])
        try await lock.release()
        try await permit.leave()
        #expect(try await queue.inspector.locks().isEmpty)
        #expect(try await queue.inspector.semaphores().isEmpty)
    }

    @Test func keysWithTheirOwnHashTagAndForeignKeysUnderThePrefix() async throws {
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let prefix = "p\(UUID().uuidString.prefix(8)):"
        let queue = try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(),
                                      options: CallbackQueueOptions(channel: prefix + "channel", lockPrefix: prefix,
                                                                    lock: LockOptions(keepAliveLease: .seconds(10))))
        let lock = try await queue.once("{tenant}:report")
        try await queue.client.send("HSET", prefix + "not-a-lock", "field", "value")
        #expect(try await queue.inspector.locks().map(\.key) == ["{tenant}:report"])
        #expect(try await queue.inspector.locks().first?.fencingToken == lock.fencingToken)
        try await lock.release()
    }

    @Test func anEmptyPrefixIsRefused() async throws {
        let redis = try await TestRedis.start()
        defer { withExtendedLifetime(redis) {} }
        let client = try await redis.connect()
        #expect(throws: RedisError.self) { try LockInspector(client: client, lockPrefix: "") }
    }
}
