import ArgumentParser
import Foundation
import HiredisOps
import LockKit
import QueueKit

/// `hiredis-admin`: look at and act on a HiredisKit deployment from a terminal.
@main
struct HiredisAdmin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hiredis-admin",
        abstract: "Inspect and operate HiredisKit's queues, workers, locks and jobs.",
        subcommands: [Queues.self, Tasks.self, DeadLetters.self, Retry.self, Purge.self, FailWorker.self, Workers.self,
                      Locks.self, Jobs.self, Job.self, Watch.self, Serve.self])
}

struct Queues: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Queues with their waiting, in-flight and dead-letter counts.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let queues = try await withSource(connection) { try await $0.workQueue.queueSummaries() }
        if output.json { return print(try opsJSON(queues)) }
        print(table(["QUEUE", "WAITING", "IN-FLIGHT", "DEAD", "DELAYED", "STATE", "LIMITS"], queues.map(queueRow)))
    }
}

struct Tasks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "The waiting tasks of a queue, in dequeue order (paged).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The queue.") var queue: String
    @Option(help: "Position of the first task (0: next to be dequeued).") var offset = 0
    @Option(help: "How many tasks.") var limit = 50

    func validate() throws {
        guard offset >= 0 else { throw ValidationError("--offset must not be negative") }
        guard limit >= 1 else { throw ValidationError("--limit must be at least 1") }
    }

    func run() async throws {
        let tasks = try await withSource(connection) {
            try await $0.workQueue.getTasks(queue, offset: offset, limit: limit).map { String(decoding: $0, as: UTF8.self) }
        }
        if output.json { return print(try opsJSON(["queue": .string(queue), "offset": .int(offset), "tasks": .list(tasks)] as [String: JSONField])) }
        print(table(["#", "TASK"], tasks.enumerated().map { ["\(offset + $0)", $1] }))
    }
}

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "dead-letters", abstract: "A queue's dead letters with their errors.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The queue.") var queue: String

    func run() async throws {
        let letters = try await withSource(connection) { try await $0.workQueue.deadLetters(queue).map(DeadLetterReport.init) }
        if output.json { return print(try opsJSON(letters)) }
        print(table(["ID", "DELIVERIES", "TASK", "ERROR"], letters.map { [$0.id, "\($0.deliveries)", $0.task, $0.error] }))
    }
}

struct Retry: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Put dead letters back on their queue (all, or the ids given).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var confirmation: ConfirmOptions
    @Argument(help: "The queue.") var queue: String
    @Argument(help: "Dead-letter ids (default: all).") var ids: [String] = []

    func run() async throws {
        let what = ids.isEmpty ? "every dead letter" : "\(ids.count) dead letter(s)"
        guard confirmation.confirm("Retry \(what) of queue \(queue)?") else { throw ExitCode(2) }
        let moved = try await withSource(connection) { try await $0.workQueue.retryDeadLetters(queue, ids: ids.isEmpty ? nil : ids) }
        if output.json { return print(try opsJSON(["queue": .string(queue), "retried": .int(moved)] as [String: JSONField])) }
        print("retried \(moved) dead letter(s) of \(queue)")
    }
}

struct Purge: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Forget dead letters (all, or the ids given).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var confirmation: ConfirmOptions
    @Argument(help: "The queue.") var queue: String
    @Argument(help: "Dead-letter ids (default: all).") var ids: [String] = []

    func run() async throws {
        let what = ids.isEmpty ? "every dead letter" : "\(ids.count) dead letter(s)"
        guard confirmation.confirm("Purge \(what) of queue \(queue)? This cannot be undone.") else { throw ExitCode(2) }
        let removed = try await withSource(connection) { try await $0.workQueue.purgeDeadLetters(queue, ids: ids.isEmpty ? nil : ids) }
        if output.json { return print(try opsJSON(["queue": .string(queue), "purged": .int(removed)] as [String: JSONField])) }
        print("purged \(removed) dead letter(s) of \(queue)")
    }
}

struct FailWorker: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fail-worker", abstract: "Declare a worker dead: its in-flight tasks go back to the front of their queues.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @OptionGroup var confirmation: ConfirmOptions
    @Argument(help: "The worker id.") var id: String

    func run() async throws {
        guard confirmation.confirm("Fail worker \(id) and requeue its tasks?") else { throw ExitCode(2) }
        let report = try await withSource(connection) { try await $0.workQueue.failWorker(id) }
        if output.json {
            return print(try opsJSON(["worker": .string(id), "requeued": .int(report.requeued), "deadLettered": .int(report.deadLettered)]
                                     as [String: JSONField]))
        }
        print("failed worker \(id): \(report.requeued) task(s) requeued, \(report.deadLettered) dead-lettered")
    }
}

struct Workers: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Registered workers: queues, last heartbeat age, in-flight tasks.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let workers = try await withSource(connection) { try await $0.workQueue.workerSummaries() }
        if output.json { return print(try opsJSON(workers)) }
        print(table(["WORKER", "QUEUES", "HEARTBEAT-AGE", "IN-FLIGHT", "ALIVE"], workers.map {
            [$0.id, $0.queues.joined(separator: ","), milliseconds($0.heartbeatAgeMilliseconds), "\($0.inFlight)", $0.alive ? "yes" : "no"]
        }))
    }
}

struct Locks: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Held locks and semaphores (found with SCAN).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    struct Report: Codable {
        var locks: [LockInfo]
        var semaphores: [SemaphoreInfo]
    }

    func run() async throws {
        let report = try await withSource(connection) { Report(locks: try await $0.locks.locks(), semaphores: try await $0.locks.semaphores()) }
        if output.json { return print(try opsJSON(report)) }
        print(table(["LOCK", "HOLDER", "FENCE", "TTL"], report.locks.map {
            [$0.key, $0.token, $0.fencingToken.map { "\($0)" } ?? "-", milliseconds($0.ttlMilliseconds)]
        }))
        print("")
        print(table(["SEMAPHORE", "PERMITS", "HOLDERS", "TTL"], report.semaphores.map {
            [$0.key, "\($0.held)/\($0.permits.map { "\($0)" } ?? "?")", $0.holders.map(\.token).joined(separator: ","), milliseconds($0.ttlMilliseconds)]
        }))
    }
}

struct Jobs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Job store counts (Redis, or the file store with --dir).")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions

    func run() async throws {
        let counts = try await withSource(connection) { try await $0.jobCounts() }
        if output.json { return print(try opsJSON(counts)) }
        print(table(["PENDING", "LEASED", "FULFILLED", "WAITING-NOTIFICATION"],
                    [["\(counts.pending)", "\(counts.leased)", "\(counts.fulfilled)", "\(counts.waitingNotification)"]]))
    }
}

struct Job: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "One job's state.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Argument(help: "The job id.") var id: String

    func validate() throws {
        guard (try? JobID(id)) != nil else { throw ValidationError("\"\(id)\" is not a job id") }
    }

    func run() async throws {
        let report = try await withSource(connection) { try await $0.jobState(id) }
        if output.json { return print(try opsJSON(report)) }
        print("\(report.id) \(report.state)" + (report.version.map { " (version \($0))" } ?? ""))
    }
}

struct Watch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "A compact summary refreshed every second, until Ctrl-C.")
    @OptionGroup var connection: ConnectionOptions
    @OptionGroup var output: OutputOptions
    @Option(help: "Stop after this many refreshes (default: never).") var iterations: Int?

    func validate() throws {
        if let iterations, iterations < 1 { throw ValidationError("--iterations must be at least 1") }
    }

    func run() async throws {
        try await withSource(connection) { source in
            let clear = isatty(STDOUT_FILENO) == 1 && !output.json
            var done = 0
            while iterations.map({ done < $0 }) ?? true {
                let summary = try await source.summary()
                if clear { print("\u{1B}[H\u{1B}[2J", terminator: "") }
                print(output.json ? try opsJSON(summary) : render(summary))
                fflush(nil)
                done += 1
                if iterations.map({ done >= $0 }) ?? false { break }
                try await Task.sleep(for: .seconds(1))   // the refresh period
            }
        }
    }

    func render(_ summary: OpsSummary) -> String {
        let waiting = summary.queues.map(\.waiting).reduce(0, +)
        let inFlight = summary.queues.map(\.inFlight).reduce(0, +)
        let dead = summary.queues.map(\.deadLetters).reduce(0, +)
        var lines = ["hiredis-admin watch — \(Date())",
                     "queues \(summary.queues.count)  waiting \(waiting)  in-flight \(inFlight)  dead \(dead)  " +
                     "workers \(summary.workers.count)  locks \(summary.locks.count)  semaphores \(summary.semaphores.count)  " +
                     "jobs pending \(summary.jobs.pending) fulfilled \(summary.jobs.fulfilled) notify \(summary.jobs.waitingNotification)",
                     ""]
        lines.append(table(["QUEUE", "WAITING", "IN-FLIGHT", "DEAD", "DELAYED", "STATE", "LIMITS"], summary.queues.map(queueRow)))
        return lines.joined(separator: "\n")
    }
}

/// A small JSON value for ad-hoc objects.
enum JSONField: Encodable {
    case string(String)
    case int(Int)
    case list([String])

    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        switch self {
        case .string(let value): try container.encode(value)
        case .int(let value): try container.encode(value)
        case .list(let value): try container.encode(value)
        }
    }
}

/// One queue's row: counts, whether it is paused, and its limits.
func queueRow(_ queue: QueueSummary) -> [String] {
    var limits: [String] = []
    if let count = queue.rateCount, let per = queue.ratePerMilliseconds { limits.append("\(count)/\(per)ms") }
    if let concurrency = queue.concurrency { limits.append("max \(concurrency)") }
    return [queue.name, "\(queue.waiting)", "\(queue.inFlight)", "\(queue.deadLetters)", "\(queue.delayed)",
            queue.paused ? "paused" : "running", limits.isEmpty ? "-" : limits.joined(separator: ", ")]
}
