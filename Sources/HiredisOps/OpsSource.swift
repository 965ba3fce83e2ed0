import Foundation
import Hiredis
import LockKit
import QueueKit

/// Where an operator tool reads from: one Redis deployment and the prefixes of the
/// modules on it. Everything is read through the modules' own introspection calls
/// (``WorkQueue/queueSummaries()``, ``LockInspector``, ``RedisJobStore/counts()``…), never
/// a second copy of their key layout.
public struct OpsSource: Sendable {
    /// The commands connection.
    public let client: any RedisClient
    /// The work queue under the queue prefix (read-only use, and the operator actions).
    public let workQueue: WorkQueue
    /// The locks and semaphores under the lock prefix.
    public let locks: LockInspector
    /// The Redis job store, or `nil` when a file store is read instead.
    public let redisJobs: RedisJobStore<String>?
    /// The file job store (`--dir`), if any.
    public let fileJobs: FileJobStore<String>?

    /// A source that reads the modules under `prefixes` through `client` (and the file job
    /// store in `jobsDirectory`, when given, instead of the Redis one).
    ///
    /// - Throws: `RedisError` `invalidArgument` for a bad prefix, before anything is sent.
    public init(client: any RedisClient, subscriber: RedisSubscriber, prefixes: OpsPrefixes = OpsPrefixes(),
                workerTimeout: Duration? = .seconds(3), jobsDirectory: URL? = nil) throws {
        self.client = client
        var options = WorkQueueOptions(prefix: prefixes.queue)
        options.workerTimeout = workerTimeout
        if let workerTimeout, options.heartbeatInterval >= workerTimeout { options.heartbeatInterval = workerTimeout / 2 }
        workQueue = try WorkQueue(client: client, subscriber: subscriber, options: options)
        locks = try LockInspector(client: client, lockPrefix: prefixes.lock)
        if let jobsDirectory {
            fileJobs = try FileJobStore<String>(directory: jobsDirectory, retention: nil)
            redisJobs = nil
        } else {
            fileJobs = nil
            redisJobs = try RedisJobStore<String>(client: client, prefix: prefixes.jobs, retention: nil)
        }
    }

    /// The job store's counts (file or Redis).
    public func jobCounts() async throws -> JobCounts {
        if let fileJobs { return try await fileJobs.counts() }
        return try await redisJobs?.counts() ?? JobCounts()
    }

    /// A job's state, as a word: `pending` (with its version), `fulfilled` or `unknown`.
    public func jobState(_ id: String) async throws -> JobStateReport {
        let job = try JobID(id)
        let state: JobState
        if let fileJobs { state = try await fileJobs.state(job) } else { state = try await redisJobs?.state(job) ?? .unknown }
        switch state {
        case .pending(let version): return JobStateReport(id: job.rawValue, state: "pending", version: version)
        case .fulfilled: return JobStateReport(id: job.rawValue, state: "fulfilled", version: nil)
        case .unknown: return JobStateReport(id: job.rawValue, state: "unknown", version: nil)
        }
    }

    /// Everything at once: queues, workers, locks, semaphores and job counts.
    public func summary() async throws -> OpsSummary {
        OpsSummary(queues: try await workQueue.queueSummaries(), workers: try await workQueue.workerSummaries(),
                   locks: try await locks.locks(), semaphores: try await locks.semaphores(), jobs: try await jobCounts())
    }
}

/// The key prefixes of the three modules.
public struct OpsPrefixes: Sendable, Hashable {
    /// LockKit's ``CallbackQueueOptions/lockPrefix``.
    public var lock: String
    /// The work queue's ``WorkQueueOptions/prefix``.
    public var queue: String
    /// The Redis job store's prefix.
    public var jobs: String
    /// The modules' defaults unless given.
    public init(lock: String = "dlock:", queue: String = "worqr", jobs: String = "jobstore") {
        self.lock = lock
        self.queue = queue
        self.jobs = jobs
    }
}

/// A job's state for output.
public struct JobStateReport: Sendable, Hashable, Codable {
    /// The job id.
    public let id: String
    /// `pending`, `fulfilled` or `unknown`.
    public let state: String
    /// A pending job's request version.
    public let version: Int?
}

/// One snapshot of a deployment (``OpsSource/summary()``), as the CLI's `--json` and the
/// dashboard's `api/summary` give it.
public struct OpsSummary: Sendable, Hashable, Codable {
    /// Every queue that holds a task.
    public var queues: [QueueSummary]
    /// Every registered worker.
    public var workers: [WorkerSummary]
    /// Every held lock.
    public var locks: [LockInfo]
    /// Every semaphore with a permit held.
    public var semaphores: [SemaphoreInfo]
    /// The job store's counts.
    public var jobs: JobCounts

    /// A snapshot of these figures.
    public init(queues: [QueueSummary], workers: [WorkerSummary], locks: [LockInfo], semaphores: [SemaphoreInfo], jobs: JobCounts) {
        self.queues = queues
        self.workers = workers
        self.locks = locks
        self.semaphores = semaphores
        self.jobs = jobs
    }
}

/// A dead letter for output.
public struct DeadLetterReport: Sendable, Hashable, Codable {
    /// The dead letter's id (for retry and purge).
    public let id: String
    /// The task, as UTF-8 text.
    public let task: String
    /// How many times it was delivered.
    public let deliveries: Int
    /// Why it was last given back.
    public let error: String

    /// The report of `letter`.
    public init(_ letter: DeadLetter) {
        id = letter.id
        task = letter.string
        deliveries = letter.deliveries
        error = letter.reason
    }
}

/// JSON as the tools print it: sorted keys, so output is stable.
public func opsJSON<T: Encodable>(_ value: T, pretty: Bool = false) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = pretty ? [.sortedKeys, .prettyPrinted] : [.sortedKeys]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
