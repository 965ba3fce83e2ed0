// The faults, their seeded schedule, and the fleet of worker processes they strike.
import Foundation
import Hiredis
import RedisTestSupport
import Synchronization

enum FaultKind: String, CaseIterable, Sendable {
    case killWorker = "kill -9 worker"
    case stopWorker = "SIGSTOP worker"
    case stopRedis = "SIGSTOP redis-server"
    case clientKillNormal = "CLIENT KILL TYPE normal"
    case clientKillPubsub = "CLIENT KILL TYPE pubsub"
    case debugSleep = "DEBUG SLEEP"
    case restartRedis = "restart redis-server"
    case scriptFlush = "SCRIPT FLUSH"
    // Cluster only (`--cluster`).
    case killPrimary = "kill -9 primary"
    case migrateSlot = "slot migration"

    /// One round of the single-server schedule (its order is part of what a seed replays).
    static let singleServer: [FaultKind] = [.killWorker, .stopWorker, .stopRedis, .clientKillNormal, .clientKillPubsub,
                                            .debugSleep, .restartRedis, .scriptFlush]
    /// One round on a cluster: no restart of "the" server; primary kills and (twice as
    /// often) slot migrations instead.
    static let cluster: [FaultKind] = [.killWorker, .stopWorker, .stopRedis, .clientKillNormal, .clientKillPubsub,
                                       .debugSleep, .scriptFlush, .killPrimary, .migrateSlot, .migrateSlot]

    /// The name in the run's output and table (on a cluster the Redis faults strike a
    /// primary, or every node).
    func label(cluster: Bool) -> String {
        guard cluster else { return rawValue }
        switch self {
        case .stopRedis: return "SIGSTOP primary"
        case .debugSleep: return "DEBUG SLEEP primary"
        case .clientKillNormal, .clientKillPubsub, .scriptFlush: return rawValue + " (every node)"
        default: return rawValue
        }
    }

    /// A short name for the event log.
    var tag: String {
        switch self {
        case .killWorker: "kill"
        case .stopWorker: "stop"
        case .stopRedis: "stop-redis"
        case .clientKillNormal: "kill-normal"
        case .clientKillPubsub: "kill-pubsub"
        case .debugSleep: "sleep"
        case .restartRedis: "restart"
        case .scriptFlush: "flush"
        case .killPrimary: "kill-primary"
        case .migrateSlot: "migrate"
        }
    }

    init?(tag: Substring) {
        guard let kind = Self.allCases.first(where: { $0.tag == tag }) else { return nil }
        self = kind
    }

    var strikesWorker: Bool { self == .killWorker || self == .stopWorker }
}

/// How long the timed faults last: a stopped worker outlives its lock lease, its job lease
/// and its worker timeout; a stopped or sleeping Redis outlives the command timeout (but
/// not the worker timeout).
enum FaultTiming {
    static let workerStop: Duration = .seconds(4)
    static let redisStop: Duration = .milliseconds(1500)
    static let debugSleepSeconds = "1.5"
    static let restartDelay: Duration = .milliseconds(300)
}

/// SplitMix64: a small, well-known generator, so that one printed seed replays a schedule.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The schedule: kinds in shuffled rounds (so a short run still sees each kind early),
/// a pause of 0.5–2 s before each fault, the worker slot it strikes, and (on a cluster) a
/// number that picks the node or Redis slot it strikes.
struct FaultSchedule {
    private var generator: SeededGenerator
    private var round: [FaultKind] = []
    let slots: Int
    let kinds: [FaultKind]
    let picks: Bool

    init(seed: UInt64, slots: Int, kinds: [FaultKind] = FaultKind.singleServer, picks: Bool = false) {
        generator = SeededGenerator(seed: seed)
        self.slots = slots
        self.kinds = kinds
        self.picks = picks
    }

    mutating func next() -> (pause: Duration, kind: FaultKind, slot: Int, pick: Int) {
        if round.isEmpty { round = kinds.shuffled(using: &generator) }
        let kind = round.removeFirst()
        let pause = Duration.milliseconds(Int.random(in: 500...2000, using: &generator))
        let slot = Int.random(in: 0..<slots, using: &generator)
        // Drawn only with picks, so that a single-server seed replays as it always did.
        return (pause, kind, slot, picks ? Int.random(in: 0..<1_000_000, using: &generator) : 0)
    }
}

/// The worker processes, one per slot; a process that exits unasked is counted and replaced.
final class Fleet: Sendable {
    struct Slot {
        var process: ChildProcess?
        var name = ""
        var incarnation = 0
        var expectingExit = false
    }

    let executable: String
    let directory: URL
    let url: String   // a redis:// URL or a cluster spec (``RedisTarget``)
    private let slots: Mutex<[Slot]>
    private let stopping = Atomic<Bool>(false)
    let crashes = Mutex<[String]>([])

    init(executable: String, directory: URL, url: String, count: Int) {
        self.executable = executable
        self.directory = directory
        self.url = url
        slots = Mutex(Array(repeating: Slot(), count: count))
    }

    var count: Int { slots.withLock { $0.count } }

    func startAll() throws {
        for slot in 0..<count { try spawn(slot) }
    }

    /// Starts the next incarnation of `slot` (its own log and output file).
    func spawn(_ slot: Int) throws {
        let name = slots.withLock { slots -> String in
            slots[slot].incarnation += 1
            return "w\(slot).\(slots[slot].incarnation)"
        }
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["child", "--directory", directory.path, "--url", url, "--name", name]
        let output = directory.appendingPathComponent("logs/\(name).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        process.terminationHandler = { [weak self] finished in
            try? handle.close()
            self?.exited(slot: slot, process: finished)
        }
        // Into the slot before it runs (its exit handler looks for it there), out again
        // if it never started: such a ChildProcess has pid 0, which names our process group.
        slots.withLock { slots in
            slots[slot].process = process
            slots[slot].name = name
            slots[slot].expectingExit = false
        }
        do {
            try process.run()
        } catch {
            slots.withLock { slots in
                if slots[slot].process === process { slots[slot].process = nil }
            }
            throw error
        }
    }

    private func exited(slot: Int, process: ChildProcess) {
        let unexpected = slots.withLock { slots -> String? in
            guard slots[slot].process === process else { return nil }
            if slots[slot].expectingExit || stopping.load(ordering: .relaxed) { return nil }
            slots[slot].process = nil
            return slots[slot].name
        }
        guard let name = unexpected else { return }
        crashes.withLock { $0.append("\(name) exited with status \(process.terminationStatus)") }
        say("   ! \(name) exited unasked (status \(process.terminationStatus)); starting a new one")
        try? spawn(slot)
    }

    /// The process in `slot` now: pid and log name.
    func current(_ slot: Int) -> (pid: Int32, name: String)? {
        slots.withLock { slots in
            guard let process = slots[slot].process, process.isRunning else { return nil }
            return (process.processIdentifier, slots[slot].name)
        }
    }

    /// `kill -9`, then waits for the exit.
    func kill(_ slot: Int) async {
        let process = slots.withLock { slots -> ChildProcess? in
            slots[slot].expectingExit = true
            return slots[slot].process
        }
        guard let process else { return }
        signalProcess(process.processIdentifier, SIGCONT)
        signalProcess(process.processIdentifier, SIGKILL)
        while process.isRunning { try? await Task.sleep(for: .milliseconds(5)) }
    }

    func signal(_ slot: Int, _ signal: Int32) {
        if let pid = current(slot)?.pid { signalProcess(pid, signal) }
    }

    /// Every running process, e.g. to SIGCONT them all.
    var processes: [ChildProcess] { slots.withLock { $0.compactMap(\.process) } }

    /// Asks every process to stop (the stop file) and waits up to `grace`; returns the names
    /// of those that had to be killed.
    func stopAll(grace: Duration) async -> [String] {
        stopping.store(true, ordering: .relaxed)
        for process in processes { signalProcess(process.processIdentifier, SIGCONT) }
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("stop").path, contents: nil)
        let deadline = ContinuousClock.now + grace
        while ContinuousClock.now < deadline && processes.contains(where: \.isRunning) {
            try? await Task.sleep(for: .milliseconds(50))
        }
        var hung: [String] = []
        let running = slots.withLock { $0.compactMap { slot in slot.process.map { ($0, slot.name) } } }
        for (process, name) in running where process.isRunning {
            hung.append(name)
            signalProcess(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return hung
    }
}

/// Prints a line at once.
func say(_ line: String) {
    print(line)
    fflush(nil)
}
