// `make demo`: HiredisKit doing its job across OS processes on a throwaway redis-server.
// Without arguments it is the conductor; `hiredis-demo child <part> …` are the processes
// it spawns.
import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport

@main
struct Demo {
    static func main() async {
        let arguments = CommandLine.arguments
        do {
            if arguments.count > 2 && arguments[1] == "child" {
                try await Child.run(Array(arguments.dropFirst(2)))
                exit(0)
            }
            exit(try await Conductor().run() ? 0 : 1)
        } catch {
            FileHandle.standardError.write(Data("hiredis-demo: \(error)\n".utf8))
            exit(2)
        }
    }
}

/// Prints a line at once (children and parent share the terminal).
func say(_ line: String) {
    print(line)
    fflush(nil)
}

struct Claim {
    let part: String
    let claim: String
    let observed: String
    let held: Bool
}

final class Conductor {
    var claims: [Claim] = []
    let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path

    func check(_ part: String, _ claim: String, _ observed: String, _ held: Bool) {
        claims.append(Claim(part: part, claim: claim, observed: observed, held: held))
        say("   \(held ? "✓" : "✗") \(claim): \(observed)")
    }

    func spawn(_ arguments: [String]) throws -> ChildProcess {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["child"] + arguments
        try process.run()
        return process
    }

    func wait(_ processes: [ChildProcess]) {
        for process in processes { process.waitUntilExit() }
    }

    func run() async throws -> Bool {
        let server = try await RedisServer.start()
        let url = "redis://127.0.0.1:\(server.port)"
        say("HiredisKit demo — throwaway redis-server on 127.0.0.1:\(server.port) (pid \(server.pid.map(String.init) ?? "?"))")
        let redis = try await RedisConnection.connect(server.configuration)
        defer { say("stopping redis-server") }

        // 1. Fanout
        say("\n1. fanout: 4 processes × 25 callers ask for the same expensive value")
        let id = "demo:report:\(UUID().uuidString.prefix(8))"
        wait(try (0..<4).map { _ in try spawn(["fanout", url, id]) })
        let runs = try await redis.send("GET", id + ":runs").decode(Int?.self) ?? 0
        let served = try await redis.send("GET", id + ":served").decode(Int?.self) ?? 0
        check("fanout", "the expensive job ran once", "\(runs) run(s)", runs == 1)
        check("fanout", "100 callers got its value", "\(served) caller(s)", served == 100)

        // 2. Lock
        say("\n2. lock: 4 processes × 25 read-modify-write cycles on one counter, with fencing tokens")
        let resource = "demo:resource:\(UUID().uuidString.prefix(8))"
        wait(try (0..<4).map { _ in try spawn(["lock", url, resource]) })
        let counter = try await redis.send("GET", resource).decode(Int?.self) ?? 0
        let fences = try await redis.send("LRANGE", resource + ":fences", 0, -1).decode([Int].self)
        let increasing = zip(fences, fences.dropFirst()).allSatisfy { $0 < $1 }
        check("lock", "no lost update (one holder at a time)", "counter = \(counter) of 100", counter == 100)
        check("lock", "fencing tokens strictly increase", "\(fences.count) tokens, \(fences.first ?? 0)…\(fences.last ?? 0)",
              increasing && fences.count == 100)

        // 3. Work queue
        say("\n3. work queue: 1,000 tasks, 3 worker processes, one killed with kill -9 mid-way")
        let prefix = "demo\(UUID().uuidString.prefix(8).lowercased())"
        let producer = try WorkQueue(client: redis, subscriber: try await RedisSubscriber.connect(server.configuration),
                                     options: WorkQueueOptions(prefix: prefix))
        try await producer.enqueue("thumbnails", (0..<1000).map { "image-\($0).png" })
        let workers = try (0..<3).map { _ in try spawn(["worker", url, prefix]) }
        let done = prefix + ":done"
        while try await redis.send("HLEN", done).decode(Int.self) < 300 { try await Task.sleep(for: .milliseconds(20)) }
        let victim = workers[0]
        let held = try await redis.send("HLEN", done).decode(Int.self)
        kill(victim.processIdentifier, SIGKILL)
        say("   killed worker pid \(victim.processIdentifier) with kill -9 after \(held) tasks were done")
        var last = -1
        while true {
            let count = try await redis.send("HLEN", done).decode(Int.self)
            if count >= 1000 { break }
            if count / 250 != last / 250 { say("   … \(count) / 1000 done") }
            last = count
            try await Task.sleep(for: .milliseconds(50))
        }
        wait(workers)
        let finished = try await redis.send("HLEN", done).decode(Int.self)
        let recovered = try await redis.send("GET", prefix + ":recovered").decode(Int?.self) ?? 0
        let left = try await producer.countQueue("thumbnails")
        let inFlight = try await producer.getProcesses("thumbnails").count
        check("queue", "every task done", "\(finished) / 1000", finished == 1000)
        check("queue", "nothing left queued or in flight", "\(left) queued, \(inFlight) in flight", left == 0 && inFlight == 0)
        check("queue", "the killed worker's tasks were recovered by its peers", "\(recovered) recovered", recovered > 0)
        let twice = try await redis.send("HVALS", done).decode([Int].self).filter { $0 > 1 }.count
        say("   \(twice) task(s) ran twice: the killed worker had done them but not yet finished them")

        // 4. Job store (file backend: no Redis involved)
        say("\n4. job store (file backend): 20 jobs created, 2 processes pull and fulfil, targets notified")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hiredis-demo-jobs-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try FileJobStore<String>(directory: directory)
        var ids: [JobID] = []
        for index in 0..<20 {
            let id = try await store.create(request: "photo-\(index).jpg")
            try await store.queue(id, target: "user-\(index)@example.com")
            ids.append(id)
        }
        wait(try (0..<2).map { _ in try spawn(["jobs", directory.path]) })
        var notified: [String: String] = [:]
        while let notification = try await store.pullNotification() {
            for target in notification.waiting { notified[target] = String(decoding: notification.value, as: UTF8.self) }
            try await notification.done(removing: notification.waiting)
        }
        var fulfilled = 0
        for id in ids where try await store.state(id) == .fulfilled { fulfilled += 1 }
        let right = (0..<20).allSatisfy { notified["user-\($0)@example.com"] == "thumbnail of photo-\($0).jpg" }
        check("jobs", "every job fulfilled", "\(fulfilled) / 20", fulfilled == 20)
        check("jobs", "every target notified with its job's value", "\(notified.count) / 20", notified.count == 20 && right)

        await redis.close()
        await server.kill()
        say("\nsummary")
        say("| part | claim | observed | held |")
        say("|---|---|---|---|")
        for claim in claims { say("| \(claim.part) | \(claim.claim) | \(claim.observed) | \(claim.held ? "yes" : "NO") |") }
        let ok = claims.allSatisfy(\.held)
        say(ok ? "\nall claims held" : "\nSOME CLAIMS DID NOT HOLD")
        return ok
    }
}

enum Child {
    static func run(_ arguments: [String]) async throws {
        switch arguments[0] {
        case "fanout": try await fanout(url: arguments[1], id: arguments[2])
        case "lock": try await lock(url: arguments[1], resource: arguments[2])
        case "worker": try await worker(url: arguments[1], prefix: arguments[2])
        case "jobs": try await jobs(directory: arguments[1])
        default: throw RedisError.invalidArgument("unknown part \(arguments[0])")
        }
    }

    static func fanout(url: String, id: String) async throws {
        let configuration = try RedisConfiguration(url: url)
        let client = try await RedisConnection.connect(configuration)
        let queue = try CallbackQueue(client: client, pubsub: try await RedisSubscriber.connect(configuration),
                                      options: CallbackQueueOptions(channel: "demo:fanout"))
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<25 {
                group.addTask {
                    let value = try await queue.fanout(id, timeout: .seconds(30)) { () async throws -> String in
                        try await client.send("INCR", id + ":runs")
                        say("   pid \(getpid()) runs the expensive job (1 s)…")
                        try await Task.sleep(for: .seconds(1))
                        return "report-\(id.suffix(8))"
                    }
                    if !value.isEmpty { try await client.send("INCR", id + ":served") }
                }
            }
            try await group.waitForAll()
        }
        say("   pid \(getpid()): 25 callers got the value")
    }

    static func lock(url: String, resource: String) async throws {
        let configuration = try RedisConfiguration(url: url)
        let client = try await RedisConnection.connect(configuration)
        let queue = try CallbackQueue(client: client, pubsub: try await RedisSubscriber.connect(configuration),
                                      options: CallbackQueueOptions(channel: "demo:locks", lock: LockOptions(
                                        timeout: .seconds(5), retries: 100_000, delay: .milliseconds(2))))
        var tokens: [Int64] = []
        for _ in 0..<25 {
            try await queue.withLock(resource + ":lock") { lock in
                let value = try await client.send("GET", resource).decode(Int?.self) ?? 0
                try await client.send("SET", resource, value + 1)
                try await client.send("RPUSH", resource + ":fences", lock.fencingToken)
            }
            tokens.append(try await client.send("LINDEX", resource + ":fences", -1).decode(Int64.self))
        }
        say("   pid \(getpid()): 25 cycles done, last fencing token \(tokens.last ?? 0)")
    }

    static func worker(url: String, prefix: String) async throws {
        let configuration = try RedisConfiguration(url: url)
        let client = try await RedisConnection.connect(configuration)
        var options = WorkQueueOptions(prefix: prefix, heartbeatInterval: .milliseconds(200),
                                       workerTimeout: .milliseconds(1500), cleanupInterval: .milliseconds(500))
        options.pollInterval = .milliseconds(500)
        let queue = try WorkQueue(client: client, subscriber: try await RedisSubscriber.connect(configuration), options: options)
        let worker = try await queue.startWorker()
        say("   worker pid \(getpid()) started")
        let run = Task {
            try await worker.run("thumbnails", concurrency: 4) { process in
                try await Task.sleep(for: .milliseconds(10))   // the "work"
                if process.deliveries > 1 { try await client.send("INCR", prefix + ":recovered") }
                try await client.send("HINCRBY", prefix + ":done", process.task, 1)
            }
        }
        while try await client.send("HLEN", prefix + ":done").decode(Int.self) < 1000 {
            try await Task.sleep(for: .milliseconds(100))
        }
        run.cancel()
        _ = await run.result
        try await worker.failWorker()
        say("   worker pid \(getpid()) finished")
    }

    static func jobs(directory: String) async throws {
        let store = try FileJobStore<String>(directory: URL(fileURLWithPath: directory))
        var count = 0
        while let lease = try await store.pullWork() {
            let photo = String(decoding: lease.request, as: UTF8.self)
            try await Task.sleep(for: .milliseconds(20))   // the "work"
            do {
                try await store.fulfill(lease.id, value: "thumbnail of \(photo)")
                count += 1
            } catch let error as JobStoreError where error.code == .alreadyFulfilled {}
            try await lease.release()
        }
        say("   job process pid \(getpid()) fulfilled \(count) job(s)")
    }
}
