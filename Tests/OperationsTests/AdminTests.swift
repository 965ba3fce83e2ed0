import Foundation
import Hiredis
import HiredisOps
import LockKit
import QueueKit
import RedisTestSupport
import Testing

/// `hiredis-admin`, run as a subprocess against a populated Redis.
@Suite struct AdminReadTests {
    @Test func queuesShowWaitingInFlightAndDeadLetterCounts() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["queues"] + deployment.adminOptions)
        #expect(run.status == 0)
        #expect(run.row("emails") == ["emails", "2", "1", "1", "0", "running", "-"])
        #expect(run.row("reports") == ["reports", "3", "0", "0", "0", "running", "-"])
        #expect(run.row("digests") == ["digests", "0", "0", "0", "1", "paused", "50/1000ms,", "max", "4"])
        let json = try await AdminRun.run(["queues", "--json"] + deployment.adminOptions).json([QueueSummary].self)
        #expect(json == [QueueSummary(name: "digests", waiting: 0, inFlight: 0, deadLetters: 0, delayed: 1, paused: true,
                                      limits: QueueLimits(rate: RateLimit(50, per: .seconds(1)), concurrency: 4)),
                         QueueSummary(name: "emails", waiting: 2, inFlight: 1, deadLetters: 1),
                         QueueSummary(name: "reports", waiting: 3, inFlight: 0, deadLetters: 0)])
    }

    @Test func tasksArePagedInDequeueOrder() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["tasks", "reports", "--offset", "1", "--limit", "1"] + deployment.adminOptions)
        #expect(run.row("1") == ["1", "r2"])
        #expect(!run.stdout.contains("r1") && !run.stdout.contains("r3"))
        struct Page: Decodable { var tasks: [String] }
        let json = try await AdminRun.run(["tasks", "reports", "--json", "--offset", "1"] + deployment.adminOptions).json(Page.self)
        #expect(json.tasks == ["r2", "r3"])
    }

    @Test func deadLettersShowTheirErrors() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["dead-letters", "emails"] + deployment.adminOptions)
        #expect(run.stdout.contains("to:grace") && run.stdout.contains("smtp down"))
        let json = try await AdminRun.run(["dead-letters", "emails", "--json"] + deployment.adminOptions).json([DeadLetterReport].self)
        #expect(json.map(\.task) == ["to:grace"])
        #expect(json.map(\.error) == ["smtp down"])
    }

    @Test func workersShowTheirQueuesHeartbeatAgeAndInFlightTasks() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["workers"] + deployment.adminOptions)
        let row = try #require(run.row("worker-1"))
        #expect(row[1] == "emails" && row[3] == "1" && row[4] == "yes")
        let json = try await AdminRun.run(["workers", "--json"] + deployment.adminOptions).json([WorkerSummary].self)
        let worker = try #require(json.first)
        #expect(json.count == 1 && worker.id == "worker-1" && worker.queues == ["emails"] && worker.inFlight == 1 && worker.alive)
        let age = try #require(worker.heartbeatAgeMilliseconds)
        #expect(age >= 0 && age <= Deployment.workerTimeout.components.seconds * 1000)
    }

    @Test func locksShowHolderFencingTokenTTLAndPermits() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["locks"] + deployment.adminOptions)
        #expect(run.row("report")?.prefix(3) == ["report", deployment.lock.token, "\(deployment.lock.fencingToken)"])
        #expect(run.row("printer")?[1] == "2/3")
        struct Report: Decodable { var locks: [LockInfo]; var semaphores: [SemaphoreInfo] }
        let json = try await AdminRun.run(["locks", "--json"] + deployment.adminOptions).json(Report.self)
        let lock = try #require(json.locks.first)
        #expect(json.locks.count == 1 && lock.key == "report" && lock.token == deployment.lock.token)
        #expect(lock.fencingToken == deployment.lock.fencingToken)
        #expect((lock.ttlMilliseconds ?? 0) > 0)
        let printer = try #require(json.semaphores.first)
        #expect(printer.key == "printer" && printer.permits == 3 && printer.held == 2)
        #expect(Set(printer.holders.map(\.token)) == Set(deployment.permits.map(\.token)))
    }

    @Test func jobsCountEachStateInRedisAndInAFileStore() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["jobs"] + deployment.adminOptions)
        #expect(run.stdout.split(separator: "\n").last?.split(separator: " ").map(String.init) == ["2", "1", "2", "1"])
        let json = try await AdminRun.run(["jobs", "--json"] + deployment.adminOptions).json(JobCounts.self)
        #expect(json == JobCounts(pending: 2, leased: 1, fulfilled: 2, waitingNotification: 1))
        let file = try await AdminRun.run(["jobs", "--json", "--dir", deployment.fileDirectory.path] + deployment.adminOptions)
        #expect(try file.json(JobCounts.self) == JobCounts(pending: 1, leased: 0, fulfilled: 1, waitingNotification: 0))
    }

    @Test func jobShowsOneJobsState() async throws {
        let deployment = try await Deployment.start()
        let pending = try await AdminRun.run(["job", deployment.jobs.pending.rawValue] + deployment.adminOptions)
        #expect(pending.stdout.contains("pending (version 0)"))
        let fulfilled = try await AdminRun.run(["job", "--json", deployment.jobs.fulfilled.rawValue] + deployment.adminOptions)
        #expect(try fulfilled.json(JobStateReport.self).state == "fulfilled")
        let unknown = try await AdminRun.run(["job", UUID().uuidString.lowercased()] + deployment.adminOptions)
        #expect(unknown.stdout.contains("unknown"))
    }

    @Test func watchRefreshesTheSummaryForTheIterationsAsked() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["watch", "--iterations", "2", "--json"] + deployment.adminOptions)
        #expect(run.status == 0)
        let snapshots = try run.stdout.split(separator: "\n").map { try JSONDecoder().decode(OpsSummary.self, from: Data($0.utf8)) }
        #expect(snapshots.count == 2)
        #expect(snapshots.allSatisfy { $0.queues.map(\.name) == ["digests", "emails", "reports"] && $0.locks.count == 1 && $0.jobs.pending == 2 })
        let text = try await AdminRun.run(["watch", "--iterations", "1"] + deployment.adminOptions)
        #expect(text.stdout.contains("waiting 5  in-flight 1  dead 1"))
    }
}

@Suite struct AdminActionTests {
    @Test func retryPutsDeadLettersBackOnTheirQueue() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["retry", "emails", "--yes"] + deployment.adminOptions)
        #expect(run.status == 0 && run.stdout.contains("retried 1"))
        #expect(try await deployment.workQueue.deadLetters("emails").isEmpty)
        #expect(try await deployment.workQueue.countQueue("emails") == 3)
    }

    @Test func retryWithJSONReportsTheDeadLettersItPutBack() async throws {
        let deployment = try await Deployment.start()
        let dead = try await deployment.workQueue.deadLetters("emails").count
        try #require(dead > 0, "the deployment has a dead letter to retry")
        let waiting = try await deployment.workQueue.countQueue("emails")
        let run = try await AdminRun.run(["retry", "emails", "--yes", "--json"] + deployment.adminOptions)
        struct Retried: Decodable, Equatable { var queue: String; var retried: Int }
        let report = try run.json(Retried.self)
        #expect(report == Retried(queue: "emails", retried: dead))
        #expect(try await deployment.workQueue.deadLetters("emails").isEmpty)
        #expect(try await deployment.workQueue.countQueue("emails") == waiting + report.retried)
    }

    @Test func purgeOfOneIdForgetsThatDeadLetter() async throws {
        let deployment = try await Deployment.start()
        let id = try #require(try await deployment.workQueue.deadLetters("emails").first?.id)
        let run = try await AdminRun.run(["purge", "emails", id, "--yes", "--json"] + deployment.adminOptions)
        struct Purged: Decodable { var purged: Int }
        #expect(try run.json(Purged.self).purged == 1)
        #expect(try await deployment.workQueue.deadLetters("emails").isEmpty)
        #expect(try await deployment.workQueue.countQueue("emails") == 2)
    }

    @Test func aDestructiveCommandAnsweredNoChangesNothing() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["purge", "emails"] + deployment.adminOptions, input: "n\n")
        #expect(run.status != 0)
        #expect(run.stderr.contains("Purge every dead letter of queue emails?"))
        #expect(try await deployment.workQueue.deadLetters("emails").count == 1)
    }

    @Test func aDestructiveCommandAnsweredYesRuns() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["purge", "emails"] + deployment.adminOptions, input: "y\n")
        #expect(run.status == 0)
        #expect(try await deployment.workQueue.deadLetters("emails").isEmpty)
    }

    @Test func failWorkerRequeuesItsInFlightTasks() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["fail-worker", "worker-1", "--yes"] + deployment.adminOptions)
        #expect(run.status == 0 && run.stdout.contains("1 task(s) requeued"))
        #expect(try await deployment.workQueue.queueSummary("emails") == QueueSummary(name: "emails", waiting: 3, inFlight: 0, deadLetters: 1))
        #expect(try await deployment.workQueue.getTasks("emails").first.map { String(decoding: $0, as: UTF8.self) } == "to:ada")
    }

    @Test func failWorkerWithJSONReportsTheTasksItRequeued() async throws {
        let deployment = try await Deployment.start()
        let before = try await deployment.workQueue.queueSummary("emails")
        try #require(before.inFlight > 0, "the deployment's worker holds a task")
        let run = try await AdminRun.run(["fail-worker", "worker-1", "--yes", "--json"] + deployment.adminOptions)
        struct Failed: Decodable, Equatable { var worker: String; var requeued: Int; var deadLettered: Int }
        let report = try run.json(Failed.self)
        #expect(report == Failed(worker: "worker-1", requeued: before.inFlight, deadLettered: 0))
        #expect(try await deployment.workQueue.queueSummary("emails") == QueueSummary(
            name: "emails", waiting: before.waiting + report.requeued, inFlight: 0, deadLetters: before.deadLetters + report.deadLettered))
    }

    @Test func failingAnUnknownWorkerIsAnErrorLine() async throws {
        let deployment = try await Deployment.start()
        let run = try await AdminRun.run(["fail-worker", "nobody", "--yes"] + deployment.adminOptions)
        #expect(run.status != 0)
        #expect(run.stderr.split(separator: "\n").count == 1 && run.stderr.hasPrefix("hiredis-admin: error:"))
    }
}

@Suite struct AdminConnectionErrorTests {
    @Test func aWrongURLIsOneErrorLineAndAFailureStatus() async throws {
        let port = try freeLoopbackPort()
        let run = try await AdminRun.run(["queues", "--url", "redis://127.0.0.1:\(port)"])
        #expect(run.status != 0)
        #expect(run.stdout.isEmpty)
        #expect(run.stderr.split(separator: "\n").count == 1)
        #expect(run.stderr.hasPrefix("hiredis-admin: error:") && run.stderr.contains("\(port)"))
    }

    @Test func aWrongPasswordIsOneErrorLineWithoutThePassword() async throws {
        let redis = try await TestRedis.start(["--requirepass", "right-one"])
        defer { withExtendedLifetime(redis) {} }
        let run = try await AdminRun.run(["queues", "--url", "redis://:wrong-one@127.0.0.1:\(redis.server?.port ?? 0)"])
        #expect(run.status != 0)
        #expect(run.stderr.split(separator: "\n").count == 1 && run.stderr.hasPrefix("hiredis-admin: error:"))
        #expect(!run.stderr.contains("wrong-one"))
    }

    @Test func aTLSFailureIsOneErrorLineWithoutTheKeyPassphrase() async throws {
        let passphrase = "passphrase-" + UUID().uuidString
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("passphrase-" + UUID().uuidString)
        try Data((passphrase + "\n").utf8).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        // Nothing listens there, and the certificate files do not exist: connecting fails
        // whatever this build can do (no TLS at all, or TLS that cannot load the files).
        let port = try freeLoopbackPort()
        let run = try await AdminRun.run(["queues", "--url", "rediss://127.0.0.1:\(port)", "--tls-cert", "/nonexistent/client.pem",
                                          "--tls-key", "/nonexistent/client.key", "--tls-key-passphrase-file", file.path])
        #expect(run.status != 0)
        #expect(run.stderr.split(separator: "\n").count == 1 && run.stderr.hasPrefix("hiredis-admin: error:"), "\(run.stderr)")
        #expect(!run.stderr.contains(passphrase) && !run.stdout.contains(passphrase))
    }

    @Test func badInputIsRefusedBeforeConnecting() async throws {
        let run = try await AdminRun.run(["tasks", "q", "--limit", "0", "--url", "redis://127.0.0.1:1"])
        #expect(run.status != 0)
        #expect(run.stderr.contains("--limit must be at least 1"))
    }
}
