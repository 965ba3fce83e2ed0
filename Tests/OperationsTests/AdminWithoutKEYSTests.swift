import Foundation
import Hiredis
import HiredisOps
import LockKit
import QueueKit
import RedisTestSupport
import Testing

/// "SCAN, never KEYS": each read-only `hiredis-admin` command, run as an ACL user that may
/// run every command but `KEYS` (at top level and inside scripts, which run with the
/// caller's ACL), still finds the deployment's figures, and the server refused it nothing.
@Suite(.enabled(if: TestRedis.ownsServers)) struct AdminWithoutKEYSTests {
    /// The read-only commands, each with what its JSON must show of the ``Deployment``.
    enum ReadOnlyCommand: String, CaseIterable, Sendable {
        case queues, tasks, deadLetters = "dead-letters", workers, locks, jobs, job, watch

        func arguments(_ deployment: Deployment) -> [String] {
            switch self {
            case .tasks, .deadLetters: return [rawValue, "emails"]
            case .job: return [rawValue, deployment.jobs.pending.rawValue]
            case .watch: return [rawValue, "--iterations", "1"]
            case .queues, .workers, .locks, .jobs: return [rawValue]
            }
        }

        /// Whether `run`'s JSON holds the deployment's figures.
        func shows(_ run: AdminRun, _ deployment: Deployment) throws -> Bool {
            struct Page: Decodable { var tasks: [String] }
            struct Locks: Decodable { var locks: [LockInfo]; var semaphores: [SemaphoreInfo] }
            switch self {
            case .queues: return try run.json([QueueSummary].self).map(\.name) == ["digests", "emails", "reports"]
            case .tasks: return try run.json(Page.self).tasks == ["to:alan", "to:barbara"]
            case .deadLetters: return try run.json([DeadLetterReport].self).map(\.task) == ["to:grace"]
            case .workers: return try run.json([WorkerSummary].self).map(\.id) == ["worker-1"]
            case .locks:
                let report = try run.json(Locks.self)
                return report.locks.map(\.key) == ["report"] && report.semaphores.map(\.key) == ["printer"]
            case .jobs: return try run.json(JobCounts.self) == JobCounts(pending: 2, leased: 1, fulfilled: 2, waitingNotification: 1)
            case .job: return try run.json(JobStateReport.self).state == "pending"
            case .watch: return try run.json(OpsSummary.self).queues.map(\.name) == ["digests", "emails", "reports"]
            }
        }
    }

    @Test(arguments: ReadOnlyCommand.allCases)
    func aReadOnlyCommandWorksForAUserDeniedKEYS(_ command: ReadOnlyCommand) async throws {
        let deployment = try await Deployment.start()
        let server = try #require(deployment.redis.server)
        let user = try await ACLUser.create(on: server, "no-keys", rule: "allkeys allchannels allcommands -keys")
        let run = try await AdminRun.run(command.arguments(deployment) + ["--json"] + deployment.adminOptions(url: user.url))
        #expect(run.status == 0, "\(run.stderr)")
        #expect(try command.shows(run, deployment), "\(run.stdout)")
        #expect(try await user.refusals() == [])
    }
}
