import Foundation
import Hiredis
@testable import LockKit
import RedisTestSupport
import Synchronization
import Testing

/// What each caller's onComplete received.
final class Outcomes: Sendable {
    private let all = Mutex<[Result<String, RemoteJobError>]>([])
    func add(_ result: Result<String, any Error>) {
        all.withLock { $0.append(result.mapError { RemoteJobError(describing: $0) }) }
    }
    var values: [Result<String, RemoteJobError>] { all.withLock { $0 } }
}

@Suite struct PushTests {
    /// Every caller pushes; the winner runs the job (once) and completes it.
    private func pushAll(_ fleet: Fleet, ids: [String], timeout: Duration = .seconds(5),
                         job: @escaping @Sendable (Completion<String>) async -> Void) async -> (Outcomes, Counter, Int) {
        let outcomes = Outcomes()
        let runs = Counter()
        let done = AsyncStream<Void>.makeStream()
        let settled = Latch(count: ids.count)   // every other caller was refused (it waits)
        let refused = await withTaskGroup(of: Int.self) { group in
            for (index, id) in ids.enumerated() {
                let queue = fleet.queues[index % fleet.queues.count]
                group.addTask {
                    do {
                        let completion = try await queue.push(id, as: String.self, timeout: timeout) { result in
                            outcomes.add(result)
                            done.continuation.yield()
                        }
                        runs.add(id)
                        settled.arrive()
                        await settled.wait()
                        await job(completion)
                        return 0
                    } catch is LockAcquisitionError {
                        settled.arrive()
                        return 1
                    } catch {
                        Issue.record("unexpected \(error)")
                        return 0
                    }
                }
            }
            return await group.reduce(0, +)
        }
        var delivered = 0
        for await _ in done.stream {
            delivered += 1
            if delivered == ids.count { break }
        }
        return (outcomes, runs, refused)
    }

    @Test func tenCallersOneJobTenCallbacks() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let (outcomes, runs, refused) = await pushAll(fleet, ids: Array(repeating: "same", count: 10)) { completion in
            try? await completion.complete("the value")
        }
        #expect(runs.total == 1)
        #expect(refused == 9)
        #expect(outcomes.values.count == 10)
        #expect(outcomes.values.allSatisfy { (try? $0.get()) == "the value" })
    }

    @Test func threeIdsThreeJobs() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let ids = (0..<10).map { "id-\($0 % 3)" }
        let (outcomes, runs, refused) = await pushAll(fleet, ids: ids) { completion in
            try? await completion.complete(completion.id)
        }
        #expect(runs.total == 3)
        #expect(refused == 7)
        let values = outcomes.values.compactMap { try? $0.get() }
        #expect(values.filter { $0 == "id-0" }.count == 4)
        #expect(values.filter { $0 == "id-1" }.count == 3)
        #expect(values.filter { $0 == "id-2" }.count == 3)
    }

    @Test func jobThatNeverCompletesTimesEveryoneOut() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let ids = (0..<10).map { "stuck-\($0 % 3)" }
        let (outcomes, runs, _) = await pushAll(fleet, ids: ids, timeout: .milliseconds(700)) { _ in }
        #expect(runs.total == 3)
        #expect(outcomes.values.count == 10)
        #expect(outcomes.values.allSatisfy { if case .failure(let e) = $0 { return e.typeName == "FanoutTimeoutError" }; return false })
    }

    @Test func failingJobGivesEveryoneTheSameError() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let (outcomes, _, _) = await pushAll(fleet, ids: Array(repeating: "failing", count: 10)) { completion in
            try? await completion.fail(JobFailed(detail: "disk full"))
        }
        #expect(outcomes.values.count == 10)
        for outcome in outcomes.values {
            guard case .failure(let error) = outcome else { Issue.record("expected a failure"); continue }
            #expect(error.typeName == "JobFailed")
            #expect(error.message == "job failed: disk full")
        }
    }
}

@Suite struct FanoutTests {
    private func fanoutAll(_ fleet: Fleet, ids: [String], timeout: Duration = .seconds(5),
                           job: @escaping @Sendable (String) async throws -> String) async -> ([String: [Result<String, RemoteJobError>]], Counter) {
        let runs = Counter()
        let results = await withTaskGroup(of: (String, Result<String, RemoteJobError>).self) { group in
            for (index, id) in ids.enumerated() {
                let queue = fleet.queues[index % fleet.queues.count]
                group.addTask {
                    let result = await catching {
                        try await queue.fanout(id, timeout: timeout) {
                            runs.add(id)
                            // A job returns once every caller of its id waits for it (a caller
                            // that came later would read the stored outcome, which lives 3 s:
                            // too short on a machine that stalls for seconds).
                            await everyCallerWaits(fleet, id: id, callers: ids.filter { $0 == id }.count)
                            return try await job(id)
                        }
                    }
                    return (id, result.mapError { RemoteJobError(describing: $0) })
                }
            }
            return await group.reduce(into: [String: [Result<String, RemoteJobError>]]()) { $0[$1.0, default: []].append($1.1) }
        }
        return (results, runs)
    }

    /// Waits (up to 20 s, then goes on) until `callers` callers of `id` are registered: in
    /// the leader's process as its local waiters, elsewhere as waiters for another owner.
    private func everyCallerWaits(_ fleet: Fleet, id: String, callers: Int) async {
        try? await eventually(timeout: .seconds(20), "every caller of \(id) to wait") {
            var registered = 0
            for queue in fleet.queues {
                guard let entry = await queue.entries[id] else { continue }
                guard entry.ledHere || entry.heldElsewhere else { return false }
                registered += entry.waiters.count
            }
            return registered == callers
        }
    }

    @Test func tenCallersOneRun() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let (results, runs) = await fanoutAll(fleet, ids: Array(repeating: "same", count: 10)) { _ in
            return "done"
        }
        #expect(runs.total == 1)
        #expect(results["same"]?.count == 10)
        #expect(results["same"]!.allSatisfy { (try? $0.get()) == "done" })
    }

    @Test func threeIdsThreeRunsWithTheirArguments() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let ids = (0..<10).map { "arg-\($0 % 3)" }
        let (results, runs) = await fanoutAll(fleet, ids: ids) { id in
            return "result for \(id)"
        }
        #expect(runs.total == 3)
        #expect(results["arg-0"]?.count == 4 && results["arg-1"]?.count == 3 && results["arg-2"]?.count == 3)
        for (id, list) in results { #expect(list.allSatisfy { (try? $0.get()) == "result for \(id)" }) }
    }

    @Test func jobThatNeverCompletesTimesEveryoneOut() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        // Subscribed before, and 3 s: every caller comes while its id's leader still runs
        // (a caller after the leader's timeout would find the job free and run it again).
        for queue in fleet.queues { try await queue.ensureListening() }
        let ids = (0..<10).map { "slow-\($0 % 3)" }
        let (results, runs) = await fanoutAll(fleet, ids: ids, timeout: .seconds(3)) { _ in
            try await untilCancelled()
            return "never"
        }
        #expect(runs.total == 3)
        let all = results.values.flatMap { $0 }
        #expect(all.count == 10)
        #expect(all.allSatisfy { if case .failure(let e) = $0 { return e.typeName == "FanoutTimeoutError" }; return false })
    }

    @Test func failingJobGivesEveryoneTheSameError() async throws {
        let fleet = try await Fleet.start(10, lock: .steady)
        let (results, runs) = await fanoutAll(fleet, ids: Array(repeating: "broken", count: 10)) { _ in
            throw JobFailed(detail: "bad input")
        }
        #expect(runs.total == 1)
        for result in results["broken"]! {
            guard case .failure(let error) = result else { Issue.record("expected a failure"); continue }
            #expect(error.typeName == "JobFailed")
            #expect(error.message == "job failed: bad input")
        }
    }

    @Test func timesOutEvenIfTheLockIsNeverAcquired() async throws {
        let fleet = try await Fleet.start(1)
        // Someone else holds the job's lock and never publishes.
        try await fleet.client.send("SET", fleet.prefix + "orphan", "another-process", "PX", 60_000)
        let runs = Counter()
        await #expect(throws: FanoutTimeoutError.self) {
            _ = try await fleet.queues[0].fanout("orphan", timeout: .milliseconds(400)) { runs.add(); return 1 }
        }
        #expect(runs.total == 0)
    }

    @Test func lateCallerGetsTheStoredOutcome() async throws {
        // A stall between the job and its publish must not lose the lease (the outcome
        // would then, rightly, not be stored).
        let fleet = try await Fleet.start(2, lock: .steady)
        let runs = Counter()
        let started = ContinuousClock.now
        let first = try await fleet.queues[0].fanout("stored") { runs.add(); return 42 }
        // Subscribed after the publish: reads the outcome kept briefly under a key (3 s).
        let second = try await fleet.queues[1].fanout("stored") { runs.add(); return 43 }
        #expect(first == 42)
        // From before the publish to after the late call: an upper bound of the outcome's age.
        if ContinuousClock.now - started < .milliseconds(2500) {
            #expect(second == 42)
            #expect(runs.total == 1)
        } else {
            // The machine stalled past the outcome's lifetime: running the job again is
            // then right (coalescing is for callers in flight together, not a cache).
            #expect(second == 42 || (second == 43 && runs.total == 2))
        }
    }

    @Test(.enabled(if: TestRedis.ownsServers)) func outcomeIsPublishedOnceTheServerIsBackNotRunAgain() async throws {
        // The job's server dies (AOF keeps the job's lock) and comes back 4 s later,
        // after the leader's publish timed out: the leader retries within its lease, so the other process's caller gets
        // the value instead of waiting out a 30 s lease and running the job again.
        // appendfsync no: Redis writes the AOF before it replies, so the lock survives kill -9.
        // Timeouts shorter than the 4 s outage (the publish must fail and be retried), long
        // enough for the setup on a loaded machine.
        let server = try await RedisServer.start(["--appendonly", "yes", "--appendfsync", "no"])
        let fleet = try await Fleet.start(2, lock: LockOptions(timeout: .seconds(30), keepAliveLease: .seconds(30)), redis: TestRedis(server)) {
            $0.commandTimeout = .milliseconds(1500)
            $0.connectTimeout = .milliseconds(1500)
            $0.reconnect = .exponentialBackoff(initialDelay: .milliseconds(20), maximumDelay: .milliseconds(100))
        }
        let (results, runs) = await fanoutAll(fleet, ids: ["restarting", "restarting"], timeout: .seconds(15)) { id in
            // The other caller found the job held (a failed claim would be its outcome).
            try await eventually("the other caller waits for this one") {
                for queue in fleet.queues where await queue.waitsForAnotherOwner(id) { return true }
                return false
            }
            await server.kill()
            Task { try await Task.sleep(for: .seconds(4)); try await server.restart() }
            return "survived"
        }
        #expect(runs.total == 1)
        #expect(results["restarting"]?.count == 2)
        #expect(results["restarting"]!.allSatisfy { (try? $0.get()) == "survived" })
    }

    @Test func waiterTakesOverWhenTheLeadersLockExpires() async throws {
        // The leader's lock is taken over by hand: as if the leader died (no watchdog
        // extends it) and its lease ran out.
        let fleet = try await Fleet.start(1, lock: LockOptions(timeout: .milliseconds(600)))
        try await fleet.client.send("SET", fleet.prefix + "orphaned", "dead-leader", "PX", 300)
        let value = try await fleet.queues[0].fanout("orphaned", timeout: .seconds(10)) { "taken over" }
        #expect(value == "taken over")
    }
}

@Suite struct CrossProcessTests {
    /// 4 processes × 250 lock cycles of a non-atomic read-modify-write on one counter.
    @Test func fourProcessesNeverOverlap() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        let key = uniqueKey("counter")
        let channel = uniqueKey("channel")
        let helpers = try (0..<4).map { _ in
            try HelperProcess(["lock-cycles", "\(server.port)", key, "250", channel])
        }
        for helper in helpers {
            #expect(await helper.lines.collect().last == "done")
            #expect(await helper.exitStatus() == 0)
        }
        let connection = try await redis.connect()
        #expect(try await connection.send("GET", key).decode(Int.self) == 1000)
        let fences = try await connection.send("LRANGE", key + ":fences", 0, -1).decode([Int].self)
        #expect(fences.count == 1000)
        #expect(zip(fences, fences.dropFirst()).allSatisfy { $0 < $1 }, "fencing tokens strictly increase")
    }

    /// 3 processes × 5 concurrent callers of one id: the job runs once, all 15 get its value.
    @Test func fanoutAcrossThreeProcessesRunsTheJobOnce() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        let channel = uniqueKey("channel")
        let id = uniqueKey("job")
        let runs = uniqueKey("runs")
        let helpers = try (0..<3).map { _ in
            // The job starts once all 15 callers came (30 s lease: no takeover by a stall).
            try HelperProcess(["fanout", "\(server.port)", channel, id, runs, "5", "3000", "30000", "15"])
        }
        for helper in helpers {
            let lines = await helper.lines.collect()
            #expect(lines.last == "results value-1 5", "\(lines)")
        }
        let connection = try await redis.connect()
        #expect(try await connection.send("GET", runs).decode(Int.self) == 1)
    }

    /// Two processes fan out the same job; the one running it is killed with `kill -9`.
    @Test(.enabled(if: TestRedis.ownsServers)) func leaderKilledMidJobAWaiterTakesOver() async throws {
        let server = try await RedisServer.start()
        let channel = uniqueKey("channel")
        let id = uniqueKey("job")
        let runs = uniqueKey("runs")
        let a = try HelperProcess(["fanout", "\(server.port)", channel, id, runs, "5", "3000", "2000", "10"])
        let b = try HelperProcess(["fanout", "\(server.port)", channel, id, runs, "5", "3000", "2000", "10"])
        let events = AsyncStream<(String, String)>.makeStream()
        func collect(_ helper: HelperProcess, _ name: String) -> Task<[String], Never> {
            Task {
                var all: [String] = []
                for await line in helper.lines {
                    all.append(line)
                    events.continuation.yield((name, line))
                }
                return all
            }
        }
        let linesA = collect(a, "a")
        let linesB = collect(b, "b")
        // Whoever runs the job first is the leader: kill it mid-job.
        var leaderName = ""
        for await (name, line) in events.stream where line.hasPrefix("running") {
            leaderName = name
            break
        }
        let (leader, survivor, survivorLines) = leaderName == "a" ? (a, b, linesB) : (b, a, linesA)
        leader.signal(SIGKILL)
        let lines = await survivorLines.value
        #expect(lines.contains("running 2"), "the survivor took over: \(lines)")
        #expect(lines.last == "results value-2 5", "all five callers got the takeover's value: \(lines)")
        #expect(await survivor.exitStatus() == 0)
    }
}

@Suite struct ClaimErrorTests {
    /// The server holds writes back (`CLIENT PAUSE WRITE`), so the claim times out after
    /// 300 ms: every caller of the id gets that error at once, not its 20 s timeout.
    @Test func aRedisErrorWhileClaimingReachesEveryFanoutCaller() async throws {
        guard TestRedis.ownsServers else { return }  // pauses its server
        let redis = try await TestRedis.start()
        let fleet = try await Fleet.start(1, redis: redis) { $0.commandTimeout = .milliseconds(300) }
        let control = try await redis.connect()
        try await fleet.queues[0].ensureListening()
        try await control.send("CLIENT", "PAUSE", 60_000, "WRITE")
        let runs = Counter()
        let results = try await within(.seconds(8)) {
            await withTaskGroup(of: Result<Int, any Error>.self) { group in
                for _ in 0..<5 {
                    group.addTask { await catching { try await fleet.queues[0].fanout("paused", timeout: .seconds(20)) { runs.add(); return 1 } } }
                }
                return await group.reduce(into: []) { $0.append($1) }
            }
        }
        try await control.send("CLIENT", "UNPAUSE")
        let all = try #require(results, "every caller got its outcome well before its 20 s timeout")
        #expect(all.count == 5)
        #expect(all.allSatisfy { ($0.error as? RedisError)?.code == .timeout }, "\(all)")
        #expect(runs.total == 0)
    }

    @Test func aRedisErrorWhileClaimingReachesEveryPushCallback() async throws {
        guard TestRedis.ownsServers else { return }  // pauses its server
        let redis = try await TestRedis.start()
        // 2 s: the second caller must join before the first one's claim times out.
        let fleet = try await Fleet.start(1, redis: redis) { $0.commandTimeout = .seconds(2) }
        let control = try await redis.connect()
        try await fleet.queues[0].ensureListening()
        try await control.send("CLIENT", "PAUSE", 60_000, "WRITE")
        let outcomes = Outcomes()
        let delivered = AsyncStream<Void>.makeStream()
        let record: @Sendable (Result<String, any Error>) -> Void = { outcomes.add($0); delivered.continuation.yield() }
        let first = Task { try await fleet.queues[0].push("paused", as: String.self, timeout: .seconds(20), onComplete: record) }
        // The second caller joins while the first one's claim is held back: "already running".
        try await eventually("the first caller registered") { await fleet.queues[0].hasWaiters("paused") }
        await #expect(throws: LockAcquisitionError.self) {
            _ = try await fleet.queues[0].push("paused", as: String.self, timeout: .seconds(20), onComplete: record)
        }
        await #expect { _ = try await first.value } throws: { ($0 as? RedisError)?.code == .timeout }
        let both = try await within(.seconds(8)) {
            var count = 0
            for await _ in delivered.stream { count += 1; if count == 2 { break } }
            return count
        }
        try await control.send("CLIENT", "UNPAUSE")
        #expect(both == 2, "both callbacks fired well before their 20 s timeout")
        #expect(outcomes.values.allSatisfy { if case .failure(let e) = $0 { return e.typeName == "RedisError" }; return false })
    }
}

/// With the default options, a holder killed with `kill -9` is replaced within about the
/// 1 s keep-alive lease (it took the 10 s lock timeout before).
@Suite struct TakeoverTests {
    @Test func killedFanoutLeaderIsTakenOverWithinSecondsByDefault() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        let fleet = try await Fleet.start(1, redis: redis)   // default options
        let id = uniqueKey("job")
        let runs = uniqueKey("runs")
        let leader = try HelperProcess(["fanout-default", "\(server.port)", fleet.channel, fleet.prefix, id, runs])
        var lines = leader.lines.makeAsyncIterator()
        #expect(await lines.next() == "running 1")
        let tookOver = Locked<ContinuousClock.Instant?>(nil)
        let waiter = Task {
            try await fleet.queues[0].fanout(id) { () async throws -> String in
                tookOver.withLock { $0 = .now }
                return "taken over"
            }
        }
        try await eventually("the test process waits for the helper's job") { await fleet.queues[0].waitsForAnotherOwner(id) }
        let killed = ContinuousClock.now
        leader.signal(SIGKILL)
        #expect(try await waiter.value == "taken over")
        let takeover = try #require(tookOver.withLock { $0 }) - killed
        // About 1-1.4 s: the lease's rest plus one re-check; the old 10 s lease took ≥ 6 s.
        #expect(takeover < .seconds(5), "took over after \(takeover)")
        print("fanout takeover after \(takeover)")
        #expect(try await fleet.client.send("GET", runs).decode(Int.self) == 1, "the helper's run; the takeover ran here")
    }

    @Test func killedSemaphoreHolderPermitFreesWithinSecondsByDefault() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        // The helper holds with the default options; this process's own permit (taken
        // after the kill) with a roomy lease, so that a stall cannot lose it before `leave`.
        let fleet = try await Fleet.start(1, lock: .steady, redis: redis)
        let holder = try HelperProcess(["semaphore-take", "\(server.port)", fleet.channel, fleet.prefix, "shared"])
        var lines = holder.lines.makeAsyncIterator()
        #expect(await lines.next() == "holding")
        // take() keeps its permit alive in the background, past its 1 s lease: the permit's
        // expiry (its score, server time) moves more than a second past the first one.
        let semaphore = try fleet.queues[0].semaphore("shared")
        let scores = { try await fleet.client.send("ZRANGE", semaphore.redisKey, 0, -1, "WITHSCORES").decode([String].self) }
        let held = try await scores()
        let first = try #require(held.last.flatMap(Double.init), "the holder's permit: \(held)")
        try await eventually(timeout: .seconds(20), "the holder's permit to be extended past its first lease") {
            guard let latest = try await scores().last.flatMap(Double.init) else { return false }
            return latest > first + 1000
        }
        let killed = ContinuousClock.now
        holder.signal(SIGKILL)
        let permit = try await fleet.queues[0].semaphore("shared").take(timeout: .seconds(15))
        let freed = ContinuousClock.now - killed
        // About 1–2 s (the lease's rest, then this waiter's next re-check); the old 10 s
        // lease took ≥ 6 s.
        #expect(freed < .seconds(6), "the permit freed after \(freed)")
        print("semaphore takeover after \(freed)")
        try await permit.leave()
    }
}

/// A registered `Codable` job error (the helper's twin is registered under the same name).
struct Rejection: Error, Codable, Equatable {
    var code: Int
    var reason: String
}

@Suite struct CodableErrorTests {
    @Test func aRegisteredErrorArrivesAsItselfUnregisteredOnesAsRemoteJobError() async throws {
        let redis = try await TestRedis.start()
        let base = try await Fleet.start(1, redis: redis)
        func queue(registering: Bool) async throws -> CallbackQueue {
            var options = CallbackQueueOptions(channel: base.channel, lockPrefix: base.prefix)
            // Roomy: the leader's lock must not lapse while its job waits for the others on
            // a machine that stalls for seconds.
            options.lock.keepAliveLease = .seconds(10)
            if registering { options.register(Rejection.self, as: "test.Rejection") }
            return try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(), options: options)
        }
        let (leader, registered, unregistered) = (try await queue(registering: true), try await queue(registering: true),
                                                  try await queue(registering: false))
        let running = Latch(count: 1)
        let runs = Counter()
        let published = Locked<ContinuousClock.Instant?>(nil)
        let leading = Task {
            await catching {
                try await leader.fanout("rejected") { () async throws -> Int in
                    running.arrive()
                    try await eventually("both others wait for this job") {
                        let a = await registered.waitsForAnotherOwner("rejected")
                        let b = await unregistered.waitsForAnotherOwner("rejected")
                        return a && b
                    }
                    published.withLock { $0 = .now }
                    throw Rejection(code: 7, reason: "over quota")
                }
            }
        }
        await running.wait()
        let others = [registered, unregistered].map { queue in
            Task { await catching { try await queue.fanout("rejected") { () async throws -> Int in runs.add(); return 0 } } }
        }
        #expect(await leading.value.error as? Rejection == Rejection(code: 7, reason: "over quota"))
        // Over pub/sub, decoded as the registered type.
        #expect(await others[0].value.error as? Rejection == Rejection(code: 7, reason: "over quota"))
        let remote = await others[1].value.error as? RemoteJobError
        #expect(remote?.typeName == "Rejection")
        #expect(runs.total == 0)
        // A late caller reads the stored outcome (kept 3 s): decoded as well.
        let late = await catching { try await registered.fanout("rejected") { () async throws -> Int in runs.add(); return 0 } }
        if let published = published.withLock({ $0 }), ContinuousClock.now - published < .milliseconds(2500) {
            #expect(late.error as? Rejection == Rejection(code: 7, reason: "over quota"))
            #expect(runs.total == 0)
        }  // else the machine stalled past the outcome's lifetime: running it again is right.
    }

    @Test func aRegisteredErrorCrossesProcesses() async throws {
        let redis = try await TestRedis.start()
        guard let server = redis.server else { return }
        let base = try await Fleet.start(1, redis: redis)
        var options = CallbackQueueOptions(channel: base.channel, lockPrefix: base.prefix)
        options.register(Rejection.self, as: "test.Rejection")
        let queue = try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(), options: options)
        let id = uniqueKey("job"), goKey = uniqueKey("go")
        let helper = try HelperProcess(["fanout-reject", "\(server.port)", base.channel, base.prefix, id, goKey])
        var lines = helper.lines.makeAsyncIterator()
        #expect(await lines.next() == "running")
        let runs = Counter()
        let waiter = Task { await catching { try await queue.fanout(id) { () async throws -> Int in runs.add(); return 0 } } }
        try await eventually("the test process waits for the helper's job") { await queue.waitsForAnotherOwner(id) }
        try await base.client.send("SET", goKey, 1)
        #expect(await waiter.value.error as? Rejection == Rejection(code: 42, reason: "quota exceeded"))
        #expect(await lines.next() == "caught 42 quota exceeded")
        #expect(runs.total == 0)
    }

    @Test func anEmptyNameIsRefused() async throws {
        let fleet = try await Fleet.start(1)
        var options = CallbackQueueOptions(channel: "c")
        options.register(Rejection.self, as: "")
        #expect { _ = try CallbackQueue(client: fleet.client, pubsub: fleet.queues[0].pubsub, options: options) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
    }
}
