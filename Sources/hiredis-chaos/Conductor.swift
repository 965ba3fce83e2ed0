// The conductor: a throwaway Redis (AOF, appendfsync always), N worker processes, the
// producers, the seeded faults, a drain, and the verification.
import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Synchronization

/// The Redis under test.
enum Deployment {
    /// One server (AOF, appendfsync always) and a connection for the faults' commands.
    case single(RedisServer, control: RedisConnection)
    case cluster(ClusterChaos)

    var servers: [RedisServer] {
        switch self {
        case .single(let server, _): [server]
        case .cluster(let chaos): chaos.nodes
        }
    }
}

struct Conductor {
    let duration: Duration
    let seed: UInt64
    let workers: Int
    let keep: Bool
    var cluster = false

    func run() async throws -> Bool {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("hiredis-chaos-\(UUID().uuidString.prefix(8))")
        let logs = directory.appendingPathComponent("logs")
        try FileManager.default.createDirectory(at: logs, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("jobs"), withIntermediateDirectories: true)
        let deployment: Deployment
        let url: String
        if cluster {
            let testCluster = try await TestCluster.start(nodeTimeout: .seconds(1))
            url = testCluster.spec
            deployment = .cluster(ClusterChaos(cluster: testCluster))
            say("hiredis-chaos: seed \(seed), \(duration) of faults, \(workers) worker processes, Redis Cluster of 3 primaries + 1 replica each "
                + "on 127.0.0.1:\(testCluster.nodes.map { String($0.port) }.joined(separator: ",")) (no persistence, 1 s node timeout)")
            say("   replay with: make chaos CLUSTER=1 SEED=\(seed) DURATION=\(duration.components.seconds)")
            for line in ClusterChaos.summary { say(line) }
        } else {
            let server = try await RedisServer.start(["--appendonly", "yes", "--appendfsync", "always"])
            url = "redis://127.0.0.1:\(server.port)"
            say("hiredis-chaos: seed \(seed), \(duration) of faults, \(workers) worker processes, redis-server on 127.0.0.1:\(server.port) (AOF, appendfsync always)")
            say("   replay with: make chaos SEED=\(seed) DURATION=\(duration.components.seconds)")
            var admin = server.configuration
            admin.commandTimeout = .seconds(10)
            deployment = .single(server, control: try await RedisConnection.connect(admin))
        }
        say("   logs in \(directory.path)")

        let log = try EventLog(path: logs.appendingPathComponent("conductor.log").path)
        let executable = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
        let fleet = Fleet(executable: executable, directory: directory, url: url, count: workers)
        let target = try RedisTarget(url)
        let client = try await Settings.client(target)
        let subscriber = try await Settings.subscriber(target, client: client)
        let queue = try WorkQueue(client: client, subscriber: subscriber, options: Settings.queueOptions(cluster: cluster))
        let redisJobs = try RedisJobStore<String>(client: client, prefix: Settings.jobPrefix, leaseTimeout: Settings.jobLease)
        let fileJobs = try FileJobStore<String>(directory: directory.appendingPathComponent("jobs"), leaseTimeout: Settings.jobLease)

        // Ctrl-C or `timeout`: no worker may be left stopped or running, nor the server(s).
        let servers = deployment.servers
        let interrupted = DispatchSource.makeSignalSource(signal: SIGTERM)
        let interruptedByUser = DispatchSource.makeSignalSource(signal: SIGINT)
        for source in [interrupted, interruptedByUser] {
            source.setEventHandler {
                for process in fleet.processes { signalProcess(process.processIdentifier, SIGCONT); signalProcess(process.processIdentifier, SIGKILL) }
                for server in servers { if let pid = server.pid { signalProcess(pid, SIGCONT); signalProcess(pid, SIGKILL) } }
                say("interrupted: worker processes and redis-server killed; logs in \(directory.path)")
                exit(130)
            }
            source.resume()
        }
        signal(SIGTERM, SIG_IGN)
        signal(SIGINT, SIG_IGN)
        defer { interrupted.cancel(); interruptedByUser.cancel() }

        try fleet.startAll()
        let started = ContinuousClock.now
        let producing = SharedFlag(true)
        // On a cluster the producers' writes reach a replica before they count.
        let replicated: (any RedisClient)? = cluster ? client : nil
        let producers = [
            Task { await produceTasks(queue: queue, log: log, while: producing) },
            Task { await produceJobs(store: redisJobs, backend: "redis", log: log, while: producing, replicated: replicated) },
            Task { await produceJobs(store: fileJobs, backend: "file", log: log, while: producing) },
        ]

        // Faults, one at a time, until the duration is over.
        var schedule = cluster ? FaultSchedule(seed: seed, slots: workers, kinds: FaultKind.cluster, picks: true)
                               : FaultSchedule(seed: seed, slots: workers)
        var injected = 0
        var lastFault = ContinuousClock.now
        while true {
            let (pause, kind, slot, pick) = schedule.next()
            try await Task.sleep(for: pause)
            if ContinuousClock.now - started >= duration { break }
            await inject(kind, slot: slot, pick: pick, deployment: deployment, fleet: fleet, log: log)
            lastFault = ContinuousClock.now
            injected += 1
            if injected % 5 == 0 { say("   … \(injected) faults injected, \(Int((ContinuousClock.now - started).components.seconds)) s") }
        }
        producing.set(false)
        for producer in producers { await producer.value }
        for server in servers { server.resume() }
        for process in fleet.processes { signalProcess(process.processIdentifier, SIGCONT) }
        log.record("D")  // drain begins
        say("   faults over after \(injected); draining (every queued task and job must be done)")

        let drained = await drain(queue: queue, logs: logs, limit: .seconds(60))
        // Room for the last fault's recovery to show: leases and the worker timeout run out.
        let settled = lastFault + Settings.lockLease + Settings.jobLease + Settings.workerTimeout + .seconds(1)
        if ContinuousClock.now < settled { try await Task.sleep(until: settled) }
        let hungAtStop = await fleet.stopAll(grace: .seconds(15))
        log.record("Z")

        let snapshot = try await Snapshot.take(queue: queue, resource: FencedResource(path: directory.appendingPathComponent("resource").path))
        let events = try readEvents(in: logs)
        let report = Verifier(events: events, snapshot: snapshot, drained: drained, crashes: fleet.crashes.withLock { $0 },
                              hungAtStop: hungAtStop, cluster: cluster).report()
        say("")
        say(report.table)
        if let redisCluster = client as? RedisCluster {
            let counts = redisCluster.redirections
            say("\nconductor's cluster client: \(counts.moved) MOVED, \(counts.ask) ASK, \(counts.tryAgain) TRYAGAIN, \(counts.refreshes) topology refreshes")
        }
        await subscriber.close()
        await client.close()
        switch deployment {
        case .single(let server, let control):
            await control.close()
            await server.kill()
        case .cluster(let chaos):
            await chaos.killAll()
        }
        if report.passed && !keep {
            try? FileManager.default.removeItem(at: directory)
        } else {
            say("logs kept in \(directory.path)")
        }
        say(report.passed ? "\nevery must-hold figure held (seed \(seed))" : "\nA MUST-HOLD FIGURE FAILED (seed \(seed))")
        return report.passed
    }

    /// Applies one fault and logs `F tag target start end` (and `PL start end` when a
    /// cluster primary was lost).
    func inject(_ kind: FaultKind, slot: Int, pick: Int, deployment: Deployment, fleet: Fleet, log: EventLog) async {
        var start = nowMillis()
        var target = "redis"
        var note = ""
        switch (kind, deployment) {
        case (.killWorker, _):
            target = fleet.current(slot)?.name ?? "none"   // "none": no process to strike; not counted
            await fleet.kill(slot)
            try? await Task.sleep(for: FaultTiming.restartDelay)
            try? fleet.spawn(slot)
        case (.stopWorker, _):
            target = fleet.current(slot)?.name ?? "none"
            fleet.signal(slot, SIGSTOP)
            try? await Task.sleep(for: FaultTiming.workerStop)
            fleet.signal(slot, SIGCONT)
        case (_, .cluster(let chaos)):
            let outcome = await chaos.inject(kind, pick: pick)
            (target, start, note) = (outcome.target, outcome.start, outcome.note)
            if let lost = outcome.primaryLost { log.record("PL", target, String(lost.start), String(lost.end)) }
            log.record("F", kind.tag, target, String(start), String(outcome.end), at: outcome.end)
            say("   fault: \(kind.label(cluster: true)) for \(outcome.end - start) ms" + (note.isEmpty ? "" : " (\(note))"))
            return
        case (.stopRedis, .single(let server, _)):
            server.pause()
            try? await Task.sleep(for: FaultTiming.redisStop)
            server.resume()
        case (.clientKillNormal, .single(_, let control)), (.clientKillPubsub, .single(_, let control)),
             (.debugSleep, .single(_, let control)), (.scriptFlush, .single(_, let control)):
            let command: [String] = switch kind {
            case .clientKillNormal: ["CLIENT", "KILL", "TYPE", "normal"]
            case .clientKillPubsub: ["CLIENT", "KILL", "TYPE", "pubsub"]
            case .debugSleep: ["DEBUG", "SLEEP", FaultTiming.debugSleepSeconds]
            default: ["SCRIPT", "FLUSH"]
            }
            do {
                _ = try await control.send(RedisCommand(command[0], arguments: command.dropFirst()))
            } catch {
                target = "failed"   // not applied: not counted
                say("   ! \(kind.rawValue) failed: \(error)")
            }
        case (.restartRedis, .single(let server, _)):
            do { try await server.restart() } catch { say("   ! redis-server did not restart: \(error)"); target = "failed" }
        case (.killPrimary, .single), (.migrateSlot, .single):
            target = "failed"   // not on a single server (never scheduled there)
        }
        let end = nowMillis()
        log.record("F", kind.tag, target, String(start), String(end), at: end)
        say("   fault: \(kind.rawValue)\(kind.strikesWorker ? " (\(target))" : "") for \(end - start) ms")
    }

    /// Waits until the queue is empty (no delayed task either) with nothing in flight and every queued job's target
    /// was notified (both backends); `false` when `limit` passed first.
    func drain(queue: WorkQueue, logs: URL, limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now + limit
        var cleanChecks = 0
        while ContinuousClock.now < deadline {
            var clean = false
            if let state = try? await queue.queueState(Settings.queueName),
               let inFlight = try? await queue.getProcesses(Settings.queueName), state.waiting == 0, state.delayed == 0,
               inFlight.isEmpty,
               let events = try? readEvents(in: logs) {
                var waiting = Set<String>()
                for event in events where event.kind == "JQ" { waiting.insert("\(event.fields[0]) \(event.fields[1]) \(event.fields[2])") }
                for event in events where event.kind == "JN" { waiting.remove("\(event.fields[0]) \(event.fields[1]) \(event.fields[2])") }
                clean = waiting.isEmpty
            }
            // Twice in a row: a dead worker's tasks could move between the two reads.
            cleanChecks = clean ? cleanChecks + 1 : 0
            if cleanChecks >= 2 { return true }
            try? await Task.sleep(for: .seconds(1))
        }
        return false
    }

    /// (c) 100 plain tasks a second (`t…`), in batches of five, with unique ids; and each
    /// 50 ms one more of a kind in turn: delayed by 0…2 s (`d…`), prioritised 1…5 (`p…`),
    /// or retried (`r…`: ``Settings/retryPolicy``; its handler fails the first attempt).
    /// An enqueue that failed is logged as uncertain (it may have been applied before the
    /// reply was lost).
    func produceTasks(queue: WorkQueue, log: EventLog, while producing: SharedFlag) async {
        let minReplicas = cluster ? 1 : 0   // on a cluster, tasks count once a replica has them
        var random = SeededGenerator(seed: seed ^ 0x5155_4555)
        var next = 0
        var batch = 0
        while producing.isOn {
            batch += 1
            let ids = (0..<5).map { "t\(next + $0)" }
            next += 5
            do {
                _ = try await log.operation("enqueue", batch) { try await queue.enqueue(Settings.queueName, ids, minReplicas: minReplicas) }
                log.record("QQ", ids.joined(separator: ","))
            } catch {
                log.record("QU", ids.joined(separator: ","))
            }
            let (id, options): (String, TaskOptions) = switch batch % 3 {
            case 0: ("d\(next)", TaskOptions(delay: .milliseconds(Int.random(in: 0...Settings.maxDelayMillis, using: &random))))
            case 1: ("p\(next)", TaskOptions(priority: Int.random(in: 1...5, using: &random)))
            default: ("r\(next)", TaskOptions(retry: Settings.retryPolicy))
            }
            next += 1
            do {
                _ = try await log.operation("enqueue-feature", batch) {
                    try await queue.enqueue(Settings.queueName, id, minReplicas: minReplicas, options: options)
                }
                log.record("QQ", id)
            } catch {
                log.record("QU", id)
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// (d) Ten jobs a second per backend: create, then queue a target (retried: a target is
    /// kept once, so a retry after a lost reply is harmless). With `replicated` (a cluster's
    /// client), each write counts only once a replica acknowledged it (`WAIT`).
    func produceJobs<Store: JobStore>(store: Store, backend: String, log: EventLog, while producing: SharedFlag,
                                      replicated: (any RedisClient)? = nil) async
    where Store.Target == String {
        var next = 0
        while producing.isOn {
            next += 1
            let request = "r\(next)"
            do {
                let id = try await log.operation("create-" + backend, next) {
                    let id = try await store.create(request: request)
                    if let replicated { try await Settings.waitForReplica(replicated, key: "{\(Settings.jobPrefix)}") }
                    return id
                }
                log.record("JC", backend, id.rawValue, request)
                let target = "tg\(next)"
                var queued = false
                for _ in 0..<50 where !queued {
                    do {
                        try await log.operation("queue-" + backend, next) {
                            try await store.queue(id, target: target)
                            if let replicated { try await Settings.waitForReplica(replicated, key: "{\(Settings.jobPrefix)}") }
                        }
                        queued = true
                    } catch {
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                }
                if queued { log.record("JQ", backend, id.rawValue, target) }
            } catch {
                log.record("JU", backend, request)
            }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// What Redis and the resource say at the end.
struct Snapshot {
    var resource: ResourceState
    var queued: Int
    var inFlight: Int
    var deadLettered: Set<String>

    static func take(queue: WorkQueue, resource: FencedResource) async throws -> Snapshot {
        let state = try await queue.queueState(Settings.queueName)
        return Snapshot(resource: try await resource.snapshot(),
                 queued: state.waiting + state.delayed,
                 inFlight: try await queue.getProcesses(Settings.queueName).count,
                 deadLettered: Set(try await queue.deadLetters(Settings.queueName).map(\.string)))
    }
}
