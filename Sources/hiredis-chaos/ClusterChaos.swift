// `hiredis-chaos --cluster`: the Redis side of the faults on a real Redis Cluster (3
// primaries, 1 replica each, on loopback). A primary is killed (its replica takes over, the
// killed node rejoins as a replica of it), the workloads' slots move between primaries,
// a random primary stalls, and every node drops its clients or its scripts.
import Foundation
import Hiredis
import RedisTestSupport
import Synchronization

/// What one cluster fault did, for the conductor's `F` line (and a `PL` line when a
/// primary was lost: writes it acknowledged but had not replicated may be gone).
struct ClusterFaultOutcome {
    var target: String
    var start: Int64
    var end: Int64
    var note = ""
    var primaryLost: (start: Int64, end: Int64)?
}

final class ClusterChaos: Sendable {
    let cluster: TestCluster
    private let lastPrimaryKill = Mutex<ContinuousClock.Instant?>(nil)

    /// At most one primary kill in this time, so that the killed node has rejoined as a
    /// replica (and synced) before the next one.
    static let primaryKillSpacing: Duration = .seconds(25)
    /// A stalled primary (SIGSTOP, DEBUG SLEEP) outlives the command timeout but not the
    /// time a failover needs (1 s node timeout, then the replica's election delay).
    static let stall: Duration = .milliseconds(1200)
    static let stallSeconds = "1.2"

    /// How the run's output describes the cluster's fault schedule.
    static let summary = [
        "   cluster faults: kill -9 of a primary (the owner of a workload's slot; its replica takes over and the killed node",
        "     rejoins as a replica; at most one per \(primaryKillSpacing.components.seconds) s and only while every primary has a connected replica),",
        "     slot migrations of the workloads' slots (lock, queue, worker registry, Redis job store, this round's fanout id),",
        "     SIGSTOP and DEBUG SLEEP of a random primary for \(stallSeconds) s, CLIENT KILL and SCRIPT FLUSH on every node;",
        "     the single server's AOF restart is left out (the primary kill takes its place).",
        "   durability: locks take minReplicas 1, enqueues minReplicas 1, job creates and target queues WAIT for 1 replica",
        "     (\(Settings.replicationTimeout) each); duplicate runs (task done twice, job fulfilled twice, fanout id run twice) that",
        "     overlapped a primary loss are excused and counted apart.",
    ]

    init(cluster: TestCluster) {
        self.cluster = cluster
    }

    var nodes: [RedisServer] { cluster.nodes }

    /// The keys whose slots the workloads use (`now`: the fanout round).
    static func workloadKeys(now: Int64) -> [(name: String, key: String)] {
        [("lock", "dlock:chaos-resource"),
         ("queue", "{\(Settings.queuePrefix):\(Settings.queueName)}"),
         ("worker registry", "{\(Settings.queuePrefix)}"),
         ("redis jobs", "{\(Settings.jobPrefix)}"),
         ("fanout", "dlock:fan-\(now / Settings.fanoutPeriodMillis)")]
    }

    func inject(_ kind: FaultKind, pick: Int) async -> ClusterFaultOutcome {
        switch kind {
        case .killPrimary: return await killPrimary(pick: pick)
        case .migrateSlot: return await migrate(pick: pick)
        case .stopRedis, .debugSleep: return await stall(kind, pick: pick)
        case .clientKillNormal: return await everyNode(["CLIENT", "KILL", "TYPE", "normal"])
        case .clientKillPubsub: return await everyNode(["CLIENT", "KILL", "TYPE", "pubsub"])
        case .scriptFlush: return await everyNode(["SCRIPT", "FLUSH"])
        case .restartRedis, .killWorker, .stopWorker:
            let now = nowMillis()
            return ClusterFaultOutcome(target: "failed", start: now, end: now, note: "not a cluster fault")
        }
    }

    // MARK: Faults

    /// Kills the primary of a workload's slot, waits until its replica took over, restarts
    /// the killed node (it rejoins as a replica of the new primary and syncs).
    private func killPrimary(pick: Int) async -> ClusterFaultOutcome {
        let now = nowMillis()
        if let last = lastPrimaryKill.withLock({ $0 }), ContinuousClock.now - last < Self.primaryKillSpacing {
            return ClusterFaultOutcome(target: "none", start: now, end: now, note: "skipped: the last primary kill was under \(Self.primaryKillSpacing) ago")
        }
        let roles = await self.roles()
        let primaries = roles.filter { $0.value.isPrimary }.map { $0.key }
        for primary in primaries where !roles.contains(where: { $0.value.replicates(primary.port) }) {
            return ClusterFaultOutcome(target: "none", start: now, end: now, note: "skipped: primary :\(primary.port) has no connected replica")
        }
        let keys = Self.workloadKeys(now: now)
        let (name, key) = keys[pick % keys.count]
        guard let victim = try? await cluster.owner(ofSlot: ClusterSlot.of(key)),
              let replica = roles.first(where: { $0.value.replicates(victim.port) })?.key else {
            return ClusterFaultOutcome(target: "failed", start: now, end: now, note: "no primary or replica found for the \(name) slot")
        }
        lastPrimaryKill.withLock { $0 = .now }
        let start = nowMillis()
        await victim.kill()
        // Promoted: the replica says it is a primary.
        var promoted: Int64?
        let deadline = ContinuousClock.now + .seconds(30)
        while promoted == nil && ContinuousClock.now < deadline {
            if await role(of: replica)?.isPrimary == true { promoted = nowMillis() } else { try? await Task.sleep(for: .milliseconds(20)) }
        }
        let end = promoted ?? nowMillis()
        var note = "\(name)'s slot; " + (promoted.map { "replica :\(replica.port) took over after \($0 - start) ms" } ?? "NO replica took over within 30 s")
        do {
            let restarted = nowMillis()
            try await victim.restart()
            var rejoined = false
            let rejoinDeadline = ContinuousClock.now + .seconds(20)
            while !rejoined && ContinuousClock.now < rejoinDeadline {
                if case .replica = await role(of: victim) { rejoined = true } else { try? await Task.sleep(for: .milliseconds(50)) }
            }
            note += rejoined ? "; :\(victim.port) rejoined as a replica after \(nowMillis() - restarted) ms" : "; :\(victim.port) restarted but is not a replica yet"
        } catch {
            note += "; :\(victim.port) did not restart (\(error))"
        }
        return ClusterFaultOutcome(target: "p\(victim.port)", start: start, end: end, note: note, primaryLost: (start, end))
    }

    /// Moves the slot of a workload's key to another primary (ASK during the move, MOVED
    /// after it).
    private func migrate(pick: Int) async -> ClusterFaultOutcome {
        let start = nowMillis()
        let keys = Self.workloadKeys(now: start)
        let (name, key) = keys[pick % keys.count]
        let slot = ClusterSlot.of(key)
        var lastError: (any Error)?
        for _ in 0..<3 {
            do {
                let source = try await cluster.owner(ofSlot: slot)
                let others = try await cluster.primaries().filter { $0.port != source.port }
                guard !others.isEmpty else { throw ChaosError("no other primary") }
                let target = others[(pick / keys.count) % others.count]
                try await cluster.migrate(slot: slot, to: target, batch: 20)
                return ClusterFaultOutcome(target: "s\(slot)", start: start, end: nowMillis(),
                                           note: "\(name)'s slot \(slot) :\(source.port) → :\(target.port)")
            } catch {
                // Again from where it stopped: the slot is still the source's (MIGRATING).
                lastError = error
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        say("   ! migration of slot \(slot) failed: \(lastError.map { "\($0)" } ?? "?")")
        return ClusterFaultOutcome(target: "failed", start: start, end: nowMillis(), note: "\(name)'s slot \(slot)")
    }

    /// SIGSTOP or DEBUG SLEEP of a random primary; a failover it caused anyway is reported
    /// as a primary loss.
    private func stall(_ kind: FaultKind, pick: Int) async -> ClusterFaultOutcome {
        let now = nowMillis()
        guard let primaries = try? await cluster.primaries(), !primaries.isEmpty else {
            return ClusterFaultOutcome(target: "failed", start: now, end: now, note: "no primary")
        }
        let node = primaries[pick % primaries.count]
        let start = nowMillis()
        var target = "p\(node.port)"
        if kind == .stopRedis {
            node.pause()
            try? await Task.sleep(for: Self.stall)
            node.resume()
        } else {
            do {
                let connection = try await connect(node)
                defer { Task { await connection.close() } }
                _ = try await connection.send(RedisCommand("DEBUG", "SLEEP", Self.stallSeconds))
            } catch {
                target = "failed"
                say("   ! \(kind.rawValue) failed: \(error)")
            }
        }
        let end = nowMillis()
        var outcome = ClusterFaultOutcome(target: target, start: start, end: end, note: "primary :\(node.port)")
        // A failover completes within a second or two of the stall, if at all.
        try? await Task.sleep(for: .milliseconds(800))
        if case .replica = await role(of: node) {
            outcome.note += "; it was failed over (a replica took over)"
            outcome.primaryLost = (start, nowMillis())
        }
        return outcome
    }

    private func everyNode(_ command: [String]) async -> ClusterFaultOutcome {
        let start = nowMillis()
        var failed: [String] = []
        for node in nodes where node.pid != nil {
            do {
                let connection = try await connect(node)
                _ = try await connection.send(RedisCommand(command[0], arguments: command.dropFirst()))
                await connection.close()
            } catch {
                failed.append(":\(node.port) \(error)")
            }
        }
        if !failed.isEmpty { say("   ! \(command.joined(separator: " ")) failed on \(failed.joined(separator: "; "))") }
        return ClusterFaultOutcome(target: failed.count < nodes.count ? "nodes" : "failed", start: start, end: nowMillis(),
                                   note: "every node")
    }

    // MARK: Nodes

    enum Role {
        case primary
        case replica(of: Int, connected: Bool)

        var isPrimary: Bool { if case .primary = self { true } else { false } }

        func replicates(_ port: Int) -> Bool {
            if case .replica(let of, let connected) = self { of == port && connected } else { false }
        }
    }

    /// `ROLE` of `node`; `nil` when it is down or does not answer.
    func role(of node: RedisServer) async -> Role? {
        guard node.pid != nil, let connection = try? await connect(node) else { return nil }
        defer { Task { await connection.close() } }
        guard case .array(let parts) = try? await connection.send("ROLE"), let kind = try? parts.first?.decode(String.self) else { return nil }
        if kind == "master" { return .primary }
        guard kind == "slave", parts.count >= 4, let port = try? parts[2].decode(Int.self),
              let state = try? parts[3].decode(String.self) else { return nil }
        return .replica(of: port, connected: state == "connected")
    }

    /// The role of every running node that answers.
    func roles() async -> [(key: RedisServer, value: Role)] {
        var result: [(key: RedisServer, value: Role)] = []
        for node in nodes { if let role = await role(of: node) { result.append((node, role)) } }
        return result
    }

    private func connect(_ node: RedisServer) async throws -> RedisConnection {
        try await node.connect {
            $0.connectTimeout = .seconds(1)
            $0.commandTimeout = .seconds(5)
            $0.reconnect = .never
        }
    }

    /// Resumes every node (after a SIGSTOP) and kills them all at the end.
    func resumeAll() { for node in nodes { node.resume() } }

    func killAll() async { for node in nodes { await node.kill() } }
}
