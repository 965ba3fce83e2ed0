import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Synchronization

/// Job-store commands of the test helper: `jobs-pull` and `jobs-hold`.
enum JobCommands {
    /// `<backend file|redis> <directory or redis URL> <prefix> <leaseMs>`
    static func store(_ arguments: [String]) async throws -> any JobStore<String> {
        let lease = Duration.milliseconds(Int64(arguments[3])!)
        if arguments[0] == "file" {
            return try FileJobStore<String>(directory: URL(fileURLWithPath: arguments[1]), leaseTimeout: lease)
        }
        let client = try await RedisConnection.connect(try RedisConfiguration(url: arguments[1]))
        return try RedisJobStore<String>(client: client, prefix: arguments[2], leaseTimeout: lease)
    }

    static func run(_ command: String, _ arguments: [String]) async throws {
        if command == "jobs-bench" {
            try await bench(arguments)
            return
        }
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
        case "jobs-create":
            // Creates one job (a failpoint may kill the process on the way).
            let id = try await store.create(request: "crash test")
            say("created \(id)")
        default:
            exit(2)
        }
    }

    /// jobs-bench <backend> <location> <prefix> <leaseMs> <count>: create → queue a target →
    /// pull → fulfil (the respond handler notifies) → release, one job at a time; prints jobs/s.
    static func bench(_ arguments: [String]) async throws {
        let count = Int(arguments[4])!
        let notified = Counter()
        let respond: JobResponder<String> = { _, _, _ in notified.add(); return true }
        let lease = Duration.milliseconds(Int64(arguments[3])!)
        let store: any JobStore<String>
        if arguments[0] == "file" {
            store = try FileJobStore<String>(directory: URL(fileURLWithPath: arguments[1]), leaseTimeout: lease, respond: respond)
        } else {
            let client = try await RedisConnection.connect(try RedisConfiguration(url: arguments[1]))
            store = try RedisJobStore<String>(client: client, prefix: arguments[2], leaseTimeout: lease, respond: respond)
        }
        let start = ContinuousClock.now
        for index in 0..<count {
            let id = try await store.create(request: "job-\(index)")
            try await store.queue(id, target: "target-\(index)")
            guard let work = try await store.pullWork() else { throw JobStoreError(.unknownJob, "nothing to pull") }
            try await store.fulfill(work.id, value: "value-\(index)")
            try await work.release()
        }
        let seconds = (ContinuousClock.now - start) / .seconds(1)
        say("\(arguments[0]): \(count) jobs create→queue→pull→fulfil→notify in \(seconds) s = \(Int(Double(count) / seconds)) jobs/s, notified \(notified.value)")
    }
}

final class Counter: Sendable {
    private let count = Mutex(0)
    func add() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}
