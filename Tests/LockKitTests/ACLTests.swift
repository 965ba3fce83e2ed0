import Foundation
import Hiredis
import LockKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// LockKit under the least-privilege ACL rule the README documents (`ACLRules.lockKit`):
/// a user with exactly that rule can do everything LockKit does, in-process and across
/// processes, and a user of another prefix and channel gets `NOPERM`.
@Suite(.enabled(if: TestRedis.ownsServers, "creates ACL users: needs its own redis-server"), .timeLimit(.minutes(1)))
struct LockKitACLTests {
    @Test func readmeAndSecurityArticleShowTheRule() throws {
        let line = ACLRules.setUserLine(ACLRules.lockKit(prefix: "dlock:", channel: "<channel>"))
        for document in try documentsShowingACLRules() {
            #expect(document.text.contains(line), "\(document.name) should show: \(line)")
        }
    }

    /// Locks, fencing, scoped locks, multi-locks (over two slots and one hash tag),
    /// semaphores with a waiter woken by pub/sub, push and fanout: all as a user with only
    /// the documented rule for the default prefix, and nothing refused on the way (`ACL LOG`
    /// also shows denials a module swallows or retries, such as a pub/sub one).
    @Test func everythingWorksUnderTheRule() async throws {
        let server = try await RedisServer.start()
        let channel = "locks-" + UUID().uuidString.prefix(8)
        let user = try await ACLUser.create(on: server, "locks", rule: ACLRules.lockKit(channel: channel))
        func queue() async throws -> CallbackQueue {
            try CallbackQueue(client: try await user.connect(), pubsub: try await user.subscriber(), options: CallbackQueueOptions(
                channel: channel, lock: LockOptions(timeout: .seconds(5), retries: 0, keepAliveLease: .seconds(5))))
        }
        let (first, second) = (try await queue(), try await queue())

        // once, fencing, extend, release
        let lock = try await first.once("resource")
        #expect(lock.redisKey == "dlock:resource")
        await #expect(throws: LockAcquisitionError.self) { _ = try await second.once("resource") }
        try await lock.extend(by: .seconds(10))
        try await lock.release()
        let next = try await second.once("resource")
        #expect(next.fencingToken > lock.fencingToken)
        try await next.release()

        // withLock
        let fence = try await first.withLock("scoped") { $0.fencingToken }
        #expect(fence == 1)

        // multi: keys in several slots, and a hash tag of the caller's own
        let multi = try await first.multi(["a", "b", "{tenant:7}:x", "{tenant:7}:y"])
        await #expect(throws: MultiLockError.self) { _ = try await second.multi(["b", "c"]) }
        try await multi.extend(by: .seconds(10))
        #expect(await multi.release().values.allSatisfy { (try? $0.get()) != nil })

        // semaphore: the permit's keep-alive extends it; a waiter is woken when it is left
        let permit = try await first.semaphore("pool").take()
        let waiter = Task { try await second.semaphore("pool").take(timeout: .seconds(10)) }
        try await Task.sleep(for: .milliseconds(200))   // the waiter waits (keep-alive is tested elsewhere)
        #expect(permit.isHeld)
        try await permit.leave()
        let handedOver = try await waiter.value
        try await handedOver.leave()
        #expect(try await second.semaphore("pool").withPermit { _ in 42 } == 42)

        // fanout: one run, every caller gets its value
        let runs = Locked(0)
        let values = try await withThrowingTaskGroup(of: String.self) { group in
            for index in 0..<6 {
                let queue = index.isMultiple(of: 2) ? first : second
                group.addTask {
                    try await queue.fanout("report", timeout: .seconds(10)) {
                        runs.withLock { $0 += 1 }
                        try await Task.sleep(for: .milliseconds(200))
                        return "value"
                    }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(values == Array(repeating: "value", count: 6))
        #expect(runs.withLock { $0 } == 1)

        // push: the leader completes, a second caller gets the result over pub/sub
        let received = Locked<Int?>(nil)
        let completion = try await first.push("job", as: Int.self) { _ in }
        await #expect(throws: LockAcquisitionError.self) {
            _ = try await second.push("job", as: Int.self) { result in received.withLock { $0 = (try? result.get()) ?? -1 } }
        }
        try await completion.complete(7)
        try await eventually("the pushed result to arrive") { received.withLock { $0 } != nil }
        #expect(received.withLock { $0 } == 7)
        #expect(try await user.refusals() == [])
    }

    /// Helper processes authenticated as the user: read-modify-write under a lock from two
    /// processes, and a fanout shared by two processes. Their own data (`acl-app:*`) comes
    /// from a selector that reaches no LockKit key, so LockKit still has only its rule.
    @Test func crossProcessUnderTheRule() async throws {
        let server = try await RedisServer.start()
        let channel = "locks-" + UUID().uuidString.prefix(8)
        let user = try await ACLUser.create(on: server, "locks", rule: ACLRules.lockKit(channel: channel),
                                            selectors: ["(~acl-app:* resetchannels -@all +get +set +rpush +incr)"])
        let admin = try await server.connect()
        let counter = "acl-app:counter"
        let cyclers = try (0..<2).map { _ in try HelperProcess(["lock-cycles", user.url, counter, "25", channel]) }
        let runs = "acl-app:runs"
        let fanouts = try (0..<2).map { _ in try HelperProcess(["fanout", user.url, channel, "shared-job", runs, "3", "300", "30000", "6"]) }
        for helper in cyclers {
            #expect(await helper.lines.collect().last == "done")
            #expect(await helper.exitStatus() == 0)
        }
        #expect(try await admin.send("GET", counter).decode(Int.self) == 50)
        let fences = try await admin.send("LRANGE", counter + ":fences", 0, -1).decode([Int].self)
        #expect(Set(fences).count == 50, "every cycle had its own fencing token")
        for helper in fanouts {
            #expect(await helper.lines.collect().last == "results value-1 3")
            #expect(await helper.exitStatus() == 0)
        }
        #expect(try await admin.send("GET", runs).decode(Int.self) == 1)
        #expect(try await user.refusals() == [])
        await admin.close()
    }

    /// A user with the rule for prefix `a:` and its channel gets `NOPERM` on prefix `b:`'s
    /// locks, multi-locks, semaphores and jobs, and on `b`'s channel.
    @Test func anotherPrefixIsRefused() async throws {
        let server = try await RedisServer.start()
        let userA = try await ACLUser.create(on: server, "tenant-a", rule: ACLRules.lockKit(prefix: "a:", channel: "chan-a"))
        let userB = try await ACLUser.create(on: server, "tenant-b", rule: ACLRules.lockKit(prefix: "b:", channel: "chan-b"))
        let b = try CallbackQueue(client: try await userB.connect(), pubsub: try await userB.subscriber(),
                                  options: CallbackQueueOptions(channel: "chan-b", lockPrefix: "b:",
                                                                lock: LockOptions(timeout: .seconds(120))))
        let held = try await b.once("x")   // 120 s: held through the whole test on a loaded machine

        // A's connections, pointed at B's prefix (A's channel, so only the keys are foreign).
        let aOnB = try CallbackQueue(client: try await userA.connect(), pubsub: try await userA.subscriber(),
                                     options: CallbackQueueOptions(channel: "chan-a", lockPrefix: "b:",
                                                                   lock: LockOptions(retries: 0)))
        await #expect { _ = try await aOnB.once("x") } throws: { $0.isNOPERM }
        await #expect { _ = try await aOnB.once("fresh") } throws: { $0.isNOPERM }
        await #expect { _ = try await aOnB.multi(["y", "z"]) } throws: { $0.isNOPERM }
        await #expect { _ = try await aOnB.semaphore("pool").take(timeout: .seconds(1)) } throws: { $0.isNOPERM }
        await #expect { let _: Int = try await aOnB.fanout("job", timeout: .seconds(2)) { 1 } } throws: { $0.isNOPERM }
        await #expect { try await aOnB.client.send("GET", "b:x") } throws: { $0.isNOPERM }
        // Nor can A publish on B's channel (a forged outcome or wake-up).
        await #expect { try await aOnB.client.send("PUBLISH", "chan-b", "forged") } throws: { $0.isNOPERM }
        // A itself is fine on its own prefix.
        let own = try CallbackQueue(client: try await userA.connect(), pubsub: try await userA.subscriber(),
                                    options: CallbackQueueOptions(channel: "chan-a", lockPrefix: "a:"))
        try await own.once("x").release()

        // Subscribing to B's channel: the server refuses it (ACL DRYRUN names the channel),
        // and a subscriber of A never gets the subscription.
        let admin = try await server.connect()
        let dryRun = try await admin.send("ACL", "DRYRUN", userA.name, "SUBSCRIBE", "chan-b").decode(String.self)
        #expect(dryRun.contains("no permissions to access the 'chan-b' channel"), "\(dryRun)")
        #expect(try await admin.send("ACL", "DRYRUN", userA.name, "SUBSCRIBE", "chan-a") == .status("OK"))
        // (hiredis drops a subscriber connection on the error reply: the subscription is
        // never confirmed, and `subscribe` times out.)
        let subscriber = try await userA.subscriber { $0.commandTimeout = .seconds(1) }
        await #expect { _ = try await subscriber.subscribe(["chan-b"]) } throws: { $0.isRefusedSubscription }
        let aOnBChannel = try CallbackQueue(client: try await userA.connect(), pubsub: try await userA.subscriber { $0.commandTimeout = .seconds(1) },
                                            options: CallbackQueueOptions(channel: "chan-b", lockPrefix: "a:"))
        await #expect { let _: Int = try await aOnBChannel.fanout("job", timeout: .seconds(2)) { 1 } } throws: { $0.isRefusedSubscription }
        let refusals = try await userA.refusals()
        #expect(refusals.contains("channel chan-b (toplevel)"), "\(refusals)")
        #expect(refusals.contains("key b:x (toplevel)"), "\(refusals)")

        #expect(held.isLocked)
        try await held.release()
        await admin.close()
    }
}
