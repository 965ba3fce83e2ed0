import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// WorkQueue and RedisJobStore under the least-privilege ACL rules the README documents
/// (`ACLRules.workQueue`, `ACLRules.jobStore`): a user with exactly that rule can do what
/// the module does, in-process and across processes, and a user of another prefix gets
/// `NOPERM`.
@Suite(.enabled(if: TestRedis.ownsServers, "creates ACL users: needs its own redis-server"), .timeLimit(.minutes(1)))
struct QueueKitACLTests {
    @Test func readmeAndSecurityArticleShowTheRules() throws {
        let documents = try documentsShowingACLRules()
        for rule in [ACLRules.workQueue(prefix: "worqr"), ACLRules.jobStore(prefix: "jobstore")] {
            let line = ACLRules.setUserLine(rule)
            for document in documents {
                #expect(document.text.contains(line), "\(document.name) should show: \(line)")
            }
        }
    }

    /// Enqueue (plain and unique), introspection, completions, a worker run in this
    /// process, dead letters, two worker processes, a dead worker process recovered by a
    /// peer, cancel and delete: all as a user with only the queue rule (the default prefix,
    /// as a service would have it), and nothing refused on the way (`ACL LOG`). The
    /// helpers' own bookkeeping keys (`acl-app:*`) come from a selector that reaches no
    /// queue key.
    @Test func workQueueUnderTheRule() async throws {
        let server = try await RedisServer.start()
        let user = try await ACLUser.create(on: server, "worker", rule: ACLRules.workQueue(),
                                            selectors: ["(~acl-app:* resetchannels -@all +rpush +hincrby +hlen)"])
        let admin = try await server.connect()
        var options = WorkQueueOptions(heartbeatInterval: .milliseconds(200), workerTimeout: .seconds(60),
                                       cleanupInterval: .milliseconds(500))
        options.pollInterval = .milliseconds(500)
        let queue = try WorkQueue(client: try await user.connect(), subscriber: try await user.subscriber(), options: options)
        let name = "mail"

        // Producer side.
        let completions = try await queue.completions(name)
        try await queue.enqueue(name, ["t0", "t1", "t2"])
        let unique = try await queue.enqueue(name, ["t0", "u"], unique: true)
        #expect(unique.enqueued == [0, 1])
        #expect(try await queue.enqueue(name, "u", unique: true).skipped == [0])
        #expect(try await queue.countQueue(name) == 5)
        #expect(try await queue.peekQueue(name) == Array("t0".utf8))
        #expect(try await queue.getTasks(name).count == 5)
        #expect(try await queue.getQueues() == [name])
        #expect(try await queue.cancelTasks(name, "u") == 1)

        // A worker in this process: everything queued is finished, the producer hears of it.
        let running = try await queue.startWorker(on: name, concurrency: 2) { _ in }
        #expect(try await queue.getWorkers() == [await running.worker.id])
        let finished = try await within(.seconds(10)) {
            var finished: [String] = []
            for try await case .completed(let done) in completions {
                finished.append(done.string)
                if finished.count == 4 { break }
            }
            return finished.sorted()
        }
        #expect(finished == ["t0", "t0", "t1", "t2"])
        try await running.shutdown(gracePeriod: .seconds(2))

        // Dead letters: a task that fails its only delivery, retried, then purged.
        var fragileOptions = options
        fragileOptions.maxDeliveries = 1
        let fragile = try WorkQueue(client: try await user.connect(), subscriber: try await user.subscriber(), options: fragileOptions)
        try await fragile.enqueue("fragile", "bad")
        let failing = try await fragile.startWorker(on: "fragile") { _ in throw CancellationError() }
        var letters: [DeadLetter] = []
        try await eventually("a dead letter") {
            letters = try await fragile.deadLetters("fragile")
            return !letters.isEmpty
        }
        try await failing.shutdown(gracePeriod: .seconds(1))
        #expect(try await fragile.retryDeadLetters("fragile", ids: letters.map(\.id)) == 1)
        #expect(try await fragile.countQueue("fragile") == 1)
        let again = try await fragile.startWorker(on: "fragile") { _ in throw CancellationError() }
        try await eventually("the retried task to fail again") { try await !fragile.deadLetters("fragile").isEmpty }
        try await again.shutdown(gracePeriod: .seconds(1))
        #expect(try await fragile.purgeDeadLetters("fragile") == 1)

        // A worker process holds two tasks and is killed; a peer returns them to the queue.
        try await queue.enqueue(name, ["h0", "h1"])
        let holder = try HelperProcess(["queue-hold", user.url, "worqr", name, "2", "5000"])
        var held = ""
        for await line in holder.lines { held = line; break }
        #expect(held.hasPrefix("held "), "\(held)")
        holder.signal(SIGKILL)
        _ = await holder.exitStatus()
        var requeued = 0
        try await eventually(timeout: .seconds(30), "the dead worker to be recovered") {
            let report = try await queue.recoverDeadWorkers()
            requeued += report.requeued
            return !report.workers.isEmpty
        }
        #expect(requeued == 2)
        #expect(try await queue.countQueue(name) == 2)

        // Two worker processes finish the recovered tasks and 20 more.
        let done = "acl-app:done", log = "acl-app:log"
        try await queue.enqueue(name, (0..<20).map { "p\($0)" })
        let workers = try (0..<2).map { _ in
            try HelperProcess(["queue-worker", user.url, "worqr", name, "2", log, done, "22", "10"])
        }
        for worker in workers {
            #expect(await worker.lines.collect().last == "done")
            #expect(await worker.exitStatus() == 0)
        }
        #expect(try await admin.send("HLEN", done).decode(Int.self) == 22)
        #expect(try await queue.countQueue(name) == 0)
        #expect(try await queue.getProcesses(name).isEmpty)

        try await queue.enqueue(name, "left")
        try await queue.deleteQueue(name)
        #expect(try await queue.getQueues().isEmpty)
        #expect(try await user.refusals() == [])
        await admin.close()
    }

    /// Issue 18's features under the same rule: delayed, prioritised and retried tasks
    /// (a handler that fails its first attempt), a rate limit and a concurrency limit,
    /// pause and resume, and a producer awaiting each outcome; nothing refused (`ACL LOG`).
    @Test func delayedPrioritisedAndRetriedTasksUnderTheRule() async throws {
        let server = try await RedisServer.start()
        let user = try await ACLUser.create(on: server, "features", rule: ACLRules.workQueue())
        var options = WorkQueueOptions(heartbeatInterval: .milliseconds(200), workerTimeout: .seconds(60),
                                       cleanupInterval: .milliseconds(500))
        options.pollInterval = .milliseconds(500)
        let queue = try WorkQueue(client: try await user.connect(), subscriber: try await user.subscriber(), options: options)
        let name = "features"
        try await queue.setLimits(name, QueueLimits(rate: RateLimit(100, per: .seconds(1)), concurrency: 4))
        try await queue.pause(name)
        let delayed = try await queue.enqueue(name, "delayed", options: TaskOptions(delay: .milliseconds(200)))
        let low = try await queue.enqueue(name, "low")
        let high = try await queue.enqueue(name, "high", options: TaskOptions(priority: 5))
        let retried = try await queue.enqueue(name, "retried",
                                              options: TaskOptions(retry: .fixed(attempts: 3, delay: .milliseconds(50), jitter: 0)))
        #expect(try await queue.queueState(name).isPaused)
        let order = Locked<[String]>([])
        let running = try await queue.startWorker(on: name, concurrency: 1) { process in
            order.withLock { $0.append("\(process.string) \(process.attempt)") }
            if process.string == "retried" && process.attempt == 1 { throw FirstAttemptFails() }
        }
        try await queue.resume(name)
        for id in [delayed.id, low.id, high.id, retried.id] {
            let info = try await queue.waitUntilFinished(name, id, timeout: .seconds(20))
            #expect(info.state == .completed, "\(info)")
        }
        let retriedInfo = try #require(try await queue.task(name, retried.id))
        #expect(retriedInfo.attempts == 2)
        #expect(retriedInfo.lastError != nil)
        let ran = order.withLock { $0 }
        // The first three waited while the queue was paused: the prioritised one ran first.
        #expect(ran.first == "high 1", "\(ran)")
        #expect(ran.filter { $0.hasPrefix("retried") } == ["retried 1", "retried 2"], "\(ran)")
        #expect(ran.contains("delayed 1") && ran.contains("low 1"), "\(ran)")
        try await running.shutdown(gracePeriod: .seconds(2))
        #expect(try await queue.queueState(name).completed == 4)
        try await queue.deleteQueue(name)
        #expect(try await user.refusals() == [])
    }

    struct FirstAttemptFails: Error {}

    /// Create, pull, fulfil, queue targets (with and without a responder), notification
    /// leases, update, retention removal, and two pulling processes on a sharded store: all
    /// as a user with only the job store rule for the default prefix.
    @Test func jobStoreUnderTheRule() async throws {
        let server = try await RedisServer.start()
        let user = try await ACLUser.create(on: server, "jobs", rule: ACLRules.jobStore())
        let responded = Locked<[String]>([])
        let store = try RedisJobStore<String>(client: try await user.connect(), retention: .milliseconds(300),
                                              respond: { target, _, _ in
                                                  responded.withLock { $0.append(target) }
                                                  return target.hasPrefix("ok")
                                              })
        let id = try await store.create(request: "resize")
        #expect(try await store.update(id, expectedVersion: 0, request: Array("resize 2x".utf8)) == 1)
        let lease = try #require(try await store.pullWork())
        #expect(lease.id == id)
        #expect(lease.fencingToken > 0)
        #expect(try await store.pullWork() == nil)
        try await store.fulfill(id, value: "done")
        try await lease.release()
        await #expect(throws: JobStoreError.self) { try await store.fulfill(id, value: "again") }
        #expect(try await store.state(id) == .fulfilled)

        try await store.queue(id, target: "ok-1")        // notified at once by the responder
        try await store.queue(id, target: "later")       // refused by it: stays queued
        try await store.queue(id, target: "dropped")
        try await store.unqueue(id, target: "dropped")
        let notification = try #require(try await store.pullNotification())
        #expect(notification.waiting.sorted() == ["later"])
        try await notification.done(removing: ["later"])
        #expect(responded.withLock { $0 }.contains("ok-1"))

        // Retention: the fulfilled job, with nobody waiting, goes.
        try await Task.sleep(for: .milliseconds(400))
        _ = try await store.removeExpired()
        #expect(try await store.state(id) == .unknown)

        // Across processes, on a sharded store (`{jobstore:<shard>}:…`).
        let sharded = try RedisJobStore<String>(client: try await user.connect(), prefix: "jobstore", shards: 16)
        var created: Set<String> = []
        for index in 0..<20 { created.insert(try await sharded.create(request: "job \(index)").rawValue) }
        let pullers = try (0..<2).map { _ in try HelperProcess(["jobs-pull", "redis-sharded", user.url, "jobstore", "2000"]) }
        var fulfilled: [String] = []
        for puller in pullers {
            let lines = await puller.lines.collect()
            #expect(await puller.exitStatus() == 0)
            let ids = lines.first { $0.hasPrefix("fulfilled") }?.dropFirst("fulfilled ".count) ?? ""
            fulfilled += ids.split(separator: ",").map(String.init)
        }
        #expect(fulfilled.count == 20)
        #expect(Set(fulfilled) == created)
        #expect(try await user.refusals() == [])
    }

    /// One user for two modules: the queue rule, and the job store rule as a selector.
    @Test func twoModulesOneUserWithASelector() async throws {
        let server = try await RedisServer.start()
        let user = try await ACLUser.create(on: server, "both", rule: ACLRules.workQueue(),
                                            selectors: ["(" + ACLRules.jobStore() + ")"])
        // The default prefix (the rule's); a roomy heartbeat: live workers never look dead.
        let queue = try WorkQueue(client: try await user.connect(), subscriber: try await user.subscriber(),
                                  options: WorkQueueOptions(workerTimeout: .seconds(60)))
        try await queue.enqueue("q", "task")
        let worker = try await queue.startWorker()
        _ = try await worker.startWork("q")
        let process = try #require(try await worker.dequeue("q"))
        try await worker.finish(process)
        try await worker.failWorker()
        let store = try RedisJobStore<String>(client: try await user.connect())
        let id = try await store.create(request: "r")
        let lease = try #require(try await store.pullWork())
        try await store.fulfill(id, value: "v")
        try await lease.release()
        #expect(try await store.state(id) == .fulfilled)
        #expect(try await user.refusals() == [])
    }

    /// A user with the rules for prefixes `qa` / `ja` gets `NOPERM` on `qb`'s queues and
    /// `jb`'s jobs, and cannot subscribe to `qb`'s channels.
    @Test func anotherPrefixIsRefused() async throws {
        let server = try await RedisServer.start()
        let userA = try await ACLUser.create(on: server, "tenant-a", rule: ACLRules.workQueue(prefix: "qa"),
                                             selectors: ["(" + ACLRules.jobStore(prefix: "ja") + ")"])
        let userB = try await ACLUser.create(on: server, "tenant-b", rule: ACLRules.workQueue(prefix: "qb"),
                                             selectors: ["(" + ACLRules.jobStore(prefix: "jb") + ")"])
        let queueB = try WorkQueue(client: try await userB.connect(), subscriber: try await userB.subscriber(),
                                   options: WorkQueueOptions(prefix: "qb", workerTimeout: .seconds(60)))
        try await queueB.enqueue("orders", "o1")
        let workerB = try await queueB.startWorker()
        let storeB = try RedisJobStore<String>(client: try await userB.connect(), prefix: "jb")
        let jobB = try await storeB.create(request: "b's job")

        // A's connections, pointed at B's prefixes.
        let queueAonB = try WorkQueue(client: try await userA.connect(), subscriber: try await userA.subscriber { $0.commandTimeout = .seconds(1) },
                                      options: WorkQueueOptions(prefix: "qb", workerTimeout: .seconds(60)))
        await #expect { try await queueAonB.enqueue("orders", "forged") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.countQueue("orders") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.getTasks("orders") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.cancelTasks("orders", "o1") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.deleteQueue("orders") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.getWorkers() } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.failWorker(await workerB.id) } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.recoverDeadWorkers() } throws: { $0.isNOPERM }
        await #expect { _ = try await queueAonB.startWorker() } throws: { $0.isNOPERM }
        // Nor publish on B's channels (a forged `work` or `done` message).
        await #expect { try await queueAonB.client.send("PUBLISH", "qb:orders:events", "work:1") } throws: { $0.isNOPERM }
        await #expect { try await queueAonB.client.send("PUBLISH", "qb:orders:done", "x") } throws: { $0.isNOPERM }
        // Subscribing to B's channels is refused by the server.
        let admin = try await server.connect()
        for channel in ["qb:orders:events", "qb:orders:done"] {
            let dryRun = try await admin.send("ACL", "DRYRUN", userA.name, "SUBSCRIBE", channel).decode(String.self)
            #expect(dryRun.contains("no permissions to access the '\(channel)' channel"), "\(dryRun)")
        }
        #expect(try await admin.send("ACL", "DRYRUN", userA.name, "SUBSCRIBE", "qa:orders:events") == .status("OK"))
        await #expect { _ = try await queueAonB.completions("orders") } throws: { $0.isRefusedSubscription }
        // SCAN is not filtered by ACLs: key names of other prefixes can be listed (README).
        #expect(try await queueAonB.getQueues() == ["orders"])

        let storeAonB = try RedisJobStore<String>(client: try await userA.connect(), prefix: "jb")
        await #expect { _ = try await storeAonB.create(request: "forged") } throws: { $0.isNOPERM }
        await #expect { _ = try await storeAonB.pullWork() } throws: { $0.isNOPERM }
        await #expect { try await storeAonB.fulfill(jobB, value: "forged") } throws: { $0.isNOPERM }
        await #expect { _ = try await storeAonB.state(jobB) } throws: { $0.isNOPERM }
        await #expect { _ = try await storeAonB.pullNotification() } throws: { $0.isNOPERM }

        // A on its own prefixes, and B's data untouched.
        let queueA = try WorkQueue(client: try await userA.connect(), subscriber: try await userA.subscriber(),
                                   options: WorkQueueOptions(prefix: "qa", workerTimeout: .seconds(60)))
        try await queueA.enqueue("orders", "a1")
        let storeA = try RedisJobStore<String>(client: try await userA.connect(), prefix: "ja")
        _ = try await storeA.create(request: "a's job")
        #expect(try await queueB.getTasks("orders") == [Array("o1".utf8)])
        #expect(try await storeB.state(jobB) == .pending(version: 0))
        try await workerB.failWorker()
        let refusals = try await userA.refusals()
        #expect(refusals.contains("channel qb:orders:done (toplevel)"), "\(refusals)")
        #expect(refusals.contains("key {qb:orders}:queue (toplevel)"), "\(refusals)")
        #expect(refusals.contains("key {jb}:pending (toplevel)"), "\(refusals)")
        #expect(try await userB.refusals() == [])
        await admin.close()
    }
}
