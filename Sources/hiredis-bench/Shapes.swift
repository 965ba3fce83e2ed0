import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport
import Synchronization

/// What every shape needs: the server and how big a run is.
struct Context: Sendable {
    let configuration: RedisConfiguration
    /// The server's URL, for child processes.
    let url: String
    /// SHA1s of LockKit's acquire (one key) and release scripts, loaded on the server.
    let lockScripts: (acquire: String, release: String)
    /// SHA1s of the work queue's enqueue, dequeue and finish scripts, loaded on the server.
    let queueScripts: (enqueue: String, dequeue: String, finish: String)
    let host: String
    let port: Int
    let quick: Bool
    let executable: String
    /// The cluster of the cluster shapes, started by the first of them.
    let cluster = BenchCluster()

    func count(_ full: Int) -> Int { quick ? max(full / 20, 200) : full }
}

/// One line of the table: our measurement, and optionally redis-benchmark's.
struct Shape: Sendable {
    let name: String
    let unit: String
    let count: Int
    let reference: Reference?
    let target: Double?
    let ours: @Sendable (Context, Int) async throws -> Run
    /// A floor in `unit` (for shapes without a reference).
    var floor: Double? = nil
    var note: (@Sendable () -> String?)? = nil
    /// redis-benchmark runs of the steps of one operation (a lock's two scripts), whose
    /// times add up to the best a client could do on this server; labelled `bestLabel`.
    var steps: [Reference] = []
    var bestLabel = ""
    /// The least fraction of the best (`steps`) ours should reach.
    var bestTarget: Double? = nil
    /// Our client on a single node, measured in each round right after `ours`.
    var baseline: Baseline? = nil
}

func shapes(_ context: Context) -> [Shape] {
    let value = "xxx"   // redis-benchmark's default 3-byte value
    let fanoutNotes = Locked<[String]>([])
    let queueLimitFound = Locked<[Double]>([])
    let standalone: [Shape] = [
        Shape(name: "sequential SET, 1 connection, 1 in flight", unit: "ops/s", count: context.count(100_000),
              reference: Reference(label: "redis-benchmark -t set -c 1", test: "SET", arguments: ["-t", "set", "-c", "1"]),
              target: 0.9) { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            return try await timed(count) { tick in
                for _ in 0..<count {
                    let started = now()
                    try await connection.send("SET", "key:__rand_int__", value)
                    tick(now() - started)
                }
            }
        },
        Shape(name: "sequential SET from the main actor (top-level code)", unit: "ops/s", count: context.count(100_000),
              reference: Reference(label: "redis-benchmark -t set -c 1", test: "SET", arguments: ["-t", "set", "-c", "1"]),
              target: 0.9) { context, count in
            try await mainActorSequentialSET(context, count)
        },
        Shape(name: "50 tasks, ONE connection (auto-pipelining)", unit: "ops/s", count: context.count(200_000),
              reference: Reference(label: "redis-benchmark -t set -c 50", test: "SET", arguments: ["-t", "set", "-c", "50"]),
              target: 1.0) { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            return try await timed(count) { tick in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<50 {
                        group.addTask {
                            for _ in 0..<(count / 50) {
                                let started = now()
                                try await connection.send("SET", "key:__rand_int__", value)
                                tick(now() - started)
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        },
        Shape(name: "explicit pipeline, 50 per batch", unit: "ops/s", count: context.count(500_000),
              reference: Reference(label: "redis-benchmark -t set -c 1 -P 50", test: "SET", arguments: ["-t", "set", "-c", "1", "-P", "50"]),
              target: 1.0) { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            let batch = Array(repeating: RedisCommand("SET", "key:__rand_int__", value), count: 50)
            return try await timed(count) { tick in
                for _ in 0..<(count / 50) {
                    let started = now()
                    _ = try await connection.pipeline(batch)
                    tick(now() - started)
                }
            }
        },
        Shape(name: "GET of a 16 KiB value, 1 connection", unit: "ops/s", count: context.count(50_000),
              reference: Reference(label: "redis-benchmark -t get -d 16384 -c 1", test: "GET",
                                   arguments: ["-t", "set,get", "-d", "16384", "-c", "1"]),
              target: 0.9) { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            try await connection.send("SET", "key:__rand_int__", [UInt8](repeating: 0x78, count: 16384))
            return try await timed(count) { tick in
                for _ in 0..<count {
                    let started = now()
                    _ = try await connection.send("GET", "key:__rand_int__")
                    tick(now() - started)
                }
            }
        },
        Shape(name: "lock acquire+release, uncontended, sequential", unit: "cycles/s", count: context.count(20_000),
              reference: Reference(label: "redis-benchmark -t set -c 1", test: "SET", arguments: ["-t", "set", "-c", "1"]),
              target: nil, ours: { context, count in
            let queue = try await callbackQueue(context)
            return try await timed(count) { tick in
                for _ in 0..<count {
                    let started = now()
                    let lock = try await queue.once("bench:uncontended")
                    try await lock.release()
                    tick(now() - started)
                }
            }
        },
              // The same two EVALSHAs from redis-benchmark: an acquire of a fresh key (so that
              // it takes the lock), and a release (of a key that is not there, which is
              // cheaper than ours: the best is, if anything, flattered).
              steps: [
                Reference(label: "acquire", test: nil, arguments: [
                    "-c", "1", "-r", "100000000", "EVALSHA", context.lockScripts.acquire, "2",
                    "bench:best:__rand_int__", "{bench:best:__rand_int__}:fence", "token", "10000"]),
                Reference(label: "release", test: nil, arguments: [
                    "-c", "1", "-r", "100000000", "EVALSHA", context.lockScripts.release, "1", "bench:best:__rand_int__", "token"]),
              ],
              bestLabel: "redis-benchmark running the same acquire and release scripts one after the other",
              bestTarget: 0.95),
        Shape(name: "lock contended: 8 tasks, one key (p50/p99: wait)", unit: "cycles/s", count: context.count(4_000),
              reference: nil, target: nil) { context, count in
            let queue = try await callbackQueue(context, retries: 1_000_000, delay: .milliseconds(1))
            return try await timed(count) { tick in
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for _ in 0..<8 {
                        group.addTask {
                            for _ in 0..<(count / 8) {
                                let started = now()
                                try await queue.withLock("bench:contended", autoExtend: false) { _ in tick(now() - started) }
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
        },
        Shape(name: "fanout: 100 callers, one id, 2 processes (p50/p99: completion→caller)", unit: "calls/s", count: 100,
              reference: nil, target: nil, ours: { context, _ in
            let (run, note) = try await fanout(context)
            fanoutNotes.withLock { $0.append(note) }
            return run
        }, note: { fanoutNotes.withLock { $0.joined(separator: "; ") } }),
        Shape(name: "queue: enqueue→dequeue→finish, 1 worker", unit: "tasks/s", count: context.count(20_000),
              reference: nil, target: nil) { context, count in
            try await queueRun(context, tasks: count, workers: 1)
        },
        Shape(name: "queue: enqueue→dequeue→finish, 4 workers", unit: "tasks/s", count: context.count(40_000),
              reference: nil, target: nil, ours: { context, count in
            try await queueRun(context, tasks: count, workers: 4)
        }, floor: 20_000, note: { queueLimitNote(queueLimitFound) },
              steps: queueLimitSteps(context, count: context.count(40_000), found: queueLimitFound),
              bestLabel: "redis-benchmark running the queue's enqueue (1,000 tasks a script, -c 1), dequeue and finish (16 a script, -c 4) one after the other",
              bestTarget: 0.8),
    ] + queueFeatureShapes(context) + [
        Shape(name: "job store (redis): create→pull→fulfil→notify", unit: "jobs/s", count: context.count(3_000),
              reference: nil, target: nil) { context, count in
            let client = try await RedisConnection.connect(context.configuration)
            let store = try RedisJobStore<String>(client: client, prefix: "bench\(UInt32.random(in: 0...UInt32.max))",
                                                  respond: { _, _, _ in true })
            return try await jobStoreRun(store, count)
        },
        Shape(name: "job store (file): create→pull→fulfil→notify", unit: "jobs/s", count: context.count(1_000),
              reference: nil, target: nil) { _, count in
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-jobs-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let store = try FileJobStore<String>(directory: directory, respond: { _, _, _ in true })
            return try await jobStoreRun(store, count)
        },
        Shape(name: "job store (file): 16 concurrent callers", unit: "jobs/s", count: context.count(2_000),
              reference: nil, target: nil) { _, count in
            try await fileJobStoreConcurrentRun(callers: 16, count)
        },
    ]
    return standalone + clusterShapes(context)
}

func callbackQueue(_ context: Context, retries: Int = 0, delay: Duration = .milliseconds(100)) async throws -> CallbackQueue {
    try await callbackQueue(context.configuration, retries: retries, delay: delay)
}

func callbackQueue(_ configuration: RedisConfiguration, retries: Int = 0, delay: Duration = .milliseconds(100)) async throws -> CallbackQueue {
    let client = try await RedisConnection.connect(configuration)
    let pubsub = try await RedisSubscriber.connect(configuration)
    return try CallbackQueue(client: client, pubsub: pubsub, options: CallbackQueueOptions(
        channel: "bench:\(UUID().uuidString)", lock: LockOptions(timeout: .seconds(10), retries: retries, delay: delay, jitter: 0.5)))
}

/// What the tasks of a queue run are (issue 18's shapes; `.plain` is the worqr shape).
enum QueueTaskKind: Sendable {
    case plain
    /// Delayed by 1 ms: through the delayed set, due at once (a delay of 0 is not delayed).
    case delayed
    /// Priorities 1…10 (the prioritized set instead of the list).
    case prioritized
    /// A retry policy of 2 attempts 0 ms apart, no jitter; the handler fails each task's
    /// first attempt (so every task runs twice, through the delayed set once).
    case retried
}

/// Issue 18: enqueue→complete with 4 workers for delayed, prioritised and retried tasks,
/// each beside the plain shape measured in the same round; and delayed-task lateness.
func queueFeatureShapes(_ context: Context) -> [Shape] {
    let plain = Baseline(label: "plain tasks, 4 workers, same round") { context, count in
        try await queueRun(context, tasks: count, workers: 4)
    }
    let lateness = Locked<[String]>([])
    return [
        Shape(name: "queue: 4 workers, delayed tasks (due at once: 1 ms)", unit: "tasks/s", count: context.count(40_000),
              reference: nil, target: nil, ours: { context, count in
            try await queueRun(context, tasks: count, workers: 4, kind: .delayed)
        }, baseline: plain),
        Shape(name: "queue: 4 workers, prioritised tasks (1…10)", unit: "tasks/s", count: context.count(40_000),
              reference: nil, target: nil, ours: { context, count in
            try await queueRun(context, tasks: count, workers: 4, kind: .prioritized)
        }, baseline: plain),
        Shape(name: "queue: 4 workers, retried tasks (fail once, 0 ms backoff; 2 runs each)", unit: "tasks/s",
              count: context.count(40_000), reference: nil, target: nil, ours: { context, count in
            try await queueRun(context, tasks: count, workers: 4, kind: .retried)
        }, baseline: plain),
        Shape(name: "queue: delayed-task lateness, 4 workers, due over 1 s (p50/p99: start − due, server clock)", unit: "tasks/s",
              count: context.count(4_000), reference: nil, target: nil, ours: { context, count in
            let (run, note) = try await latenessRun(context, tasks: count, workers: 4)
            lateness.withLock { $0.append(note) }
            return run
        }, note: { lateness.withLock { Array(Set($0)).sorted().joined(separator: "; ") } }),
    ]
}

/// `tasks` tasks due 0…1 s after their enqueue (200 due times, 5 ms apart), run by
/// `workers` workers; the latencies are each task's start minus its due time, both from
/// its record (the server's clock, ms).
func latenessRun(_ context: Context, tasks: Int, workers: Int) async throws -> (Run, String) {
    var options = WorkQueueOptions(prefix: "bench\(UInt32.random(in: 0...UInt32.max))")
    options.pollInterval = .seconds(1)
    options.completedRetention = TaskRetention(maxAge: .seconds(3600), maxCount: tasks)
    let fleet = try await QueueFleet.start(context, options: options, queue: "late", workers: workers, tasks: tasks)
    let producer = fleet.producer
    let batches = 200
    var ids: [String] = []
    let started = now()
    for batch in 0..<batches {
        let size = tasks / batches + (batch < tasks % batches ? 1 : 0)
        guard size > 0 else { continue }
        let result = try await producer.enqueue("late", (0..<size).map { "late-\(batch)-\($0)" },
                                                options: TaskOptions(delay: .milliseconds(1 + batch * 5)))
        ids += result.ids
    }
    await fleet.allDone()
    let seconds = Double(now() - started) / 1e9
    await fleet.stop()
    var latencies: [UInt64] = []
    var early = 0
    for id in ids {
        guard let info = try await producer.task("late", id), let start = info.startedAt, let due = info.dueAt else {
            throw BenchError("task \(id) has no start or due time")
        }
        let late = start.timeIntervalSince(due)
        if late < 0 { early += 1 }
        latencies.append(UInt64(max(0, late) * 1e9))
    }
    guard early == 0 else { throw BenchError("\(early) delayed tasks started before their due time") }
    return (Run(operations: tasks, seconds: seconds, latencies: latencies), "\(tasks) delayed tasks, none started early")
}

func queueRun(_ context: Context, tasks: Int, workers: Int, kind: QueueTaskKind = .plain) async throws -> Run {
    var options = WorkQueueOptions(prefix: "bench\(UInt32.random(in: 0...UInt32.max))")
    options.pollInterval = .seconds(1)
    let fleet = try await QueueFleet.start(context, options: options, queue: "tasks", workers: workers, tasks: tasks,
                                           failFirstAttempt: kind == .retried)
    let producer = fleet.producer
    let run = try await timed(tasks) { _ in
        for (number, first) in stride(from: 0, to: tasks, by: 1000).enumerated() {
            let batch = (first..<min(first + 1000, tasks)).map { "task-\($0)" }
            switch kind {
            case .plain:
                try await producer.enqueue("tasks", batch)
            case .delayed:
                try await producer.enqueue("tasks", batch, options: TaskOptions(delay: .milliseconds(1)))
            case .prioritized:
                try await producer.enqueue("tasks", batch, options: TaskOptions(priority: 1 + number % 10))
            case .retried:
                try await producer.enqueue("tasks", batch,
                                           options: TaskOptions(retry: .fixed(attempts: 2, delay: .zero, jitter: 0)))
            }
        }
        await fleet.allDone()
    }
    await fleet.stop()
    return run
}

/// A producer and `workers` workers (concurrency 16 each) on `queue`, counting finished
/// tasks until `tasks` have run (the queue runs and the lateness run share it).
struct QueueFleet {
    let producer: WorkQueue
    private let finished: AsyncStream<Void>
    private let running: [Task<Void, any Error>]
    private let workers: [Worker]

    /// `failFirstAttempt`: every task's first attempt throws (the retried shape).
    static func start(_ context: Context, options: WorkQueueOptions, queue name: String, workers count: Int, tasks: Int,
                      failFirstAttempt: Bool = false) async throws -> QueueFleet {
        func queue() async throws -> WorkQueue {
            try WorkQueue(client: try await RedisConnection.connect(context.configuration),
                          subscriber: try await RedisSubscriber.connect(context.configuration), options: options)
        }
        let producer = try await queue()
        let done = Locked(0)
        let (finished, signal) = AsyncStream<Void>.makeStream()
        var running: [Task<Void, any Error>] = []
        var workers: [Worker] = []
        for _ in 0..<count {
            let worker = try await queue().startWorker()
            workers.append(worker)
            running.append(Task {
                try await worker.run(name, concurrency: 16) { process in
                    if failFirstAttempt && process.attempt == 1 { throw BenchError("the first attempt fails") }
                    if done.withLock({ $0 += 1; return $0 }) == tasks { signal.yield() }
                }
            })
        }
        return QueueFleet(producer: producer, finished: finished, running: running, workers: workers)
    }

    /// Returns once `tasks` tasks have run.
    func allDone() async {
        for await _ in finished { break }
    }

    /// Stops the workers and gives their tasks back.
    func stop() async {
        for task in running { task.cancel() }
        for task in running { _ = await task.result }
        for worker in workers { try? await worker.failWorker() }
    }
}

func jobStoreRun(_ store: some JobStore<String>, _ count: Int) async throws -> Run {
    try await timed(count) { tick in
        for index in 0..<count {
            let started = now()
            let id = try await store.create(request: "job-\(index)")
            try await store.queue(id, target: "target-\(index)")
            guard let lease = try await store.pullWork() else { throw BenchError("nothing to pull") }
            try await store.fulfill(lease.id, value: "value-\(index)")
            try await lease.release()
            tick(now() - started)
        }
    }
}

/// 2 child processes × 50 callers fan out one id: the job must run once; the latencies are
/// from the job's completion to each caller's return (wall clock, same host).
func fanout(_ context: Context) async throws -> (Run, String) {
    let admin = try await RedisConnection.connect(context.configuration)
    let id = "bench:fanout:\(UUID().uuidString)"
    let channel = "bench:fanout-channel:\(UUID().uuidString)"
    let started = now()
    let children = try (0..<2).map { _ in
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: context.executable)
        process.arguments = ["fanout-child", "--url", context.url, "--channel", channel, "--id", id, "--callers", "50"]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        return (process, output)
    }
    var receives: [Double] = []
    for (process, output) in children {
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError("a fanout child failed") }
        receives += String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { Double($0) }
    }
    let seconds = Double(now() - started) / 1e9
    let runs = try await admin.send("GET", id + ":runs").decode(Int.self)
    let completedAt = try await admin.send("GET", id + ":completed").decode(Double.self)
    guard receives.count == 100 else { throw BenchError("only \(receives.count) of 100 callers got the value") }
    guard runs == 1 else { throw BenchError("the fanout job ran \(runs) times") }
    await admin.close()
    let latencies = receives.map { UInt64(max(0, $0 - completedAt) * 1e9) }
    return (Run(operations: 100, seconds: seconds, latencies: latencies), "job runs: \(runs), callers served: \(receives.count)")
}

/// `jobStoreRun`'s chain by `callers` concurrent tasks on one file store (its group commit
/// shares their directory fsyncs); a caller fulfils whichever job it pulled.
func fileJobStoreConcurrentRun(callers: Int, _ count: Int) async throws -> Run {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("bench-jobs-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let store = try FileJobStore<String>(directory: directory, respond: { _, _, _ in true })
    return try await timed(count) { tick in
        try await withThrowingTaskGroup(of: Void.self) { group in
            for caller in 0..<callers {
                group.addTask {
                    for index in stride(from: caller, to: count, by: callers) {
                        let started = now()
                        let id = try await store.create(request: "job-\(index)")
                        try await store.queue(id, target: "target-\(index)")
                        // Another caller may hold the lease on every pending job this moment.
                        var pulled = try await store.pullWork()
                        for _ in 0..<1_000 where pulled == nil {
                            await Task.yield()
                            pulled = try await store.pullWork()
                        }
                        guard let lease = pulled else { throw BenchError("nothing to pull") }
                        try await store.fulfill(lease.id, value: "value-\(index)")
                        try await lease.release()
                        tick(now() - started)
                    }
                }
            }
            try await group.waitForAll()
        }
    }
}
