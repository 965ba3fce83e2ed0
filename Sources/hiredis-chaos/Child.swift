// A chaos worker process: runs every workload at once against the shared Redis and the
// shared file store, and writes what it did to its event log. The conductor kills, stops and
// restarts these processes; each one ends cleanly when the conductor's stop file appears.
import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport
import Synchronization

/// The figures every chaos process agrees on.
enum Settings {
    static let commandTimeout: Duration = .seconds(1)
    static let lockLease: Duration = .seconds(2)
    static let lockLanes = 2
    static let fanoutPeriodMillis: Int64 = 3000
    static let fanoutWindowMillis: Int64 = 300
    static let fanoutCallers = 5
    static let fanoutJob: Duration = .milliseconds(800)
    static let fanoutTimeout: Duration = .seconds(8)
    static let queuePrefix = "chaos"
    static let queueName = "tasks"
    static let queueConcurrency = 4
    static let workerTimeout: Duration = .seconds(3)
    static let maxDeliveries = 10
    /// Retried tasks (`r…`): their handler fails the first attempt; this many attempts,
    /// 200 ms apart (half of it jitter).
    static let retryAttempts = 3
    static let retryPolicy = RetryPolicy.fixed(attempts: retryAttempts, delay: .milliseconds(200), jitter: 0.5)
    /// Delayed tasks (`d…`) are due up to this long after their enqueue.
    static let maxDelayMillis = 2000
    static let jobLease: Duration = .seconds(2)
    static let jobPrefix = "chaosjobs"
    /// No operation may take longer than this (its commands time out after a second, and
    /// lock acquisition gives up after about two seconds of retries).
    static let operationLimitMillis: Int64 = 10_000
    static let fanoutLimitMillis: Int64 = 8_000 + 3_000

    /// On a cluster: how long a `WAIT` for one replica may block (it blocks the shared
    /// connection to that primary, so it stays well under the command timeout).
    static let replicationTimeoutMillis = 100
    static let replicationTimeout: Duration = .milliseconds(replicationTimeoutMillis)

    static func configuration(url: String) throws -> RedisConfiguration {
        configure(try RedisConfiguration(url: url))
    }

    /// The timeouts and reconnection of every connection (to the server, or to each node).
    static func configure(_ base: RedisConfiguration) -> RedisConfiguration {
        var configuration = base
        configuration.commandTimeout = commandTimeout
        configuration.connectTimeout = .seconds(1)
        configuration.reconnect = .exponentialBackoff(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(500))
        return configuration
    }

    /// A client for `target`: a connection, or a cluster client whose node connections
    /// have ``configure(_:)``'s settings.
    static func client(_ target: RedisTarget) async throws -> any RedisClient {
        switch target {
        case .single(let configuration): try await RedisConnection.connect(configure(configuration))
        case .cluster(let seeds, let node): try await RedisCluster.connect(RedisClusterConfiguration(seeds: seeds, node: configure(node)))
        }
    }

    /// A subscriber beside `client` (on a cluster, one that moves between nodes).
    static func subscriber(_ target: RedisTarget, client: any RedisClient) async throws -> RedisSubscriber {
        if let cluster = client as? RedisCluster { return try await cluster.subscriber() }
        guard case .single(let configuration) = target else { throw ChaosError("a cluster target needs a cluster client") }
        return try await RedisSubscriber.connect(configure(configuration))
    }

    static func queueOptions(cluster: Bool = false) -> WorkQueueOptions {
        var options = WorkQueueOptions(prefix: queuePrefix, heartbeatInterval: .milliseconds(500), workerTimeout: workerTimeout,
                                       cleanupInterval: .seconds(1), maxDeliveries: maxDeliveries)
        options.pollInterval = .seconds(1)
        options.reregisterAfterFailure = true
        options.shutdownGracePeriod = .seconds(2)
        if cluster { options.replicationTimeout = replicationTimeout }
        return options
    }

    /// On a cluster a lock is only handed out once a replica has it (and its fencing
    /// counter), so that a primary kill cannot hand the same token out twice; fewer
    /// retries keep an acquisition that keeps failing its `WAIT` under the operation limit.
    static func lockOptions(cluster: Bool = false) -> CallbackQueueOptions {
        var lock = LockOptions(timeout: lockLease, retries: cluster ? 60 : 100, delay: .milliseconds(20), keepAliveLease: lockLease)
        if cluster {
            lock.minReplicas = 1
            lock.replicationTimeout = replicationTimeout
        }
        return CallbackQueueOptions(channel: "chaos:events", lock: lock)
    }

    /// `WAIT 1` on the primary that holds `key` (after a write there on this client).
    static func waitForReplica(_ client: any RedisClient, key: String) async throws {
        let wait = RedisCommand("WAIT", 1, replicationTimeoutMillis)
        let acknowledged = try await client.send(wait, routedBy: Array(key.utf8), timeout: nil).decode(Int.self)
        guard acknowledged >= 1 else { throw ChaosError("no replica acknowledged the write within \(replicationTimeout)") }
    }
}

/// Retries `body` (a connect or a registration while Redis is down or stopped) for up to 30 s.
func retrying<T>(_ what: String, _ body: () async throws -> T) async throws -> T {
    let deadline = ContinuousClock.now + .seconds(30)
    while true {
        do { return try await body() } catch {
            if ContinuousClock.now > deadline { throw ChaosError("\(what) kept failing: \(error)") }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

struct Child {
    let directory: URL
    let url: String
    let name: String
    let log: EventLog
    let stopped = SharedFlag(false)

    init(directory: URL, url: String, name: String) throws {
        self.directory = directory
        self.url = url
        self.name = name
        log = try EventLog(path: directory.appendingPathComponent("logs/\(name).log").path)
    }

    var isStopped: Bool { stopped.isOn }

    func run() async throws {
        log.record("P", String(getpid()))
        let target = try RedisTarget(url)
        let cluster = if case .cluster = target { true } else { false }
        let client = try await retrying("connect") { try await Settings.client(target) }
        let subscriber = try await retrying("subscriber connect") { try await Settings.subscriber(target, client: client) }
        let locks = try CallbackQueue(client: client, pubsub: subscriber, options: Settings.lockOptions(cluster: cluster))
        let resource = try FencedResource(path: directory.appendingPathComponent("resource").path)
        let redisJobs = try RedisJobStore<String>(client: client, prefix: Settings.jobPrefix, leaseTimeout: Settings.jobLease)
        let fileJobs = try FileJobStore<String>(directory: directory.appendingPathComponent("jobs"), leaseTimeout: Settings.jobLease)
        let queue = try WorkQueue(client: client, subscriber: subscriber, options: Settings.queueOptions(cluster: cluster))
        let worker = try await retrying("worker start") { try await queue.startWorker() }
        log.record("R")

        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                // The stop file ends the run (so does the conductor's death): every loop below
                // checks `isStopped` or is cancelled.
                let stopFile = directory.appendingPathComponent("stop").path
                let conductor = getppid()
                while !FileManager.default.fileExists(atPath: stopFile) && getppid() == conductor {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                stopped.set(true)
            }
            for lane in 0..<Settings.lockLanes {
                group.addTask { await lockLoop(lane: lane, locks: locks, resource: resource) }
            }
            group.addTask { await fanoutLoop(locks: locks) }
            group.addTask { await queueLoop(queue: queue, first: worker) }
            group.addTask { await workLoop(store: redisJobs, backend: "redis") }
            group.addTask { await notifyLoop(store: redisJobs, backend: "redis") }
            group.addTask { await workLoop(store: fileJobs, backend: "file") }
            group.addTask { await notifyLoop(store: fileJobs, backend: "file") }
            // The stop watcher ends first; then the worker's run (which only ends when
            // cancelled) gives its unfinished tasks back, and the other loops wind down.
            await group.next()
            group.cancelAll()
        }
        await locks.close()
        await subscriber.close()
        await client.close()
        log.record("X")
    }

    // (a) Lock cycles: a read-modify-write of the resource's counter under the lock, with
    // the lock's fencing token on both the read and the write.
    func lockLoop(lane: Int, locks: CallbackQueue, resource: FencedResource) async {
        var cycle = 0
        while !isStopped {
            cycle += 1
            let holder = "\(name)/\(lane)/\(cycle)"
            do {
                try await log.operation("lock", lane * 1_000_000 + cycle) {
                    try await locks.withLock("chaos-resource") { lock in
                        let token = String(lock.fencingToken)
                        log.record("LA", token, holder)
                        defer { log.record("LD", token, holder) }
                        guard let value = try await resource.read(token: lock.fencingToken, holder: holder) else {
                            log.record("LS", token, holder)
                            return
                        }
                        try await Task.sleep(for: .milliseconds(Int.random(in: 1...15)))
                        let written = try await resource.write(token: lock.fencingToken, holder: holder, value: value + 1)
                        log.record(written ? "LW" : "LS", token, holder)
                    }
                }
            } catch {
                try? await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    // (b) Fanout: in the first 300 ms of every 3 s round, every process asks five times for
    // the round's value; the job (800 ms) must run once per round across the fleet.
    func fanoutLoop(locks: CallbackQueue) async {
        await withTaskGroup(of: Void.self) { group in
            var lastRound: Int64 = -1
            while !isStopped {
                let now = nowMillis()
                let round = now / Settings.fanoutPeriodMillis
                if now % Settings.fanoutPeriodMillis < Settings.fanoutWindowMillis && round != lastRound {
                    lastRound = round
                    let id = "fan-\(round)"
                    for caller in 0..<Settings.fanoutCallers {
                        group.addTask {
                            log.record("FS", id)
                            _ = try? await log.operation("fanout", Int(round % 1_000_000) * 100 + caller) {
                                let value: String = try await locks.fanout(id, timeout: Settings.fanoutTimeout) {
                                    let run = "\(name)@\(nowMillis())"
                                    log.record("JS", id, run)
                                    try await Task.sleep(for: Settings.fanoutJob)
                                    log.record("JE", id, run)
                                    return run
                                }
                                log.record("FC", id, value)
                            }
                        }
                    }
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // (c) The work queue: the handler's effect is the `QE` line.
    func queueLoop(queue: WorkQueue, first: Worker) async {
        var worker = first
        while !isStopped && !Task.isCancelled {
            do {
                try await worker.run(Settings.queueName, concurrency: Settings.queueConcurrency) { process in
                    log.record("QB", process.string, String(process.deliveries))
                    // Delayed and retried tasks: their due time and this start, from the
                    // record (the server's clock); best effort under faults.
                    if process.string.hasPrefix("d") || (process.string.hasPrefix("r") && process.attempt > 1),
                       let info = try? await queue.task(Settings.queueName, process.taskID),
                       let due = info.dueAt, let started = info.startedAt {
                        log.record("QT", process.string, String(process.deliveries), String(Int64((due.timeIntervalSince1970 * 1000).rounded())),
                                   String(Int64((started.timeIntervalSince1970 * 1000).rounded())))
                    }
                    do {
                        try await Task.sleep(for: .milliseconds(Int.random(in: 5...30)))
                    } catch {
                        log.record("QC", process.string, String(process.deliveries))   // cancelled: no effect
                        throw error
                    }
                    if process.string.hasPrefix("r") && process.attempt == 1 {
                        log.record("QF", process.string, String(process.deliveries))   // fails: retried after its backoff
                        throw ChaosError("the first attempt of a retried task fails")
                    }
                    log.record("QE", process.string, String(process.deliveries))
                }
            } catch {
                if Task.isCancelled { return }
                log.record("QX", sanitize("\(error)"))
                try? await Task.sleep(for: .milliseconds(200))
                if let error = error as? WorkQueueError, error.code == .workerFailed || error.code == .workerNotStarted,
                   let fresh = try? await queue.startWorker() {
                    worker = fresh
                }
            }
        }
        try? await worker.failWorker()
    }

    // (d) The job store: pull work, fulfil it with "done:<request>", release.
    func workLoop<Store: JobStore>(store: Store, backend: String) async where Store.Target == String {
        var sequence = 0
        while !isStopped {
            sequence += 1
            do {
                guard let lease = try await log.operation("pull-" + backend, sequence, { try await store.pullWork() }) else {
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                }
                log.record("JP", backend, lease.id.rawValue)
                try await Task.sleep(for: .milliseconds(Int.random(in: 1...10)))
                let request = String(decoding: lease.request, as: UTF8.self)
                do {
                    try await log.operation("fulfil-" + backend, sequence) { try await store.fulfill(lease.id, value: "done:" + request) }
                    log.record("JF", backend, lease.id.rawValue)
                } catch let error as JobStoreError where error.code == .alreadyFulfilled {
                    log.record("JA", backend, lease.id.rawValue)
                } catch {
                    log.record("JX", backend, lease.id.rawValue)   // may or may not have landed
                }
                try? await lease.release()
            } catch {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }

    // (d) … and tell every waiting target, at least once.
    func notifyLoop<Store: JobStore>(store: Store, backend: String) async where Store.Target == String {
        var sequence = 0
        while !isStopped {
            sequence += 1
            do {
                guard let lease = try await log.operation("notify-" + backend, sequence, { try await store.pullNotification() }) else {
                    try? await Task.sleep(for: .milliseconds(50))
                    continue
                }
                let value = String(decoding: lease.value, as: UTF8.self)
                for target in lease.waiting { log.record("JN", backend, lease.id.rawValue, target, value) }
                try await lease.done(removing: lease.waiting)
            } catch {
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
    }
}
