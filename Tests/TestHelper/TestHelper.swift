// A helper process for multi-process tests: `hiredis-test-helper <command> <port> ...`.
import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport

@main
struct TestHelper {
    static func main() async throws {
        let arguments = CommandLine.arguments
        guard arguments.count >= 3 else {
            FileHandle.standardError.write(Data("usage: hiredis-test-helper <command> <port, redis:// URL or cluster:host:port,…> ...\n".utf8))
            exit(2)
        }
        if arguments[1].hasPrefix("jobs-") {
            try await JobCommands.run(arguments[1], Array(arguments.dropFirst(2)))
            return
        }
        let configuration = try RedisTarget(arguments[2])
        switch arguments[1] {
        case "queue-worker", "queue-hold", "queue-take", "queue-run", "queue-await", "queue-progress", "queue-schedule":
            try await QueueCommands.run(arguments[1], configuration, Array(arguments.dropFirst(3)))
        case "lock-cycles":
            // lock-cycles <port> <counterKey> <cycles> <channel>: read-modify-write under a lock.
            let key = arguments[3]
            let cycles = Int(arguments[4])!
            // A 10 s lease, extended every 3.3 s: a stall of a loaded machine must not lose it.
            let queue = try await makeQueue(configuration, channel: arguments[5], timeout: .seconds(10), retries: 10_000, delay: .milliseconds(2))
            for _ in 0..<cycles {
                try await queue.withLock(key + ":lock") { lock in
                    let value = try await queue.client.send("GET", key).decode(Int?.self) ?? 0
                    try await queue.client.send("SET", key, value + 1)
                    try await queue.client.send("RPUSH", key + ":fences", lock.fencingToken)
                }
            }
            say("done")
        case "fanout":
            // fanout <port> <channel> <id> <runsKey> <callers> <jobMilliseconds> [<leaseMilliseconds> [<allCallers>]]:
            // `callers` concurrent fanouts of `id`. The leader's lease is 30 s unless given
            // (a takeover test gives a short one): a stall of a loaded machine must not make
            // a waiter run the job again. The job starts once `allCallers` (every process's
            // callers; default: this process's) have started calling, so that none starts
            // after the job is over and its outcome only stored for a few seconds.
            let lease = arguments.count > 8 ? Int(arguments[8])! : 30_000
            let queue = try await makeQueue(configuration, channel: arguments[3], timeout: .milliseconds(lease), retries: 2, delay: .milliseconds(50))
            let id = arguments[4], runsKey = arguments[5]
            let callers = Int(arguments[6])!, jobTime = Int(arguments[7])!
            let allCallers = arguments.count > 9 ? Int(arguments[9])! : callers
            let joinedKey = runsKey + ":joined"
            say("ready")
            let results = try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<callers {
                    group.addTask {
                        try await queue.client.send("INCR", joinedKey)
                        return try await queue.fanout(id, timeout: .seconds(30)) {
                            for _ in 0..<1_000 {
                                if try await queue.client.send("GET", joinedKey).decode(Int.self) >= allCallers { break }
                                try await Task.sleep(for: .milliseconds(20))
                            }
                            let run = try await queue.client.send("INCR", runsKey).decode(Int.self)
                            say("running \(run)")
                            try await Task.sleep(for: .milliseconds(jobTime))
                            return "value-\(run)"
                        }
                    }
                }
                var all: [String] = []
                for try await value in group { all.append(value) }
                return all
            }
            say("results \(Set(results).sorted().joined(separator: ",")) \(results.count)")
        case "semaphore-hold":
            // semaphore-hold <port> <channel> <prefix> <key> <timeoutMilliseconds>: takes the
            // only permit, says so, and holds it (with its lease) until killed.
            let client = try await configuration.client()
            let pubsub = try await configuration.subscriber()
            let lease = Duration.milliseconds(Int64(arguments[6])!)
            let queue = try CallbackQueue(client: client, pubsub: pubsub, options: CallbackQueueOptions(
                channel: arguments[3], lockPrefix: arguments[4],
                lock: LockOptions(timeout: lease, keepAliveLease: lease)))
            try await queue.semaphore(arguments[5]).withPermit { _ in
                say("holding")
                try await untilCancelled()   // held until the test kills this process
            }
        case "semaphore-take":
            // semaphore-take <port> <channel> <prefix> <key>: takes the only permit with
            // `take()` and the default options, says so, and holds it until killed.
            let client = try await configuration.client()
            let pubsub = try await configuration.subscriber()
            let queue = try CallbackQueue(client: client, pubsub: pubsub, options: CallbackQueueOptions(
                channel: arguments[3], lockPrefix: arguments[4]))
            let permit = try await queue.semaphore(arguments[5]).take()
            say("holding")
            try await untilCancelled()   // held until the test kills this process
            try await permit.leave()
        case "fanout-default":
            // fanout-default <port> <channel> <prefix> <id> <runsKey>: one caller with the
            // default options; its job says "running <n>" and never ends (until killed).
            let client = try await configuration.client()
            let pubsub = try await configuration.subscriber()
            let queue = try CallbackQueue(client: client, pubsub: pubsub, options: CallbackQueueOptions(
                channel: arguments[3], lockPrefix: arguments[4]))
            let runsKey = arguments[6]
            let value: String = try await queue.fanout(arguments[5]) {
                let run = try await client.send("INCR", runsKey).decode(Int.self)
                say("running \(run)")
                try await untilCancelled()
                return "never"
            }
            say("result \(value)")
        case "fanout-reject":
            // fanout-reject <port> <channel> <prefix> <id> <goKey>: one caller whose job says
            // "running", waits until <goKey> exists, then throws a registered Codable error
            // (HelperRejection as "test.Rejection"); says "caught <code> <reason>".
            let client = try await configuration.client()
            let pubsub = try await configuration.subscriber()
            var options = CallbackQueueOptions(channel: arguments[3], lockPrefix: arguments[4])
            options.lock.keepAliveLease = .seconds(10)  // a stalled machine must not hand the job over
            options.register(HelperRejection.self, as: "test.Rejection")
            let queue = try CallbackQueue(client: client, pubsub: pubsub, options: options)
            let goKey = arguments[6]
            do {
                let _: Int = try await queue.fanout(arguments[5]) {
                    say("running")
                    while try await client.send("EXISTS", goKey) == .integer(0) {
                        try await Task.sleep(for: .milliseconds(20))   // polling the test's go-ahead
                    }
                    throw HelperRejection(code: 42, reason: "quota exceeded")
                }
                say("no error")
            } catch let rejection as HelperRejection {
                say("caught \(rejection.code) \(rejection.reason)")
            }
        default:
            FileHandle.standardError.write(Data("unknown command \(arguments[1])\n".utf8))
            exit(2)
        }
    }

    /// A queue whose job locks keep the lease they had before keep-alive leases existed
    /// (`timeout`), so these commands behave as they did.
    static func makeQueue(_ configuration: RedisTarget, channel: String, timeout: Duration, retries: Int, delay: Duration) async throws -> CallbackQueue {
        let client = try await configuration.client()
        let pubsub = try await configuration.subscriber()
        return try CallbackQueue(client: client, pubsub: pubsub, options: CallbackQueueOptions(
            channel: channel, lock: LockOptions(timeout: timeout, retries: retries, delay: delay, keepAliveLease: timeout)))
    }
}

/// A job error that crosses processes as itself (registered as "test.Rejection").
struct HelperRejection: Error, Codable {
    var code: Int
    var reason: String
}

/// Prints a line and flushes at once: the parent test reacts to each line.
func say(_ line: String) {
    print(line)
    fflush(nil)
}
