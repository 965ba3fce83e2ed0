import Hiredis
import RedisTestSupport
import Testing

/// Reads the next event, failing the test if the sequence ends first.
private func next(_ iterator: inout RedisSubscription.AsyncIterator) async throws -> RedisSubscription.Event {
    guard let event = try await iterator.next() else { throw TestSupportError("the subscription ended") }
    return event
}

@Suite struct SubscriberTests {
    @Test func receivesMessagesOnConfirmedChannels() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        let publisher = try await redis.connect()
        let channel = uniqueKey()
        let subscription = try await subscriber.subscribe([channel])
        // subscribe() returned after the server confirmed: a publish now is delivered.
        #expect(try await publisher.send("PUBLISH", channel, [UInt8]([0, 1, 2])) == .integer(1))
        var iterator = subscription.makeAsyncIterator()
        #expect(try await next(&iterator) == .message(RedisPubSubMessage(channel: channel, pattern: nil, payload: [0, 1, 2])))
        try await publisher.send("PUBLISH", channel, "second")
        guard case .message(let message) = try await next(&iterator) else { Issue.record("expected a message"); return }
        #expect(message.string == "second")
        await subscriber.close()
        await publisher.close()
    }

    @Test func patternSubscriptionsCarryThePattern() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        let publisher = try await redis.connect()
        let prefix = uniqueKey()
        let subscription = try await subscriber.psubscribe([prefix + ":*"])
        try await publisher.send("PUBLISH", prefix + ":a", "x")
        var iterator = subscription.makeAsyncIterator()
        #expect(try await next(&iterator) == .message(RedisPubSubMessage(channel: prefix + ":a", pattern: prefix + ":*", payload: [120])))
        await subscriber.close()
        await publisher.close()
    }

    @Test func twoListenersOnOneChannelBothReceive() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        let publisher = try await redis.connect()
        let channel = uniqueKey()
        let first = try await subscriber.subscribe([channel])
        let second = try await subscriber.subscribe([channel])
        #expect(try await publisher.send("PUBLISH", channel, "both") == .integer(1), "one server-side subscription")
        var a = first.makeAsyncIterator()
        var b = second.makeAsyncIterator()
        guard case .message(let m1) = try await next(&a), case .message(let m2) = try await next(&b) else {
            Issue.record("expected messages"); return
        }
        #expect(m1.string == "both" && m2.string == "both")
        await subscriber.close()
        await publisher.close()
    }

    @Test func droppingTheSequenceUnsubscribes() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        let observer = try await redis.connect()
        let channel = uniqueKey()
        do {
            let subscription = try await subscriber.subscribe([channel])
            #expect(try await observer.send("PUBSUB", "NUMSUB", channel) == .array([.bulk(Array(channel.utf8)), .integer(1)]))
            _ = subscription
        }
        try await eventually("the unsubscribe") {
            try await observer.send("PUBSUB", "NUMSUB", channel) == .array([.bulk(Array(channel.utf8)), .integer(0)])
        }
        // Subscribing again after the unsubscribe works.
        let again = try await subscriber.subscribe([channel])
        try await observer.send("PUBLISH", channel, "again")
        var iterator = again.makeAsyncIterator()
        guard case .message(let message) = try await next(&iterator) else { Issue.record("expected a message"); return }
        #expect(message.string == "again")
        await subscriber.close()
        await observer.close()
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func resubscribesAfterRestartAndReportsTheGap() async throws {
        let server = try await RedisServer.start()
        let subscriber = try await RedisSubscriber.connect({
            var configuration = server.configuration
            configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
            return configuration
        }())
        let channel = uniqueKey()
        let subscription = try await subscriber.subscribe([channel])
        var iterator = subscription.makeAsyncIterator()
        let before = try await server.connect()
        try await before.send("PUBLISH", channel, "before")
        guard case .message(let first) = try await next(&iterator) else { Issue.record("expected a message"); return }
        #expect(first.string == "before")
        try await server.restart()
        #expect(try await next(&iterator) == .gap, "the gap is reported once re-subscribed")
        let after = try await server.connect()
        #expect(try await after.send("PUBLISH", channel, "after") == .integer(1))
        guard case .message(let second) = try await next(&iterator) else { Issue.record("expected a message"); return }
        #expect(second.string == "after")
        await subscriber.close()
        await after.close()
    }

    @Test func closeEndsTheSequences() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        let subscription = try await subscriber.subscribe([uniqueKey()])
        await subscriber.close()
        var iterator = subscription.makeAsyncIterator()
        #expect(try await iterator.next() == nil)
        await #expect(performing: { _ = try await subscriber.subscribe(["x"]) }, throws: { ($0 as? RedisError)?.code == .connectionClosed })
    }

    @Test func badInputIsRejected() async throws {
        let redis = try await TestRedis.start()
        let subscriber = try await redis.subscriber()
        await #expect(performing: { _ = try await subscriber.subscribe([]) }, throws: { ($0 as? RedisError)?.code == .invalidArgument })
        await #expect(performing: { _ = try await subscriber.subscribe([""]) }, throws: { ($0 as? RedisError)?.code == .invalidArgument })
        await subscriber.close()
    }
}
