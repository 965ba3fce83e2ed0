// Reads the run's events and says what held: the figures of `make chaos`.
import Foundation

struct Fault {
    let kind: FaultKind
    let target: String
    let start: Int64
    let end: Int64

    func overlaps(_ from: Int64, _ to: Int64) -> Bool { start <= to && end >= from }
}

struct Report {
    var rows: [(area: String, figure: String, value: String, rule: String, held: Bool?)] = []

    mutating func add(_ area: String, _ figure: String, _ value: String, must rule: String? = nil, _ held: Bool? = nil) {
        rows.append((area, figure, value, rule ?? "report", rule == nil ? nil : held))
    }

    var passed: Bool { rows.allSatisfy { $0.held != false } }

    var table: String {
        var lines = ["| area | figure | value | must hold |", "|---|---|---|---|"]
        for row in rows {
            let mark = row.held.map { $0 ? " ✓" : " ✗ FAILED" } ?? ""
            lines.append("| \(row.area) | \(row.figure) | \(row.value) | \(row.rule)\(mark) |")
        }
        return lines.joined(separator: "\n")
    }
}

struct Verifier {
    let events: [Event]
    let snapshot: Snapshot
    let drained: Bool
    let crashes: [String]
    let hungAtStop: [String]
    /// A cluster run: its fault kinds, and primaries that may be lost.
    var cluster = false

    private var kinds: [FaultKind] {
        var seen = Set<FaultKind>()
        return (cluster ? FaultKind.cluster : FaultKind.singleServer).filter { seen.insert($0).inserted }
    }

    /// When a cluster primary was lost (killed, or failed over after a stall): from its
    /// loss until a replica took over. Writes it acknowledged shortly before may be gone.
    private var primaryLosses: [Fault] {
        events.compactMap { event in
            guard event.kind == "PL", event.fields.count >= 3, let start = Int64(event.fields[1]), let end = Int64(event.fields[2]) else { return nil }
            return Fault(kind: .killPrimary, target: String(event.fields[0]), start: start, end: end)
        }
    }

    /// Whether `from…to` overlapped a primary loss, counting `before` ms ahead of it (an
    /// acknowledged write not yet replicated) and `after` ms past the take-over.
    private func overlapsPrimaryLoss(_ losses: [Fault], _ from: Int64, _ to: Int64, before: Int64 = 1000, after: Int64 = 0) -> Bool {
        losses.contains { $0.start - before <= to && $0.end + after >= from }
    }

    private var faults: [Fault] {
        events.compactMap { event in
            guard event.kind == "F", event.fields.count >= 4, let kind = FaultKind(tag: event.fields[0]),
                  let start = Int64(event.fields[2]), let end = Int64(event.fields[3]),
                  event.fields[1] != "none", event.fields[1] != "failed" else { return nil }
            return Fault(kind: kind, target: String(event.fields[1]), start: start, end: end)
        }
    }

    private func of(_ kind: Substring) -> [Event] { events.filter { $0.kind == kind } }

    func report() -> Report {
        var report = Report()
        let faults = self.faults
        operations(&report, faults)
        locks(&report)
        fanout(&report, faults)
        queue(&report, faults)
        for backend in ["redis", "file"] { jobs(&report, backend: backend) }
        hangs(&report, faults)
        recovery(&report, faults)
        return report
    }

    // MARK: Operations and faults

    func operations(_ report: inout Report, _ faults: [Fault]) {
        var ok: [String: Int] = [:]
        var failed: [String: Int] = [:]
        for event in of("E") where event.fields.count >= 3 {
            let kind = String(event.fields[0].split(separator: "-").first ?? event.fields[0])
            if event.fields[2] == "ok" { ok[kind, default: 0] += 1 } else { failed[kind, default: 0] += 1 }
        }
        let kinds = Set(ok.keys).union(failed.keys).sorted()
        report.add("run", "operations (ok / failed)", kinds.map { "\($0) \(ok[$0] ?? 0)/\(failed[$0] ?? 0)" }.joined(separator: ", "))
        var counts: [FaultKind: Int] = [:]
        for fault in faults { counts[fault.kind, default: 0] += 1 }
        report.add("run", "faults injected (\(faults.count))",
                   self.kinds.map { "\($0.label(cluster: cluster)) \(counts[$0] ?? 0)" }.joined(separator: ", "))
        if cluster {
            let losses = primaryLosses
            let longest = losses.map { $0.end - $0.start }.max().map { String(format: ", longest %.2f s until a replica took over", Double($0) / 1000) } ?? ""
            report.add("run", "primaries lost (killed, or failed over after a stall)", "\(losses.count)\(longest)")
        }
        report.add("run", "worker processes that crashed", crashes.isEmpty ? "0" : "\(crashes.count): \(crashes.joined(separator: "; "))",
                   must: "= 0", crashes.isEmpty)
        report.add("run", "queue and job stores drained after the faults", drained ? "yes" : "no (60 s limit)", must: "yes", drained)
    }

    // MARK: (a) Locks

    func locks(_ report: inout Report) {
        let resource = snapshot.resource
        report.add("locks", "cycles accepted by the resource (counter)", "\(resource.accepted) (\(resource.counter))",
                   must: "counter = accepted", resource.counter == resource.accepted)
        report.add("locks", "overlapping holders detected at the resource", "\(resource.overlaps)", must: "= 0", resource.overlaps == 0)
        report.add("locks", "lost updates (a write not based on the latest value)", "\(resource.lostUpdates)", must: "= 0",
                   resource.lostUpdates == 0)
        report.add("locks", "stale-token reads and writes rejected", "\(resource.staleRejected)")
        // Holders whose time under the lock overlapped (a paused holder outliving its lease).
        var intervals: [(Int64, Int64)] = []
        var acquired: [Substring: Int64] = [:]
        for event in events where event.fields.count >= 2 {
            if event.kind == "LA" { acquired[event.fields[1]] = event.time }
            if event.kind == "LD", let start = acquired[event.fields[1]] { intervals.append((start, event.time)) }
        }
        intervals.sort { $0.0 < $1.0 }
        // A holder outlived its lease when the next holder came in before it was done.
        let outlived = zip(intervals, intervals.dropFirst()).filter { $1.0 < $0.1 }.count
        report.add("locks", "holders still working when the next took the lock (lease lost, fenced off)", "\(outlived)")
    }

    // MARK: (b) Fanout

    func fanout(_ report: inout Report, _ faults: [Fault]) {
        var runs: [Substring: [Event]] = [:]
        var callers: [Substring: [Event]] = [:]
        var involved: [Substring: Set<String>] = [:]
        for event in events where event.fields.count >= 2 {
            if event.kind == "JS" { runs[event.fields[0], default: []].append(event); involved[event.fields[0], default: []].insert(event.process) }
            if event.kind == "FC" { callers[event.fields[0], default: []].append(event); involved[event.fields[0], default: []].insert(event.process) }
        }
        for event in of("FS") { involved[event.fields[0], default: []].insert(event.process) }
        // A leader keeps its job through a dropped connection (it retries within its lease),
        // but not through being killed or stopped, nor a stalled or restarted server that
        // outlasts its extensions.
        let leaseFaults: Set<FaultKind> = [.killWorker, .stopWorker, .stopRedis, .debugSleep, .restartRedis]
        let losses = primaryLosses
        var once = 0
        var explained = 0
        var unexplained: [String] = []
        for (id, list) in runs {
            if list.count == 1 { once += 1; continue }
            let from = list.first!.time - 1000
            let to = list.last!.time
            let processes = involved[id] ?? []
            let excuse = faults.contains { fault in
                leaseFaults.contains(fault.kind) && fault.overlaps(from, to)
                    && (!fault.kind.strikesWorker || processes.contains(fault.target))
            } || overlapsPrimaryLoss(losses, from, to)
            if excuse { explained += 1 } else { unexplained.append("\(id) ran \(list.count)×") }
        }
        var wrong = 0
        for (id, list) in callers {
            let values = Set((runs[id] ?? []).map { $0.fields[1] })
            wrong += list.filter { !values.contains($0.fields[1]) }.count
        }
        let answered = callers.values.reduce(0) { $0 + $1.count }
        let failed = of("E").filter { $0.fields.first == "fanout" && $0.fields.count >= 3 && $0.fields[2] != "ok" }.count
        report.add("fanout", "ids / callers answered / callers failed", "\(runs.count) / \(answered) / \(failed)")
        report.add("fanout", "ids whose job ran once", "\(once)")
        report.add("fanout", cluster ? "ids run again after a leader lost its lease to a fault or a primary loss"
                                     : "ids run again after a leader lost its lease to a fault", "\(explained)")
        report.add("fanout", "ids run more than once without such a fault",
                   unexplained.isEmpty ? "0" : "\(unexplained.count): \(unexplained.prefix(5).joined(separator: ", "))",
                   must: "= 0", unexplained.isEmpty)
        report.add("fanout", "callers given a value no run of their id produced", "\(wrong)", must: "= 0", wrong == 0)
    }

    // MARK: (c) Work queue

    func queue(_ report: inout Report, _ faults: [Fault]) {
        var enqueued = Set<Substring>()
        var uncertain = Set<Substring>()
        for event in of("QQ") { enqueued.formUnion(event.fields[0].split(separator: ",")) }
        for event in of("QU") { uncertain.formUnion(event.fields[0].split(separator: ",")) }
        var begun: [String: Int64] = [:]   // process task delivery → time
        var effects: [Substring: Int] = [:]
        var exposedByTask: [Substring: Int] = [:]
        var exposed = 0
        var redelivered = 0
        var lossExposedByTask: [Substring: Int] = [:]
        var lossExposed = 0
        let workerFaults = faults.filter { $0.kind.strikesWorker }
        let losses = primaryLosses
        // A dequeue or finish acknowledged but not replicated, or heartbeats that could not
        // be renewed until a replica took over: up to the worker timeout after it.
        let lossAfter = Int64(Settings.workerTimeout.components.seconds) * 1000 + 1000
        for event in events where event.fields.count >= 2 {
            let key = "\(event.process) \(event.fields[0]) \(event.fields[1])"
            if event.kind == "QB" {
                begun[key] = event.time
                if event.fields[1] != "1" { redelivered += 1 }
            } else if event.kind == "QE" {
                effects[event.fields[0], default: 0] += 1
                let from = begun[key] ?? event.time
                // Done, but its finish may not have landed when the process was struck.
                if workerFaults.contains(where: { $0.target == event.process && $0.overlaps(from, event.time + 1000) }) {
                    exposed += 1
                    exposedByTask[event.fields[0], default: 0] += 1
                } else if overlapsPrimaryLoss(losses, from, event.time, after: lossAfter) {
                    lossExposed += 1
                    lossExposedByTask[event.fields[0], default: 0] += 1
                }
            }
        }
        let dead = Set(snapshot.deadLettered.map { Substring($0) })
        let lost = enqueued.filter { effects[$0] == nil && !dead.contains($0) }
        let duplicated = effects.values.reduce(0) { $0 + max($1 - 1, 0) }
        // Every extra run of a task must be matched by a run in a worker struck as it ran.
        // On a cluster, also by a run that overlapped a primary loss.
        let unexcused = effects.reduce(0) { $0 + max(0, $1.value - 1 - (exposedByTask[$1.key] ?? 0)) }
        let excusedByLoss = effects.reduce(0) { total, entry in
            let extra = max(0, entry.value - 1 - (exposedByTask[entry.key] ?? 0))
            return total + min(extra, lossExposedByTask[entry.key] ?? 0)
        }
        let finished = enqueued.filter { effects[$0] != nil }.count
        report.add("queue", "tasks enqueued / finished / dead-lettered", "\(enqueued.count) / \(finished) / \(dead.count)")
        report.add("queue", "tasks lost", lost.isEmpty ? "0" : "\(lost.count) (e.g. \(lost.prefix(5).joined(separator: ", ")))",
                   must: "= 0", lost.isEmpty)
        report.add("queue", "tasks left queued or in flight after the drain", "\(snapshot.queued) / \(snapshot.inFlight)",
                   must: "= 0", snapshot.queued == 0 && snapshot.inFlight == 0)
        report.add("queue", "tasks done twice / runs in a worker as it was struck", "\(duplicated) / \(exposed)")
        if cluster {
            report.add("queue", "tasks done twice after a run that overlapped a primary loss (excused) / such runs", "\(excusedByLoss) / \(lossExposed)")
            report.add("queue", "tasks done twice without a run in a struck worker or across a primary loss", "\(unexcused - excusedByLoss)",
                       must: "= 0", unexcused == excusedByLoss)
        } else {
            report.add("queue", "tasks done twice without a run in a struck worker", "\(unexcused)", must: "= 0", unexcused == 0)
        }
        report.add("queue", "redeliveries (delivery > 1)", "\(redelivered)")
        features(&report, enqueued: enqueued, workerFaults: workerFaults)
        let uncertainDone = uncertain.filter { effects[$0] != nil }.count
        report.add("queue", "enqueues whose reply was lost (of them done)", "\(uncertain.count) (\(uncertainDone))")
    }

    /// Issue 18's tasks: delayed (`d…`), prioritised (`p…`) and retried (`r…`, whose
    /// handler fails the first attempt). None may start before its due time (the start and
    /// due time of its record, on the server's clock, logged by the handler as `QT`), and
    /// none may run more often than its attempts (1, or the retry policy's) plus its runs in
    /// a worker struck as it ran. A run given back uncounted (`QC`: a shutdown or a
    /// cancellation, the handler having no effect) is not an attempt.
    func features(_ report: inout Report, enqueued: Set<Substring>, workerFaults: [Fault]) {
        var kinds: [Character: Int] = [:]
        for task in enqueued { kinds[task.first ?? "?", default: 0] += 1 }
        report.add("queue", "tasks enqueued: plain / delayed / prioritised / retried",
                   "\(kinds["t"] ?? 0) / \(kinds["d"] ?? 0) / \(kinds["p"] ?? 0) / \(kinds["r"] ?? 0)")
        var early: [String] = []
        var checked = 0
        for event in of("QT") where event.fields.count >= 4 {
            guard let due = Int64(event.fields[2]), let started = Int64(event.fields[3]) else { continue }
            checked += 1
            if started < due { early.append("\(event.fields[0]) started \(due - started) ms early") }
        }
        report.add("queue", "delayed or retried runs started before their due time (server clock; of \(checked) checked)",
                   early.isEmpty ? "0" : "\(early.count): \(early.prefix(5).joined(separator: ", "))", must: "= 0", early.isEmpty)
        // Runs: begun (QB), ended by an effect (QE), a failed attempt (QF), or given back
        // uncounted (QC); a run never ended was in a process killed as it ran.
        struct Run { let task: Substring; let process: String; let start: Int64; var end: Int64?; var counted = true }
        var runs: [Run] = []
        var open: [String: Int] = [:]
        var retriedFailures = 0
        for event in events where event.fields.count >= 2 {
            let key = "\(event.process) \(event.fields[0]) \(event.fields[1])"
            switch event.kind {
            case "QB":
                open[key] = runs.count
                runs.append(Run(task: event.fields[0], process: event.process, start: event.time))
            case "QE", "QF", "QC":
                guard let index = open.removeValue(forKey: key) else { continue }
                runs[index].end = event.time
                if event.kind == "QC" { runs[index].counted = false }
                if event.kind == "QF" { retriedFailures += 1 }
            default: break
            }
        }
        var counted: [Substring: Int] = [:]
        var struck: [Substring: Int] = [:]
        for run in runs where run.counted {
            counted[run.task, default: 0] += 1
            if workerFaults.contains(where: { $0.target == run.process && $0.overlaps(run.start, (run.end ?? Int64.max - 1000) + 1000) }) {
                struck[run.task, default: 0] += 1
            }
        }
        var excess: [String] = []
        for (task, count) in counted {
            let attempts = task.first == "r" ? Settings.retryAttempts : 1
            if count > attempts + (struck[task] ?? 0) { excess.append("\(task) ran \(count)× (struck \(struck[task] ?? 0)×)") }
        }
        let retriedDone = counted.filter { $0.key.first == "r" }.count
        report.add("queue", "retried tasks run / first attempts failed on purpose", "\(retriedDone) / \(retriedFailures)")
        report.add("queue", "tasks run more often than their attempts plus the runs struck by a worker fault",
                   excess.isEmpty ? "0" : "\(excess.count): \(excess.sorted().prefix(5).joined(separator: ", "))",
                   must: "= 0", excess.isEmpty)
    }

    // MARK: (d) Job store

    func jobs(_ report: inout Report, backend: String) {
        var requests: [Substring: Substring] = [:]
        var queued: [Substring: Substring] = [:]
        var fulfilled: [Substring: Int] = [:]
        var firstFulfilled: [Substring: Int64] = [:]
        var notified: [String: Int] = [:]
        var wrongValue = 0
        for event in events where event.fields.first.map(String.init) == backend {
            let fields = event.fields
            switch event.kind {
            case "JC" where fields.count >= 3: requests[fields[1]] = fields[2]
            case "JQ" where fields.count >= 3: queued[fields[1]] = fields[2]
            case "JF" where fields.count >= 2:
                fulfilled[fields[1], default: 0] += 1
                if firstFulfilled[fields[1]] == nil { firstFulfilled[fields[1]] = event.time }
            case "JN" where fields.count >= 4:
                notified["\(fields[1]) \(fields[2])", default: 0] += 1
                if let request = requests[fields[1]], fields.count >= 4, fields[3] != "done:" + request { wrongValue += 1 }
            default: break
            }
        }
        let lost = queued.filter { notified["\($0.key) \($0.value)"] == nil }
        // On a cluster, a fulfil acknowledged just before its primary was lost may be gone:
        // the job is pulled and fulfilled again.
        let losses = primaryLosses
        let twiceAll = fulfilled.filter { $0.value > 1 }
        let twiceExcused = twiceAll.filter { job in
            firstFulfilled[job.key].map { overlapsPrimaryLoss(losses, $0, $0) } ?? false
        }.count
        let twice = twiceAll.count - twiceExcused
        let repeats = notified.values.reduce(0) { $0 + $1 - 1 }
        let done = queued.keys.filter { fulfilled[$0] != nil }.count
        let area = "jobs (\(backend))"
        report.add(area, "jobs created and queued / fulfilled / targets notified", "\(queued.count) / \(done) / \(queued.count - lost.count)")
        report.add(area, "jobs lost (queued, never notified)", lost.isEmpty ? "0" : "\(lost.count) (e.g. \(lost.keys.prefix(3).joined(separator: ", ")))",
                   must: "= 0", lost.isEmpty)
        if cluster {
            report.add(area, "jobs fulfilled twice, the first time just before a primary loss (excused)", "\(twiceExcused)")
            report.add(area, "jobs fulfilled twice otherwise", "\(twice)", must: "= 0", twice == 0)
        } else {
            report.add(area, "jobs fulfilled twice", "\(twice)", must: "= 0", twice == 0)
        }
        report.add(area, "notifications with a value other than the job's", "\(wrongValue)", must: "= 0", wrongValue == 0)
        report.add(area, "repeated notifications (at least once)", "\(repeats)")
    }

    // MARK: Hangs

    func hangs(_ report: inout Report, _ faults: [Fault]) {
        var started: [String: (Event, Int64)] = [:]
        var hung: [String] = []
        let exitedCleanly = Set(events.filter { $0.kind == "X" || $0.kind == "Z" }.map(\.process))
        func stoppedMillis(_ process: String, _ from: Int64, _ to: Int64) -> Int64 {
            faults.filter { $0.kind == .stopWorker && $0.target == process && $0.overlaps(from, to) }
                .reduce(0) { $0 + (min($1.end, to) - max($1.start, from)) }
        }
        for event in events where event.fields.count >= 2 {
            let key = "\(event.process) \(event.fields[0]) \(event.fields[1])"
            if event.kind == "S" {
                started[key] = (event, event.time)
            } else if event.kind == "E", let (_, start) = started.removeValue(forKey: key) {
                let limit = (event.fields[0] == "fanout" ? Settings.fanoutLimitMillis : Settings.operationLimitMillis)
                    + stoppedMillis(event.process, start, event.time)
                if event.time - start > limit { hung.append("\(key) took \(event.time - start) ms") }
            }
        }
        var lastEvent: [String: Int64] = [:]
        for event in events { lastEvent[event.process] = event.time }
        for (key, (event, start)) in started {
            if exitedCleanly.contains(event.process) || hungAtStop.contains(event.process) {
                hung.append("\(key) never returned")
            } else if let last = lastEvent[event.process] {
                // Killed with the operation open: it must not have been open too long by then.
                let limit = (event.fields[0] == "fanout" ? Settings.fanoutLimitMillis : Settings.operationLimitMillis)
                    + stoppedMillis(event.process, start, last)
                if last - start > limit { hung.append("\(key) open for \(last - start) ms when its process was killed") }
            }
        }
        let detail = hung.isEmpty ? "0" : "\(hung.count): \(hung.prefix(5).joined(separator: "; "))"
        report.add("all", "waiters that hung past their timeout", detail, must: "= 0", hung.isEmpty)
        report.add("all", "processes that did not stop when asked", hungAtStop.isEmpty ? "0" : hungAtStop.joined(separator: ", "),
                   must: "= 0", hungAtStop.isEmpty)
        // Every worker process ends by a kill -9 of the schedule or cleanly (its `X` line).
        let killed = Set(faults.filter { $0.kind == .killWorker }.map(\.target))
        let unclean = Set(events.filter { $0.kind == "P" }.map(\.process))
            .subtracting(exitedCleanly).subtracting(killed).subtracting(hungAtStop).sorted()
        report.add("all", "worker processes that ended without a clean stop", unclean.isEmpty ? "0" : unclean.joined(separator: ", "),
                   must: "= 0", unclean.isEmpty)
    }

    // MARK: Recovery

    /// Redis faults: from the fault's end until a lock cycle acquired afterwards was accepted,
    /// a Redis job pull begun afterwards succeeded, and (when tasks were waiting) a task
    /// began. Worker faults: from the fault until the tasks, jobs and lock the struck process
    /// held were done or taken by someone.
    func recovery(_ report: inout Report, _ faults: [Fault]) {
        var acquiredAt: [Substring: Int64] = [:]
        for event in of("LA") where event.fields.count >= 2 { acquiredAt[event.fields[1]] = event.time }
        let accepted = of("LW").compactMap { event in acquiredAt[event.fields[1]].map { ($0, event.time) } }
        var pullStarts: [String: Int64] = [:]
        var pulls: [(Int64, Int64)] = []
        for event in events where event.fields.first == "pull-redis" && event.fields.count >= 2 {
            let key = "\(event.process) \(event.fields[1])"
            if event.kind == "S" { pullStarts[key] = event.time }
            if event.kind == "E", event.fields.count >= 3, event.fields[2] == "ok", let start = pullStarts[key] { pulls.append((start, event.time)) }
        }
        let taskStarts = of("QB").map(\.time)
        let dead = snapshot.deadLettered

        var longest: [FaultKind: Int64] = [:]
        var never: [String] = []
        var cutShort = 0
        for (index, fault) in faults.enumerated() {
            var recovered: Int64?
            if fault.kind.strikesWorker {
                recovered = handedOn(fault, dead: dead)
            } else {
                // A primary kill: from the kill (its end is the take-over).
                let from = fault.kind == .killPrimary ? fault.start : fault.end
                let lock = accepted.first { $0.0 >= fault.end }.map { $0.1 - from }
                let pull = pulls.first { $0.0 >= fault.end }.map { $0.1 - from }
                let task = taskStarts.first { $0 >= fault.end }.map { $0 - from } ?? 0
                if let lock, let pull { recovered = max(lock, pull, task) }
            }
            guard let recovered else {
                never.append("\(fault.kind.label(cluster: cluster)) at \(fault.start)")
                continue
            }
            // A recovery still under way when the next fault struck measures both: left out.
            let recoveredAt = (fault.kind.strikesWorker || fault.kind == .killPrimary ? fault.start : fault.end) + recovered
            if index + 1 < faults.count && recoveredAt > faults[index + 1].start {
                cutShort += 1
                continue
            }
            longest[fault.kind] = max(longest[fault.kind] ?? 0, recovered)
        }
        let figures = kinds.compactMap { kind in
            longest[kind].map { "\(kind.label(cluster: cluster)) \(String(format: "%.2f", Double($0) / 1000)) s" }
        }
        report.add("all", "longest recovery after each fault kind", figures.joined(separator: ", ")
                   + (cutShort > 0 ? " (\(cutShort) recoveries overlapped by the next fault left out)" : ""))
        report.add("all", "faults never recovered from", never.isEmpty ? "0" : never.joined(separator: "; "), must: "= 0", never.isEmpty)
    }

    /// For a struck worker: how long until what it held was done (0 if it held nothing);
    /// `nil` if something it held was never done. An item it held is a task begun and not
    /// ended, a job pulled and not settled, or the lock, as of the strike.
    private func handedOn(_ fault: Fault, dead: Set<String>) -> Int64? {
        var openTasks: [Substring: Int64] = [:]
        var openJobs: [Substring: Int64] = [:]
        var holding: Substring?
        for event in events where event.process == fault.target && event.time <= fault.start && !event.fields.isEmpty {
            switch event.kind {
            case "QB": openTasks[event.fields[0]] = event.time
            case "QE", "QC", "QF": openTasks[event.fields[0]] = nil
            case "JP" where event.fields.count >= 2: openJobs[event.fields[1]] = event.time
            case "JF", "JA", "JX": if event.fields.count >= 2 { openJobs[event.fields[1]] = nil }
            case "LA" where event.fields.count >= 2: holding = event.fields[1]
            case "LD": holding = nil
            default: break
            }
        }
        var latest = fault.start
        // Done by anyone after it was taken (by the struck process itself after a stop, too).
        for (task, since) in openTasks where !dead.contains(String(task)) {
            guard let done = events.first(where: { $0.kind == "QE" && $0.time >= since && $0.fields.first == task }) else { return nil }
            latest = max(latest, done.time)
        }
        for (job, since) in openJobs {
            // Fulfilled, found fulfilled, or (a fulfil that landed unlogged) notified.
            guard let done = events.first(where: { ["JF", "JA", "JN"].contains($0.kind) && $0.time >= since
                && $0.fields.count >= 2 && $0.fields[1] == job }) else { return nil }
            latest = max(latest, done.time)
        }
        if holding != nil {
            guard let next = events.first(where: { $0.kind == "LA" && $0.time > fault.start && $0.process != fault.target }) else { return nil }
            latest = max(latest, next.time)
        }
        return latest - fault.start
    }
}
