import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import ServiceLifecycleTestKit
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// `yyyy-MM-ddTHH:mm:ssZ` as a date.
private func utc(_ text: String) -> Date {
    ISO8601DateFormatter().date(from: text)!
}

@Suite struct CronExpressionTests {
    @Test(arguments: [
        ("*/15 * * * *", "2026-01-01T00:07:30Z", "2026-01-01T00:15:00Z"),
        ("*/15 * * * *", "2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"),
        ("30 8 * * 1-5", "2026-01-03T10:00:00Z", "2026-01-05T08:30:00Z"),
        ("0 0 1 1 *", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("0 12 13 * 5", "2026-01-01T00:00:00Z", "2026-01-02T12:00:00Z"),
        ("5,10-12/2 * * * *", "2026-01-01T00:10:00Z", "2026-01-01T00:12:00Z"),
        ("5,10-12/2 * * * *", "2026-01-01T00:12:00Z", "2026-01-01T01:05:00Z"),
        ("0 0 * * 7", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("0 0 * * 0", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("59 23 31 12 *", "2026-12-31T23:59:00Z", "2027-12-31T23:59:00Z"),
        ("0 */6 * * *", "2026-01-01T19:00:00Z", "2026-01-02T00:00:00Z"),
        ("0 9 1-7 * 1", "2026-01-01T10:00:00Z", "2026-01-02T09:00:00Z"),
    ])
    func nextMatchesTheGrammar(expression: String, after: String, expected: String) throws {
        #expect(try CronExpression(expression).next(after: utc(after)) == utc(expected))
    }

    @Test func anImpossibleDateHasNoNextTime() throws {
        #expect(try CronExpression("0 0 30 2 *").next(after: utc("2026-01-01T00:00:00Z")) == nil)
    }

    @Test(arguments: ["* * * *", "* * * * * *", "60 * * * *", "*/0 * * * *", "5-1 * * * *", "a * * * *",
                      "1,,2 * * * *", "* * 0 * *", "* * * 13 *", "* * * * 8", "-5 * * * *", "1/2/3 * * * *", ""])
    func badExpressionsAreRefused(expression: String) {
        #expect { try CronExpression(expression) } throws: { ($0 as? RedisError)?.code == .invalidArgument }
    }
}

@Suite struct RepeatableTests {
    @Test func aRepeatableIsStoredAndListedAndRemoved() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let cron = try CronExpression("*/5 * * * *")
        // The next run is the first tick after the server's clock at registration, which lies
        // between these two readings (a tick may fall between them on a slow machine).
        let before = try await serverMilliseconds(fixture.client)
        try await fixture.queue.addRepeatable(name, name: "report", "build report", schedule: .cron(cron),
                                              options: TaskOptions(priority: 2))
        let after = try await serverMilliseconds(fixture.client)
        let listed = try await fixture.peer().repeatables(name)
        #expect(listed.map(\.name) == ["report"])
        #expect(listed.first?.schedule == .cron(cron) && listed.first?.priority == 2)
        let expected = [before, after].map { cron.next(after: Date(timeIntervalSince1970: Double($0) / 1000)) }
        #expect(listed.first.map { expected.contains($0.nextRun) } == true, "next run \(String(describing: listed.first?.nextRun)), expected one of \(expected)")
        #expect(try await fixture.queue.removeRepeatable(name, name: "report"))
        #expect(try await fixture.queue.removeRepeatable(name, name: "report") == false)
        #expect(try await fixture.queue.repeatables(name).isEmpty)
    }

    /// Every instance of a service adds its repeatables when it starts: the same definition
    /// again keeps the schedule's next tick; a changed one starts its schedule anew.
    @Test func addingTheSameRepeatableAgainKeepsItsSchedule() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.addRepeatable(name, name: "hourly", "sweep", schedule: .every(.seconds(3600)))
        let added = try await serverMilliseconds(fixture.client)
        let first = try #require(try await fixture.queue.repeatables(name).first?.nextRun)
        // The server's clock moves on (a re-add computing a new first tick would differ).
        while try await serverMilliseconds(fixture.client) <= added { await Task.yield() }
        try await fixture.peer().addRepeatable(name, name: "hourly", "sweep", schedule: .every(.seconds(3600)))
        #expect(try await fixture.queue.repeatables(name).first?.nextRun == first)
        try await fixture.queue.addRepeatable(name, name: "hourly", "sweep", schedule: .every(.seconds(3600)),
                                              options: TaskOptions(priority: 3))
        let replaced = try #require(try await fixture.queue.repeatables(name).first)
        #expect(replaced.priority == 3 && replaced.nextRun > first)
    }

    @Test func badRepeatablesAreRefusedBeforeAnythingIsSent() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let cases: [(String, RepeatSchedule, TaskOptions)] = [
            ("", .every(.seconds(1)), TaskOptions()),
            ("r", .every(.zero), TaskOptions()),
            ("r", .cron(try CronExpression("0 0 30 2 *")), TaskOptions()),
            ("r", .every(.seconds(1)), TaskOptions(id: "fixed")),
            ("r", .every(.seconds(1)), TaskOptions(delay: .seconds(1))),
            ("r", .every(.seconds(1)), TaskOptions(retry: .fixed(attempts: 0, delay: .zero))),
        ]
        for (repeatName, schedule, options) in cases {
            await #expect { try await fixture.queue.addRepeatable(name, name: repeatName, "t", schedule: schedule, options: options) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
        #expect(try await fixture.keys().isEmpty)
    }

    /// Ticks missed while no scheduler ran are coalesced into one task, and the next tick
    /// is the first after now.
    @Test func missedTicksAreCoalescedIntoOne() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        try await fixture.queue.addRepeatable(name, name: "r", "tick", schedule: .every(.milliseconds(50)))
        let first = try #require(try await fixture.queue.repeatables(name).first).nextRun.milliseconds
        try await eventually(timeout: .seconds(30), "five ticks to pass on the server's clock") {
            try await serverMilliseconds(fixture.client) >= first + 250
        }
        let before = try await serverMilliseconds(fixture.client)
        #expect(try await fixture.queue.enqueueDueRepeatables(name) == 1)
        #expect(try await fixture.queue.countQueue(name) == 1)
        let next = try #require(try await fixture.queue.repeatables(name).first).nextRun.milliseconds
        #expect((next - first) % 50 == 0 && next > before, "the next tick is the first after the pass")
        let record = try #require(try await fixture.queue.task(name, "repeat:r:\(first)"))
        #expect(record.state == .waiting && record.task == Array("tick".utf8))
    }

    /// The `Service` form enqueues ticks and returns on graceful shutdown.
    @Test func theSchedulerServiceEnqueuesTicksUntilGracefulShutdown() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        #expect(throws: RedisError.self) { try RepeatableScheduler(workQueue: fixture.queue, queues: []) }
        try await fixture.queue.addRepeatable(name, name: "r", "tick", schedule: .every(.milliseconds(50)))
        let scheduler = try RepeatableScheduler(workQueue: fixture.queue, queues: [name])
        try await testGracefulShutdown { trigger in
            let service = Task { try await scheduler.run() }
            try await eventually(timeout: .seconds(30), "two ticks") { try await fixture.queue.countQueue(name) >= 2 }
            trigger.triggerGracefulShutdown()
            try await service.value
        }
    }

    /// Three scheduler processes, one killed with `kill -9` mid-run: over 30 ticks each tick
    /// is enqueued exactly once. No tick twice; and no tick skipped, except ticks coalesced
    /// by design: a gap between two enqueued ticks is allowed only where the pass that
    /// enqueued the first of them was late by the gap (its record's creation time, on the
    /// server's clock, is past the tick before the second), as on a stalled machine. No
    /// assertion depends on how fast the machine is.
    @Test func threeSchedulersEnqueueEachTickExactlyOnce() async throws {
        let fixture = try await QueueFixture.start()
        let name = uniqueName()
        let stop = uniqueKey("stop")
        let interval: Int64 = 400
        var schedulers: [HelperProcess] = []
        for _ in 0..<3 {
            let helper = try queueHelper("schedule", fixture.redis, [fixture.prefix, name, stop])
            for await line in helper.lines { #expect(line == "scheduling"); break }
            schedulers.append(helper)
        }
        try await fixture.queue.addRepeatable(name, name: "beat", "beat", schedule: .every(.milliseconds(interval)))
        try await eventually(timeout: .seconds(60), "ten ticks") { try await fixture.queue.countQueue(name) >= 10 }
        schedulers[0].signal(SIGKILL)
        _ = await schedulers[0].exitStatus()
        try await eventually(timeout: .seconds(60), "thirty ticks") { try await fixture.queue.countQueue(name) >= 31 }
        #expect(try await fixture.queue.removeRepeatable(name, name: "beat"))
        try await fixture.client.send("SET", stop, "1")
        for scheduler in schedulers.dropFirst() {
            #expect(await scheduler.lines.collect().last == "done")
            #expect(await scheduler.exitStatus() == 0)
        }
        let marker = ":job:repeat:beat:"
        let ticks = try await fixture.client.scanKeys(matching: "*\(fixture.prefix)*\(marker)*").compactMap { key in
            key.range(of: marker).flatMap { Int64(key[$0.upperBound...]) }
        }.sorted()
        #expect(ticks.count >= 31)
        // No tick twice: the queue holds one task per distinct tick (ids carry the tick).
        let queued = try await fixture.queue.getTasks(name)
        #expect(queued.count == ticks.count, "as many queued tasks as distinct ticks")
        #expect(Set(ticks).count == ticks.count)
        // Every tick is on the schedule's grid.
        #expect(ticks.allSatisfy { ($0 - ticks[0]) % interval == 0 }, "ticks off the grid: \(ticks)")
        // No tick skipped unless coalesced: the next tick after a pass is the first after
        // its `now`, so a gap of more than one interval after tick t means the pass that
        // enqueued t ran at or after the tick before the next one.
        var coalesced = 0
        for (tick, next) in zip(ticks, ticks.dropFirst()) where next - tick != interval {
            let record = try #require(try await fixture.queue.task(name, "repeat:beat:\(tick)"))
            let created = try #require(record.createdAt).milliseconds
            #expect(created >= next - interval,
                    "tick \(tick) enqueued at \(created) ms, then nothing until \(next): a tick was skipped, not coalesced")
            coalesced += Int((next - tick) / interval) - 1
        }
        if coalesced > 0 { print("repeatable test: \(coalesced) ticks coalesced behind late passes (a loaded machine)") }
    }
}
