import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Synchronization

/// Job-store commands of the test helper: `jobs-pull`, `jobs-hold`, `jobs-create`,
/// `jobs-churn` and `jobs-remove`.
enum JobCommands {
    /// `<backend file|redis> <directory or redis URL> <prefix> <leaseMs>`
    static func store(_ arguments: [String]) async throws -> any JobStore<String> {
        let lease = Duration.milliseconds(Int64(arguments[3])!)
        if arguments[0] == "file" {
            return try FileJobStore<String>(directory: URL(fileURLWithPath: arguments[1]), leaseTimeout: lease)
        }
        let client = try await RedisTarget(arguments[1]).client()
        return try RedisJobStore<String>(client: client, prefix: arguments[2], leaseTimeout: lease,
                                         shards: arguments[0] == "redis-sharded" ? 16 : 1)
    }

    static func run(_ command: String, _ arguments: [String]) async throws {
        let store = try await store(arguments)
        switch command {
        case "jobs-pull":
            // Pulls and fulfils until no job is left; prints the ids it fulfilled.
            var fulfilled: [String] = []
            var lost = 0
            while let lease = try await store.pullWork() {
                do {
                    try await store.fulfill(lease.id, value: "by-\(getpid())")
                    fulfilled.append(lease.id.rawValue)
                } catch let error as JobStoreError where error.code == .alreadyFulfilled {
                    lost += 1
                }
                try await lease.release()
            }
            say("fulfilled \(fulfilled.joined(separator: ","))")
            say("lost \(lost)")
        case "jobs-hold":
            // Holds a work lease (arguments[4] == "work") until it is compromised, then tries
            // a late fulfil; or holds a notification lease until killed.
            if arguments[4] == "work" {
                guard let lease = try await store.pullWork() else { say("nothing"); return }
                say("held \(lease.id)")
                await lease.compromised.wait()
                say("compromised")
                do {
                    try await store.fulfill(lease.id, value: "late")
                    say("late fulfil: ok")
                } catch let error as JobStoreError {
                    say("late fulfil: \(error.code)")
                }
                do {
                    try await lease.release()
                    say("release: ok")
                } catch let error as JobStoreError {
                    say("release: \(error.code)")
                }
            } else {
                guard let lease = try await store.pullNotification() else { say("nothing"); return }
                say("held \(lease.id) \(lease.waiting.sorted().joined(separator: ","))")
                try await untilCancelled()   // held until the test kills this process
            }
        case "jobs-remove":
            // Removes expired jobs with a retention of arguments[4] ms (a failpoint may kill
            // the process on the way); prints how many.
            guard arguments[0] == "file" else { exit(2) }
            let remover = try FileJobStore<String>(directory: URL(fileURLWithPath: arguments[1]),
                                                   retention: .milliseconds(Int64(arguments[4])!))
            say("removed \(try await remover.removeExpired())")
        case "jobs-churn":
            // arguments[4] callers create, queue a target to every other job and fulfil two
            // jobs in three, for ever; each line is printed once its call returned
            // (acknowledged): `created <id> <request>`, `queued <id> <target>`,
            // `fulfilled <id> <value>`. The test kills the process mid-run.
            let callers = Int(arguments[4])!
            try await withThrowingTaskGroup(of: Void.self) { group in
                for caller in 0..<callers {
                    group.addTask {
                        for round in 0... {
                            let name = "\(caller)-\(round)"
                            let id = try await store.create(request: "request-\(name)")
                            say("created \(id) request-\(name)")
                            if round % 2 == 0 {
                                try await store.queue(id, target: "target-\(name)")
                                say("queued \(id) target-\(name)")
                            }
                            if round % 3 != 2 {
                                try await store.fulfill(id, value: "value-\(name)")
                                say("fulfilled \(id) value-\(name)")
                            }
                        }
                    }
                }
                try await group.waitForAll()
            }
        case "jobs-create":
            // Creates one job (a failpoint may kill the process on the way).
            let id = try await store.create(request: "crash test")
            say("created \(id)")
        default:
            exit(2)
        }
    }
}
