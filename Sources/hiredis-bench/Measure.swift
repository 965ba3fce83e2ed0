import Foundation
import Synchronization

/// One timed run of a shape: how many operations, how long, and each operation's latency.
struct Run: Sendable {
    var operations: Int
    var seconds: Double
    var latencies: [UInt64] = []   // nanoseconds, one per operation (sampled for batches)
    var referenceP50: Double?
    var referenceP99: Double?
    /// CPU time (user + system) the client spent: this process for ours, redis-benchmark
    /// for the reference (the server's is in neither).
    var cpu: CPUTime?

    var perSecond: Double { Double(operations) / seconds }
    /// Client CPU microseconds per operation: user + system, and user alone.
    var cpuMicroseconds: (total: Double, user: Double)? {
        cpu.map { (($0.user + $0.system) * 1e6 / Double(operations), $0.user * 1e6 / Double(operations)) }
    }

    func percentile(_ p: Double) -> Double? {
        if let referenceP50 { return p < 0.9 ? referenceP50 : (referenceP99 ?? referenceP50) }
        guard !latencies.isEmpty else { return nil }
        let sorted = latencies.sorted()
        let index = min(sorted.count - 1, Int((Double(sorted.count) * p).rounded(.up)) - 1)
        return Double(sorted[max(0, index)]) / 1_000_000
    }
}

/// Figures of one shape over its rounds, ours and the reference's.
struct Figures: Codable, Sendable {
    var shape: String
    var unit: String
    var median: Double
    var minimum: Double
    var maximum: Double
    var p50Milliseconds: Double?
    var p99Milliseconds: Double?
    var reference: String?
    var referenceMedian: Double?
    var referenceP50Milliseconds: Double?
    var referenceP99Milliseconds: Double?
    var ratio: Double?
    /// Client CPU microseconds per operation (median round), ours and redis-benchmark's:
    /// user + system, and user alone.
    var cpuMicroseconds: Double?
    var cpuUserMicroseconds: Double?
    var referenceCPUMicroseconds: Double?
    var referenceCPUUserMicroseconds: Double?
    /// The best a client could do, from redis-benchmark runs of the operation's steps.
    var bestLabel: String?
    var bestMedian: Double?
    var ratioToBest: Double?
    /// The least `ratioToBest` the shape should reach.
    var targetToBest: Double?
    /// The same shape on a single node, measured beside ours (cluster shapes); `target`
    /// applies to `ratioToBaseline` when there is no reference.
    var baseline: String?
    var baselineMedian: Double?
    var baselineP50Milliseconds: Double?
    var baselineP99Milliseconds: Double?
    var baselineCPUMicroseconds: Double?
    var ratioToBaseline: Double?
    var target: Double?
    var floor: Double?
    var note: String?
    /// Heap allocations per operation (a separate, interposed run: see `allocations`).
    var allocationsPerOperation: Double?

    var bestMet: Bool? {
        guard let ratioToBest, let targetToBest else { return nil }
        return ratioToBest >= targetToBest
    }

    var met: Bool? {
        if let floor { return median >= floor }
        guard let ratio = ratio ?? ratioToBaseline, let target else { return nil }
        return ratio >= target
    }
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

/// Times `body` and records one latency per call of the `tick` it is given.
func timed(_ operations: Int, _ body: (_ tick: @escaping @Sendable (UInt64) -> Void) async throws -> Void) async rethrows -> Run {
    let collector = LatencyCollector()
    let cpuBefore = CPUTime(RUSAGE_SELF)
    let start = DispatchTime.now().uptimeNanoseconds
    try await body { collector.add($0) }
    let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    return Run(operations: operations, seconds: seconds, latencies: collector.all, cpu: CPUTime(RUSAGE_SELF) - cpuBefore)
}

/// CPU seconds, user and system, of this process (`RUSAGE_SELF`) or of its children that
/// were waited for (`RUSAGE_CHILDREN`).
struct CPUTime: Sendable {
    var user: Double
    var system: Double

    init(_ who: __rusage_who) {
        var usage = rusage()
        getrusage(__rusage_who_t(who.rawValue), &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        user = seconds(usage.ru_utime)
        system = seconds(usage.ru_stime)
    }

    private init(user: Double, system: Double) {
        self.user = user
        self.system = system
    }

    static func - (after: CPUTime, before: CPUTime) -> CPUTime {
        CPUTime(user: after.user - before.user, system: after.system - before.system)
    }
}

final class LatencyCollector: Sendable {
    private let values = Mutex<[UInt64]>([])
    func add(_ value: UInt64) { values.withLock { $0.append(value) } }
    var all: [UInt64] { values.withLock { $0 } }
}

@inline(__always) func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// The process's resident set and its peak, in MiB (Linux `/proc/self/status`).
func memory() -> (rss: Double, peak: Double) {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return (0, 0) }
    func field(_ name: String) -> Double {
        for line in text.split(separator: "\n") where line.hasPrefix(name + ":") {
            let digits = line.split(separator: " ").compactMap { Double($0) }.first ?? 0
            return digits / 1024
        }
        return 0
    }
    return (field("VmRSS"), field("VmHWM"))
}
