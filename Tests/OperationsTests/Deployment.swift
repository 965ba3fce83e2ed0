import Foundation
import Hiredis
import HiredisOps
import LockKit
import QueueKit
import RedisTestSupport
import Testing

/// A Redis populated as a deployment would be, with figures the tests know:
/// - queue `emails`: 2 waiting, 1 in flight (worker `worker-1`), 1 dead letter (error `smtp down`);
///   queue `reports`: 3 waiting;
/// - lock `report` held; semaphore `printer` with 2 of 3 permits held;
/// - Redis jobs: 2 pending (1 leased), 2 fulfilled (1 with a target waiting to be notified);
/// - a file job store: 1 pending, 1 fulfilled.
struct Deployment {
    let redis: TestRedis
    let prefixes: OpsPrefixes
    let workQueue: WorkQueue
    let worker: Worker
    let lockQueue: CallbackQueue
    let lock: Lock
    let permits: [SemaphorePermit]
    let lease: JobLease
    let jobs: (pendingLeased: JobID, pending: JobID, notifying: JobID, fulfilled: JobID)
    let fileDirectory: URL
    let fileJobs: (pending: JobID, fulfilled: JobID)
    static let workerTimeout: Duration = .seconds(30)

    static func start() async throws -> Deployment {
        let redis = try await TestRedis.start()
        let tag = UUID().uuidString.prefix(8).lowercased()
        let prefixes = OpsPrefixes(lock: "lk\(tag):", queue: "q\(tag)", jobs: "j\(tag)")

        var options = WorkQueueOptions(prefix: prefixes.queue, heartbeatInterval: .seconds(1), workerTimeout: workerTimeout)
        // Two deliveries: a task handed back once (by the operator's fail-worker, or by the
        // worker itself when it notices it was failed: the two race) returns to its queue.
        options.maxDeliveries = 2
        options.workerID = "worker-1"
        let workQueue = try WorkQueue(client: try await redis.connect(), subscriber: try await redis.subscriber(), options: options)
        try await workQueue.enqueue("emails", ["to:ada", "to:grace", "to:alan", "to:barbara"])
        try await workQueue.enqueue("reports", ["r1", "r2", "r3"])
        // A queue with a delayed task, paused, with limits: shown as such.
        try await workQueue.enqueue("digests", "weekly", options: TaskOptions(delay: .seconds(3600)))
        try await workQueue.pause("digests")
        try await workQueue.setLimits("digests", QueueLimits(rate: RateLimit(50, per: .seconds(1)), concurrency: 4))
        let worker = try await workQueue.startWorker()
        _ = try await worker.startWork("emails")
        let held = try await worker.dequeue("emails", max: 2)
        _ = try await worker.stop(held[1], reason: "retry")           // to:grace, back to the front
        let again = try #require(try await worker.dequeue("emails"))
        _ = try await worker.stop(again, reason: "smtp down")         // its second delivery: dead-lettered

        let lockQueue = try CallbackQueue(client: try await redis.connect(), pubsub: try await redis.subscriber(),
                                          options: CallbackQueueOptions(channel: "ops-\(tag)", lockPrefix: prefixes.lock,
                                                                        lock: LockOptions(timeout: .seconds(60), keepAliveLease: .seconds(30))))
        let lock = try await lockQueue.once("report")
        let printer = try lockQueue.semaphore("printer", permits: 3)
        let permits = [try await printer.take(), try await printer.take()]

        let store = try RedisJobStore<String>(client: try await redis.connect(), prefix: prefixes.jobs, leaseTimeout: .seconds(30))
        _ = try await store.create(request: "a")
        let lease = try #require(try await store.pullWork())
        let pending = try await store.create(request: "b")
        let notifying = try await store.create(request: "c")
        let fulfilled = try await store.create(request: "d")
        try await store.queue(notifying, target: "https://example.invalid/hook")
        try await store.fulfill(notifying, value: "done")
        try await store.fulfill(fulfilled, value: "done")

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ops-jobs-" + UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let files = try FileJobStore<String>(directory: directory)
        let filePending = try await files.create(request: "x")
        let fileFulfilled = try await files.create(request: "y")
        try await files.fulfill(fileFulfilled, value: "z")

        return Deployment(redis: redis, prefixes: prefixes, workQueue: workQueue, worker: worker, lockQueue: lockQueue,
                          lock: lock, permits: permits, lease: lease,
                          jobs: (lease.id, pending, notifying, fulfilled), fileDirectory: directory,
                          fileJobs: (filePending, fileFulfilled))
    }

    /// The command-line options that point `hiredis-admin` at this deployment.
    var adminOptions: [String] { adminOptions(url: redis.url) }

    /// The command-line options that point `hiredis-admin` at this deployment through
    /// `url` (e.g. as another ACL user).
    func adminOptions(url: String) -> [String] {
        ["--url", url, "--lock-prefix", prefixes.lock, "--queue-prefix", prefixes.queue, "--jobs-prefix", prefixes.jobs,
         "--worker-timeout-ms", "\(Self.workerTimeout.components.seconds * 1000)"]
    }

    func source() async throws -> OpsSource {
        try OpsSource(client: try await redis.connect(), subscriber: try await redis.subscriber(), prefixes: prefixes,
                      workerTimeout: Self.workerTimeout)
    }
}

/// A run of the `hiredis-admin` executable (built next to the test bundle).
struct AdminRun {
    let status: Int32
    let stdout: String
    let stderr: String

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("hiredis-admin")
    }

    /// Runs it to its end, with `input` on its standard input.
    static func run(_ arguments: [String], input: String = "") async throws -> AdminRun {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("admin-" + UUID().uuidString)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let files = ["in", "out", "err"].map { directory.appendingPathComponent($0) }
        try Data(input.utf8).write(to: files[0])
        _ = FileManager.default.createFile(atPath: files[1].path, contents: nil)
        _ = FileManager.default.createFile(atPath: files[2].path, contents: nil)
        let process = ChildProcess()
        process.executableURL = executable
        process.arguments = arguments
        process.standardInput = try FileHandle(forReadingFrom: files[0])
        process.standardOutput = try FileHandle(forWritingTo: files[1])
        process.standardError = try FileHandle(forWritingTo: files[2])
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        return AdminRun(status: status, stdout: try String(contentsOf: files[1], encoding: .utf8),
                        stderr: try String(contentsOf: files[2], encoding: .utf8))
    }

    /// The standard output parsed as JSON.
    func json<T: Decodable>(_ type: T.Type) throws -> T {
        try JSONDecoder().decode(type, from: Data(stdout.utf8))
    }

    /// The output line that starts with `first` (a table row), split into cells.
    func row(_ first: String) -> [String]? {
        stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
            .first { $0.first == first }
    }
}
