import Foundation
import Hiredis
@testable import LockKit
import RedisTestSupport
import Synchronization
import Testing

/// A fleet of CallbackQueues, each with its own two connections, sharing one channel and
/// prefix (unique to the test), like separate processes would.
struct Fleet {
    let redis: TestRedis
    let queues: [CallbackQueue]
    let channel: String
    let prefix: String

    static func start(_ count: Int, lock: LockOptions = LockOptions(), redis given: TestRedis? = nil,
                      configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> Fleet {
        let redis: TestRedis
        if let given { redis = given } else { redis = try await TestRedis.start() }
        let channel = uniqueKey("channel")
        let prefix = "{\(UUID().uuidString.prefix(8))}"
        var queues: [CallbackQueue] = []
        for _ in 0..<count {
            var options = CallbackQueueOptions(channel: channel, lockPrefix: prefix, lock: lock)
            options.lockPrefix = prefix
            queues.append(try CallbackQueue(
                client: try await redis.connect(configure), pubsub: try await redis.subscriber(configure), options: options))
        }
        return Fleet(redis: redis, queues: queues, channel: channel, prefix: prefix)
    }

    var client: any RedisClient { queues[0].client }
}

extension LockOptions {
    /// A keep-alive lease that no stall of a loaded test machine outlasts: for tests whose
    /// subject is not expiry, where a lost lease would (rightly) let a waiter run a job
    /// again or fail a permit's holder.
    static let steady = LockOptions(keepAliveLease: .seconds(30))
}

/// Counts by key, shared by concurrent tasks.
final class Counter: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func add(_ key: String = "") { counts.withLock { $0[key, default: 0] += 1 } }
    func value(_ key: String = "") -> Int { counts.withLock { $0[key, default: 0] } }
    var total: Int { counts.withLock { $0.values.reduce(0, +) } }
}

struct JobFailed: Error, CustomStringConvertible {
    let detail: String
    var description: String { "job failed: \(detail)" }
}

@Suite struct OnceTests {
    @Test func tenContendersExactlyOneWins() async throws {
        let fleet = try await Fleet.start(10, lock: LockOptions(retries: 1, delay: .milliseconds(20)))
        let results = await withTaskGroup(of: Result<Lock, any Error>.self) { group in
            for queue in fleet.queues { group.addTask { await catching { try await queue.once("resource") } } }
            return await group.reduce(into: []) { $0.append($1) }
        }
        let winners = results.compactMap { try? $0.get() }
        #expect(winners.count == 1)
        #expect(results.filter { if case .failure(let e) = $0 { return e is LockAcquisitionError }; return false }.count == 9)
        let lock = try #require(winners.first)
        #expect(try await fleet.client.send("GET", lock.redisKey).decode(String.self) == lock.token)
        try await lock.release()
        #expect(try await fleet.client.send("EXISTS", lock.redisKey) == .integer(0))
    }

    @Test func extendRaisesTheTTL() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(10)))
        let lock = try await fleet.queues[0].once("extend")
        try await lock.extend(by: .seconds(30))
        #expect(try await fleet.client.send("PTTL", lock.redisKey).decode(Int.self) > 20_000)
        try await lock.release()
    }

    @Test func extendAndReleaseAfterExpiryAreTypedErrors() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .milliseconds(50)))
        let lock = try await fleet.queues[0].once("expiring")
        try await eventually("the lock to expire") { try await fleet.client.send("EXISTS", lock.redisKey) == .integer(0) }
        await #expect(throws: LockExtendError.self) { try await lock.extend() }
        #expect(!lock.isLocked)
        await #expect(throws: LockReleaseError.self) { try await lock.release() }
    }

    @Test func anotherOwnersLockCannotBeReleasedOrExtended() async throws {
        let fleet = try await Fleet.start(1)
        let lock = try await fleet.queues[0].once("stolen")
        try await fleet.client.send("SET", lock.redisKey, "someone-else")
        await #expect(throws: LockReleaseError.self) { try await lock.release() }
        #expect(try await fleet.client.send("GET", lock.redisKey).decode(String.self) == "someone-else")
        let second = try await fleet.queues[0].once("stolen-2")
        try await fleet.client.send("SET", second.redisKey, "someone-else")
        await #expect(throws: LockExtendError.self) { try await second.extend() }
    }

    @Test func doubleReleaseIsAnErrorNotACrash() async throws {
        let fleet = try await Fleet.start(1)
        let lock = try await fleet.queues[0].once("twice")
        try await lock.release()
        await #expect(throws: LockReleaseError.self) { try await lock.release() }
    }

    @Test func fencingTokensStrictlyIncreaseAcrossHolders() async throws {
        let fleet = try await Fleet.start(3)
        var last: Int64 = 0
        for round in 0..<9 {
            let lock = try await fleet.queues[round % 3].once("fenced")
            #expect(lock.fencingToken > last)
            last = lock.fencingToken
            try await lock.release()
        }
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func redisFailureIsNotReportedAsContention() async throws {
        let server = try await RedisServer.start()
        let fleet = try await Fleet.start(1, redis: TestRedis(server)) {
            $0.reconnect = .never
        }
        await server.kill()
        try await eventually("the loss to be noticed") { await !(fleet.client as! RedisConnection).isOpen }
        await #expect {
            _ = try await fleet.queues[0].once("down")
        } throws: { $0 is RedisError }
    }

    @Test func badInputIsRejectedBeforeSending() async throws {
        let fleet = try await Fleet.start(1)
        await #expect { _ = try await fleet.queues[0].once("") } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        await #expect { _ = try await fleet.queues[0].multi([]) } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        await #expect { _ = try await fleet.queues[0].multi(["", ""]) } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        #expect { _ = try fleet.queues[0].semaphore("s", permits: 0) } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        #expect(throws: RedisError.self) {
            _ = try CallbackQueue(client: fleet.client, pubsub: fleet.queues[0].pubsub,
                                  options: CallbackQueueOptions(channel: "c", lock: LockOptions(timeout: .zero)))
        }
        #expect(throws: RedisError.self) {
            _ = try CallbackQueue(client: fleet.client, pubsub: fleet.queues[0].pubsub, options: CallbackQueueOptions(channel: ""))
        }
        await #expect { _ = try await fleet.queues[0].fanout("id", timeout: .zero) { 1 } } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        let keys = try await fleet.client.send("SCAN", 0, "MATCH", fleet.prefix + "*", "COUNT", 1000).decode([RedisReply].self)
        #expect(try keys[1].decode([String].self).isEmpty, "nothing was written")
    }
}

@Suite struct WithLockTests {
    @Test func watchdogKeepsAFiveSecondLockAliveThroughAnElevenSecondBody() async throws {
        // Extended every 1.7 s: a stall of a loaded machine under 3 s keeps it.
        let fleet = try await Fleet.start(2, lock: LockOptions(timeout: .seconds(5), retries: 0))
        let value = try await fleet.queues[0].withLock("long") { lock in
            try await Task.sleep(for: .seconds(11))
            // Still ours: a contender cannot take it.
            await #expect(throws: LockAcquisitionError.self) { _ = try await fleet.queues[1].once("long") }
            return lock.fencingToken
        }
        #expect(value >= 1)
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "long") == .integer(0), "released after the body")
    }

    @Test func deletedLeaseCancelsTheBodyAndThrowsLockLost() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .milliseconds(600)))
        let bodyCancelled = Counter()
        await #expect(throws: LockLostError.self) {
            try await fleet.queues[0].withLock("vanishing") { lock in
                try await fleet.client.send("DEL", lock.redisKey)
                do {
                    try await untilCancelled()
                } catch {
                    bodyCancelled.add()
                    throw error
                }
            }
        }
        #expect(bodyCancelled.value() == 1)
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func pausedServerPastTheTTLLosesTheLease() async throws {
        let server = try await RedisServer.start()
        // Timeouts long enough for the setup on a loaded machine; the lease is lost once
        // its 2 s pass without an extension getting through.
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(2)),
                                          redis: TestRedis(server)) {
            $0.commandTimeout = .seconds(1)
        }
        let started = Counter()
        await #expect(throws: LockLostError.self) {
            try await fleet.queues[0].withLock("paused") { _ in
                server.pause()
                started.add()
                try await untilCancelled()
            }
        }
        server.resume()
        #expect(started.value() == 1)
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func releaseThatCouldNotReachRedisIsRetriedInTheBackground() async throws {
        // The server dies inside the body (AOF keeps the lock), so withLock's release fails;
        // it is retried once the server is back, long before the 30 s lease would free the key.
        // appendfsync no: Redis writes the AOF before it replies, so an acknowledged write
        // survives kill -9 (fsync only matters for a power loss).
        let server = try await RedisServer.start(["--appendonly", "yes", "--appendfsync", "no"])
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(30)), redis: TestRedis(server)) {
            $0.commandTimeout = .seconds(1)
            $0.connectTimeout = .seconds(1)
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
        }
        let key = try await fleet.queues[0].withLock("restarting") { lock in
            await server.kill()
            return lock.redisKey
        }
        try await server.restart()
        let checker = try await server.connect()
        try await eventually(timeout: .seconds(10), "the lock released after the restart") {
            try await checker.send("EXISTS", key) == .integer(0)
        }
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func acquisitionWhoseReplyTimedOutLeavesNoOrphanLock() async throws {
        // The server is stopped, so the acquiring script times out on the client but runs
        // when the server resumes: the lock it set must not block others for its 30 s lease.
        let server = try await RedisServer.start()
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(30), retries: 0), redis: TestRedis(server)) {
            $0.commandTimeout = .seconds(1)
        }
        let checker = try await server.connect()
        try await fleet.queues[0].once("warm-up").release()   // the script is loaded: one EVALSHA
        server.pause()
        await #expect(throws: RedisError.self) { try await fleet.queues[0].once("orphan") }
        server.resume()
        try await eventually(timeout: .seconds(10), "the orphaned lock released") {
            try await checker.send("EXISTS", fleet.prefix + "orphan") == .integer(0)
        }
        let lock = try await fleet.queues[0].once("orphan")
        try await lock.release()
    }

    @Test func bodyErrorReleasesTheLock() async throws {
        let fleet = try await Fleet.start(1)
        await #expect(throws: JobFailed.self) {
            try await fleet.queues[0].withLock("failing") { _ in throw JobFailed(detail: "x") }
        }
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "failing") == .integer(0))
    }
}

@Suite struct MultiTests {
    @Test func acquireExtendRelease() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(20)))
        let multi = try await fleet.queues[0].multi("a", "b", "c")
        #expect(multi.locks.map(\.key) == ["a", "b", "c"])
        try await multi.extend(by: .seconds(120))
        for lock in multi.locks {
            #expect(try await fleet.client.send("PTTL", lock.redisKey).decode(Int.self) > 60_000)
            // What a background release counts on to keep trying for the whole lease.
            // (Read first: a failed #expect reflects its operands, and a Mutex inside a
            // Lock does not survive reflection.)
            let deadline = lock.leaseDeadline
            #expect(deadline > .now + .seconds(60))
        }
        let results = await multi.release()
        #expect(results.values.allSatisfy { (try? $0.get()) != nil })
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "a", fleet.prefix + "b", fleet.prefix + "c") == .integer(0))
    }

    @Test func oneHeldKeyRejectsTheWholeSetAndLeavesNothingBehind() async throws {
        let fleet = try await Fleet.start(2, lock: LockOptions(retries: 0))
        let held = try await fleet.queues[0].once("b")
        await #expect {
            _ = try await fleet.queues[1].multi(["a", "b", "c"])
        } throws: { error in
            (error as? MultiLockError)?.errors.keys.sorted() == ["b"]
        }
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "a", fleet.prefix + "c") == .integer(0))
        try await held.release()
    }

    @Test func tenConcurrentMultisOverTheSameKeysExactlyOneSucceeds() async throws {
        let fleet = try await Fleet.start(10, lock: LockOptions(retries: 0))
        let successes = await withTaskGroup(of: Int.self) { group in
            for queue in fleet.queues {
                group.addTask { (try? await queue.multi(["x", "y", "z"])) != nil ? 1 : 0 }
            }
            return await group.reduce(0, +)
        }
        #expect(successes == 1)
    }

    @Test func releaseNeverThrowsAndReportsPerKey() async throws {
        let fleet = try await Fleet.start(1)
        let multi = try await fleet.queues[0].multi(["p", "q"])
        try await fleet.client.send("DEL", fleet.prefix + "q")
        let results = await multi.release()
        #expect((try? results["p"]!.get()) != nil)
        #expect((try? results["q"]!.get()) == nil)
    }
}

@Suite struct SemaphoreTests {
    /// 50 tasks over 10 queues do a non-atomic read-modify-write under a 1-permit semaphore.
    @Test func mutualExclusionWithFiftyTasksOverTenQueues() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let counter = uniqueKey("counter")
        let seen = try await withThrowingTaskGroup(of: Int.self) { group in
            for task in 0..<50 {
                let queue = fleet.queues[task % 10]
                group.addTask {
                    try await queue.semaphore("mutex").withPermit { _ in
                        let value = try await queue.client.send("GET", counter).decode(Int?.self) ?? 0
                        try await Task.sleep(for: .milliseconds(10))
                        try await queue.client.send("SET", counter, value + 1)
                        return value
                    }
                }
            }
            var all: [Int] = []
            for try await value in group { all.append(value) }
            return all
        }
        #expect(try await fleet.client.send("GET", counter).decode(Int.self) == 50)
        #expect(seen.sorted() == Array(0..<50))
    }

    @Test func countingSemaphoreNeverHasMoreHoldersThanPermits() async throws {
        // A roomy keep-alive lease: a permit must not lapse while the full suite stalls its holder.
        let fleet = try await Fleet.start(6, lock: LockOptions(keepAliveLease: .seconds(10)))
        let holders = uniqueKey("holders")
        let peak = uniqueKey("peak")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<24 {
                let queue = fleet.queues[task % 6]
                group.addTask {
                    _ = try await queue.semaphore("pool", permits: 3).withPermit { _ in
                        let now = try await queue.client.send("INCR", holders).decode(Int.self)
                        try await queue.client.run(RedisScript(
                            "if tonumber(redis.call('GET', KEYS[1]) or 0) < tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end"),
                            keys: [peak], arguments: [now])
                        try await Task.sleep(for: .milliseconds(15))
                        try await queue.client.send("DECR", holders)
                    }
                }
            }
            try await group.waitForAll()
        }
        let maximum = try await fleet.client.send("GET", peak).decode(Int.self)
        #expect(maximum <= 3)
        #expect(maximum >= 2, "permits were actually shared")
    }

    @Test func deadHoldersPermitFreesAfterTheTimeout() async throws {
        let fleet = try await Fleet.start(2, lock: LockOptions(timeout: .seconds(3), keepAliveLease: .seconds(30)))
        // A holder took the only permit with an 8 s lease and "died": nobody extends it.
        let semaphore = try fleet.queues[0].semaphore("lonely")
        try await fleet.client.run(RedisScript("""
            local t = redis.call('TIME')
            redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + 8000, 'dead-holder')
            """), keys: [semaphore.redisKey])
        await #expect(throws: LockAcquisitionError.self) {
            _ = try await fleet.queues[1].semaphore("lonely").take(timeout: .milliseconds(100))
        }
        let permit = try await fleet.queues[1].semaphore("lonely").take(timeout: .seconds(30))
        try await permit.leave()
    }

    /// The holder is a real process, killed with `kill -9` while its watchdog extends the
    /// permit: the permit frees once its lease runs out.
    @Test func killedHolderProcessPermitFreesAfterTheTimeout() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .milliseconds(800), keepAliveLease: .seconds(30)), redis: redis)
        // A 10 s lease, kept by the helper's watchdog: a helper slowed down by a loaded
        // machine still holds it through the check below.
        let holder = try HelperProcess(["semaphore-hold", "\(server.port)", fleet.channel, fleet.prefix, "shared", "10000"])
        var lines = holder.lines.makeAsyncIterator()
        #expect(await lines.next() == "holding")
        await #expect(throws: LockAcquisitionError.self) {
            _ = try await fleet.queues[0].semaphore("shared").take(timeout: .milliseconds(900))
        }
        holder.signal(SIGKILL)
        let permit = try await fleet.queues[0].semaphore("shared").take(timeout: .seconds(30))
        try await permit.leave()
    }

    /// The return is sent, held back by the server (`CLIENT PAUSE WRITE`), and dropped with
    /// its connection (`CLIENT KILL`): it never ran, so the permit is still held, in Redis
    /// and here, and returning it again works.
    @Test func aReturnThatNeverRanLeavesThePermitHeldAndCanBeRetried() async throws {
        guard TestRedis.ownsServers else { return }  // pauses its server
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(60), keepAliveLease: .seconds(60)))
        let control = try await fleet.redis.connect()
        let semaphore = try fleet.queues[0].semaphore("retry")
        let permit = try await semaphore.take()
        let (key, token) = (semaphore.redisKey, permit.token)
        let clientID = try await fleet.client.send("CLIENT", "ID").decode(Int.self)
        try await control.send("CLIENT", "PAUSE", 60_000, "WRITE")
        let leaving = Task { try await permit.leave() }
        try await eventually("the return held back by the pause") { try await control.info("blocked_clients") == "1" }
        try await control.send("CLIENT", "KILL", "ID", clientID)
        await #expect(throws: RedisError.self) { try await leaving.value }
        try await control.send("CLIENT", "UNPAUSE")
        let held = permit.isHeld
        #expect(held)
        let score = try await control.send("ZSCORE", key, token)
        #expect(score != .null)
        try await semaphore.leave()  // the semaphore still knows its permit
        let after = try await control.send("ZSCORE", key, token)
        #expect(after == .null)
    }

    /// A take times out while the server holds it back; the server then runs it, taking a
    /// permit under a token nobody knows. It is given back at once, not after its lease.
    @Test func aTakeWhoseReplyIsLostGivesItsPermitBack() async throws {
        guard TestRedis.ownsServers else { return }  // pauses its server
        let redis = try await TestRedis.start()
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(60), keepAliveLease: .seconds(60)), redis: redis) {
            $0.commandTimeout = .milliseconds(500)
        }
        let other = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(60), keepAliveLease: .seconds(60)), redis: redis)
        let control = try await redis.connect()
        try await control.send("CLIENT", "PAUSE", 60_000, "WRITE")
        // It tries again through the timeouts (transient) until its own timeout, then throws the last one.
        await #expect { try await fleet.queues[0].semaphore("lost").take(timeout: .milliseconds(1500)) } throws: {
            ($0 as? RedisError)?.code == .timeout
        }
        try await control.send("CLIENT", "UNPAUSE")
        // Same prefix and channel as the first fleet: the same semaphore.
        let options = CallbackQueueOptions(channel: fleet.channel, lockPrefix: fleet.prefix,
                                           lock: LockOptions(timeout: .seconds(60), keepAliveLease: .seconds(60)))
        let queue = try CallbackQueue(client: other.client, pubsub: other.queues[0].pubsub, options: options)
        let permit = try await queue.semaphore("lost").take(timeout: .seconds(20))
        try await permit.leave()
    }

    @Test func leaveWakesAWaiterInAnotherQueue() async throws {
        let fleet = try await Fleet.start(2, lock: LockOptions(timeout: .seconds(30), keepAliveLease: .seconds(30)))
        let first = try fleet.queues[0].semaphore("baton")
        try await first.take()
        let waiter = Task { try await fleet.queues[1].semaphore("baton").take(timeout: .seconds(20)) }
        try await first.leave()
        let permit = try await waiter.value
        try await permit.leave()
        await #expect(throws: LockReleaseError.self) { try await first.leave() }
    }
}

@Suite struct PerCallOptionsTests {
    /// A 30 s lease per call on a queue whose own lease is 2 s: no second queue needed.
    @Test func everyEntryPointTakesItsOwnLease() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .seconds(2), retries: 0))
        let queue = fleet.queues[0]
        let long = LockOptions(timeout: .seconds(30), retries: 0, keepAliveLease: .seconds(30))
        let lock = try await queue.once("once", options: long)
        #expect(try await fleet.client.send("PTTL", lock.redisKey).decode(Int.self) > 20_000)
        try await lock.release()
        let ttl = try await queue.withLock("scoped", options: long) { lock in
            try await fleet.client.send("PTTL", lock.redisKey).decode(Int.self)
        }
        #expect(ttl > 20_000)
        let multi = try await queue.multi("m1", "m2", options: long)
        for lock in multi.locks {
            #expect(try await fleet.client.send("PTTL", lock.redisKey).decode(Int.self) > 20_000)
        }
        await multi.release()
        let semaphore = try queue.semaphore("sem", options: long)
        let permitTTL = try await semaphore.withPermit { _ in
            try await fleet.client.send("PTTL", semaphore.redisKey).decode(Int.self)
        }
        #expect(permitTTL > 20_000)
        let jobTTL = try await queue.fanout("job", options: long) {
            try await fleet.client.send("PTTL", fleet.prefix + "job").decode(Int.self)
        }
        #expect(jobTTL > 20_000)
        // The queue's own options are unchanged.
        let short = try await queue.once("once")
        #expect(try await fleet.client.send("PTTL", short.redisKey).decode(Int.self) <= 2_000)
        try await short.release()
    }

    @Test func invalidOptionsAreRejectedBeforeSending() async throws {
        let fleet = try await Fleet.start(1)
        let queue = fleet.queues[0]
        let bad = [LockOptions(timeout: .zero), LockOptions(retries: -1), LockOptions(jitter: 2)]
        let isInvalid: @Sendable (any Error) -> Bool = { ($0 as? RedisError)?.code == .invalidArgument }
        for options in bad {
            await #expect { _ = try await queue.once("a", options: options) } throws: { isInvalid($0) }
            await #expect { try await queue.withLock("a", options: options) { _ in } } throws: { isInvalid($0) }
            await #expect { _ = try await queue.multi("a", "b", options: options) } throws: { isInvalid($0) }
            #expect { _ = try queue.semaphore("a", options: options) } throws: { isInvalid($0) }
            await #expect { _ = try await queue.fanout("a", options: options) { 1 } } throws: { isInvalid($0) }
            await #expect { _ = try await queue.push("a", as: Int.self, options: options) { _ in } } throws: { isInvalid($0) }
        }
        let keys = try await fleet.client.send("SCAN", 0, "MATCH", fleet.prefix + "*", "COUNT", 1000).decode([RedisReply].self)
        #expect(try keys[1].decode([String].self).isEmpty, "nothing was written")
    }
}

@Suite struct NonEscapingBodyTests {
    /// `compute` is a non-escaping parameter: capturing it in the bodies compiles only
    /// because `withLock` and `withPermit` do not let their bodies escape.
    private func underLockAndPermit(_ fleet: Fleet, _ compute: @Sendable () async -> Int) async throws -> [Int] {
        let queue = fleet.queues[0]
        let locked = try await queue.withLock("scoped") { _ in await compute() }
        let permitted = try await queue.semaphore("scoped-permit").withPermit { _ in await compute() + 1 }
        return [locked, permitted]
    }

    @Test func bodiesNeedNotEscape() async throws {
        let fleet = try await Fleet.start(1)
        #expect(try await underLockAndPermit(fleet) { 41 } == [41, 42])
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "scoped") == .integer(0), "released after the body")
    }

    @Test func lostPermitStillCancelsANonEscapingBody() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .milliseconds(600)))
        let semaphore = try fleet.queues[0].semaphore("vanishing-permit")
        let bodyCancelled = Counter()
        await #expect(throws: LockLostError.self) {
            try await semaphore.withPermit { _ in
                try await fleet.client.send("DEL", semaphore.redisKey)
                do {
                    try await untilCancelled()
                } catch {
                    bodyCancelled.add()
                    throw error
                }
            }
        }
        #expect(bodyCancelled.value() == 1)
    }
}

@Suite struct MultiLockErrorTests {
    /// One slot group (the fleet's prefix has a hash tag): the script names every held key.
    @Test func everyHeldKeyOfAGroupIsReported() async throws {
        let fleet = try await Fleet.start(2, lock: LockOptions(retries: 0))
        let b = try await fleet.queues[0].once("b")
        let c = try await fleet.queues[0].once("c")
        let failure = await catching { try await fleet.queues[1].multi("a", "b", "c", "d") }
        // Read into locals: a failed #expect reflects its operands, and a Lock's Mutex does
        // not survive reflection.
        let error = try #require(failure.error as? MultiLockError)
        let keys = error.errors.keys.sorted()
        let allAcquisitionErrors = error.errors.values.allSatisfy { $0 is LockAcquisitionError }
        let lockCount = error.locks.count
        #expect(keys == ["b", "c"])
        #expect(allAcquisitionErrors)
        #expect(lockCount == 0, "one group: nothing was taken")
        try await b.release()
        try await c.release()
    }

    /// Groups in different slots: the locks taken before the failing group are reported
    /// (released), and the groups after it are checked for held keys too.
    @Test func locksTakenThenReleasedAndLaterGroupsAreReported() async throws {
        let redis = try await TestRedis.start()
        let prefix = "multi-\(UUID().uuidString.prefix(8)):"   // no hash tag: one group per tag below
        func queue() async throws -> CallbackQueue {
            try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(),
                              options: CallbackQueueOptions(channel: uniqueKey("channel"), lockPrefix: prefix, lock: LockOptions(retries: 1, delay: .milliseconds(10))))
        }
        let (holder, contender) = (try await queue(), try await queue())
        let held = try await holder.multi("{g2}b", "{g2}c", "{g3}d")
        let failure = await catching { try await contender.multi("{g1}a", "{g2}b", "{g2}c", "{g2}e", "{g3}d", "{g3}f") }
        let error = try #require(failure.error as? MultiLockError)
        let keys = error.errors.keys.sorted()
        #expect(keys == ["{g2}b", "{g2}c", "{g3}d"])
        let released = error.locks.map { ($0.key, $0.isLocked) }
        #expect(released.map(\.0) == ["{g1}a"])
        #expect(released.allSatisfy { !$0.1 }, "given back")
        #expect(try await contender.client.send("EXISTS", prefix + "{g1}a", prefix + "{g2}e", prefix + "{g3}f") == .integer(0))
        await held.release()
    }

    @Test func extendNamesEveryLostLock() async throws {
        let fleet = try await Fleet.start(1)
        let multi = try await fleet.queues[0].multi("x", "y", "z")
        try await fleet.client.send("DEL", fleet.prefix + "x", fleet.prefix + "z")
        let failure = await catching { try await multi.extend() }
        let error = try #require(failure.error as? MultiLockError)
        let keys = error.errors.keys.sorted()
        #expect(keys == ["x", "z"])
        #expect(try await fleet.client.send("EXISTS", fleet.prefix + "y") == .integer(0), "the rest released")
    }
}

extension Result {
    var error: Failure? { if case .failure(let error) = self { error } else { nil } }
}

@Suite struct SemaphoreTakeTests {
    /// Five local takers queue up in a known order on a held 1-permit semaphore; each
    /// gets the permit in that order.
    @Test func localTakersAreServedFirstComeFirstServed() async throws {
        // A roomy lease: a loaded machine stalls the test process longer than the default
        // second, and the order, not the keep-alive, is under test.
        let fleet = try await Fleet.start(1, lock: LockOptions(keepAliveLease: .seconds(30)))
        let queue = fleet.queues[0]
        let semaphore = try queue.semaphore("fifo")
        let first = try await semaphore.take()
        let order = Locked<[Int]>([])
        var takers: [Task<Void, any Error>] = []
        for index in 0..<5 {
            takers.append(Task {
                // A Semaphore instance each: the line is the queue's, by key.
                let permit = try await queue.semaphore("fifo").take(timeout: .seconds(30))
                order.withLock { $0.append(index) }
                try await permit.leave()
            })
            try await eventually("taker \(index) in line") { await queue.lineLength(semaphore.redisKey) == index + 1 }
        }
        try await first.leave()
        for taker in takers { try await taker.value }
        #expect(order.withLock { $0 } == [0, 1, 2, 3, 4])
        #expect(await queue.lineLength(semaphore.redisKey) == 0)
    }

    @Test func aCancelledOrTimedOutTakerLeavesTheLine() async throws {
        let fleet = try await Fleet.start(1, lock: LockOptions(keepAliveLease: .seconds(30)))
        let queue = fleet.queues[0]
        let semaphore = try queue.semaphore("leaving")
        let first = try await semaphore.take()
        let head = Task { try await semaphore.take(timeout: .seconds(30)) }
        try await eventually("the head in line") { await queue.lineLength(semaphore.redisKey) == 1 }
        let cancelled = Task { try await semaphore.take(timeout: .seconds(30)) }
        try await eventually("a second taker in line") { await queue.lineLength(semaphore.redisKey) == 2 }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { _ = try await cancelled.value }
        await #expect(throws: LockAcquisitionError.self) { _ = try await semaphore.take(timeout: .milliseconds(200)) }
        #expect(await queue.lineLength(semaphore.redisKey) == 1)
        try await first.leave()
        try await head.value.leave()
    }

    /// The waiting take's script is held back by the server (`CLIENT PAUSE WRITE`) and
    /// its connection killed (`CLIENT KILL`): a transient error. The take tries again and
    /// gets the permit once it is returned.
    @Test func takeKeepsTryingThroughATransientError() async throws {
        guard TestRedis.ownsServers else { return }  // pauses its server
        let long = LockOptions(timeout: .seconds(30), keepAliveLease: .seconds(30))
        let fleet = try await Fleet.start(2, lock: long)
        let control = try await fleet.redis.connect()
        let permit = try await fleet.queues[0].semaphore("transient").take()
        let waiterID = try await fleet.queues[1].client.send("CLIENT", "ID").decode(Int.self)
        let waiter = Task { try await fleet.queues[1].semaphore("transient").take(timeout: .seconds(30)) }
        try await control.send("CLIENT", "PAUSE", 60_000, "WRITE")
        try await eventually("the waiter's next try held back") { try await control.info("blocked_clients") == "1" }
        try await control.send("CLIENT", "KILL", "ID", waiterID)
        try await control.send("CLIENT", "UNPAUSE")
        try await permit.leave()
        let taken = try await waiter.value
        let held = taken.isHeld
        #expect(held)
        try await taken.leave()
    }
}
