import ArgumentParser
import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport

@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hiredis-bench",
        abstract: "HiredisKit against redis-benchmark, on the same throwaway redis-server, in the same run.",
        subcommands: [Measure.self, FanoutChild.self, AllocationsChild.self],
        defaultSubcommand: Measure.self)
}

struct Measure: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run every shape and print the table.")

    @Flag(help: "A smaller count per shape: proves the bench works, measures little.")
    var quick = false

    @Option(help: "Also write the figures as JSON to this file.")
    var json: String?

    @Option(help: "Rounds per shape (ours and the reference alternate; the median is reported).")
    var rounds = 3

    @Option(help: "Only the shapes whose name contains this text (\"memory\": only the RSS check).")
    var only: String?

    func run() async throws {
        let environmentURL = ProcessInfo.processInfo.environment["REDIS_URL"].flatMap { $0.isEmpty ? nil : $0 }
        var server: RedisServer?
        let configuration: RedisConfiguration
        if let environmentURL {
            configuration = try RedisConfiguration(url: environmentURL)
        } else {
            server = try await RedisServer.start()
            configuration = server!.configuration
        }
        guard case .tcp(let host, let port) = configuration.endpoint else { throw BenchError("the bench needs a TCP endpoint") }
        let loader = try await RedisConnection.connect(configuration)
        let lockScripts = (acquire: try await loader.send("SCRIPT", "LOAD", Scripts.acquireOne.source).decode(String.self),
                           release: try await loader.send("SCRIPT", "LOAD", Scripts.release.source).decode(String.self))
        let queueScripts = (enqueue: try await loader.send("SCRIPT", "LOAD", QueueScripts.enqueue.source).decode(String.self),
                            dequeue: try await loader.send("SCRIPT", "LOAD", QueueScripts.dequeue.source).decode(String.self),
                            finish: try await loader.send("SCRIPT", "LOAD", QueueScripts.finish.source).decode(String.self))
        await loader.close()
        let context = Context(configuration: configuration, url: environmentURL ?? "redis://\(host):\(port)",
                              lockScripts: lockScripts, queueScripts: queueScripts, host: host, port: port, quick: quick,
                              executable: URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path)
        print(machineDescription(server: server, host: host, port: port))
        print("")
        var all: [Figures] = []
        for shape in shapes(context) where only.map({ shape.name.contains($0) }) ?? true {
            var ours: [Run] = []
            var references: [Run] = []
            var baselines: [Run] = []
            var best: [Double] = []
            for _ in 0..<max(1, rounds) {
                ours.append(try await shape.ours(context, shape.count))
                if let baseline = shape.baseline {
                    baselines.append(try await baseline.run(context, shape.count))
                }
                if let reference = shape.reference {
                    references.append(try reference.run(host: host, port: port, count: shape.count))
                }
                if !shape.steps.isEmpty {
                    // One operation takes the sum of its steps' times.
                    var seconds = 0.0
                    for step in shape.steps { seconds += 1 / (try await step.run(context, count: shape.count).perSecond) }
                    best.append(1 / seconds)
                }
            }
            var figures = summarize(shape, ours, references, baselines)
            if !best.isEmpty {
                figures.bestLabel = shape.bestLabel
                figures.bestMedian = median(best)
                figures.ratioToBest = figures.median / median(best)
                figures.targetToBest = shape.bestTarget
            }
            all.append(figures)
            print(row(figures))
            fflush(nil)
        }
        print("")
        var allocations: [AllocationFigure]?
        if only.map({ "allocations".contains($0) }) ?? true {
            let measured = try measureAllocations(context)
            allocations = measured.figures
            for figure in measured.figures ?? [] {
                guard let index = all.firstIndex(where: { $0.shape == figure.shape }) else { continue }
                all[index].allocationsPerOperation = figure.perOperation
            }
            print(measured.text)
            print("")
        }
        var memoryRun = "memory check skipped (--only)"
        if only.map({ "memory".contains($0) }) ?? true {
            memoryRun = try await memoryCheck(context)
        }
        print(memoryRun)
        print("")
        print(table(all))
        print("")
        print(targets(all, allocations))
        if let json {
            let report = Report(machine: machineDescription(server: server, host: host, port: port), figures: all, memory: memoryRun,
                                allocations: allocations)
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
            print("wrote \(json)")
        }
        await context.cluster.stop()
        if let server { await server.kill() }
    }

    struct Report: Codable {
        var machine: String
        var figures: [Figures]
        var memory: String
        /// Heap allocations per operation; nil when not measured (--only, or no shim).
        var allocations: [AllocationFigure]?
    }

    func summarize(_ shape: Shape, _ ours: [Run], _ references: [Run], _ baselines: [Run]) -> Figures {
        let rates = ours.map(\.perSecond)
        let middle = ours.sorted { $0.perSecond < $1.perSecond }[ours.count / 2]
        var figures = Figures(shape: shape.name, unit: shape.unit, median: median(rates), minimum: rates.min() ?? 0,
                              maximum: rates.max() ?? 0, p50Milliseconds: middle.percentile(0.5),
                              p99Milliseconds: middle.percentile(0.99), target: shape.target, floor: shape.floor,
                              note: shape.note?())
        (figures.cpuMicroseconds, figures.cpuUserMicroseconds) = (middle.cpuMicroseconds?.total, middle.cpuMicroseconds?.user)
        if let reference = shape.reference, !references.isEmpty {
            let referenceRates = references.map(\.perSecond)
            let referenceMiddle = references.sorted { $0.perSecond < $1.perSecond }[references.count / 2]
            figures.reference = reference.label
            figures.referenceMedian = median(referenceRates)
            figures.referenceP50Milliseconds = referenceMiddle.referenceP50
            figures.referenceP99Milliseconds = referenceMiddle.referenceP99
            figures.ratio = figures.median / median(referenceRates)
            (figures.referenceCPUMicroseconds, figures.referenceCPUUserMicroseconds) =
                (referenceMiddle.cpuMicroseconds?.total, referenceMiddle.cpuMicroseconds?.user)
        }
        if let baseline = shape.baseline, !baselines.isEmpty {
            let baselineMiddle = baselines.sorted { $0.perSecond < $1.perSecond }[baselines.count / 2]
            figures.baseline = baseline.label
            figures.baselineMedian = median(baselines.map(\.perSecond))
            figures.baselineP50Milliseconds = baselineMiddle.percentile(0.5)
            figures.baselineP99Milliseconds = baselineMiddle.percentile(0.99)
            figures.baselineCPUMicroseconds = baselineMiddle.cpuMicroseconds?.total
            figures.ratioToBaseline = figures.median / median(baselines.map(\.perSecond))
        }
        return figures
    }

    /// 1,000,000 SETs (100,000 with --quick) from 50 tasks on one connection, RSS sampled.
    func memoryCheck(_ context: Context) async throws -> String {
        let total = quick ? 100_000 : 1_000_000
        let connection = try await RedisConnection.connect(context.configuration)
        let before = memory()
        var samples: [Double] = []
        for _ in 0..<10 {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<50 {
                    group.addTask {
                        for _ in 0..<(total / 500) { try await connection.send("SET", "key:__rand_int__", "xxx") }
                    }
                }
                try await group.waitForAll()
            }
            samples.append(memory().rss)
        }
        await connection.close()
        let after = memory()
        let trend = samples.map { String(format: "%.1f", $0) }.joined(separator: " ")
        return String(format: "memory over %d commands: RSS %.1f MiB before, %.1f MiB after (every 10%%: %@), peak %.1f MiB",
                      total, before.rss, after.rss, trend, after.peak)
    }
}

func machineDescription(server: RedisServer?, host: String, port: Int) -> String {
    let cores = ProcessInfo.processInfo.activeProcessorCount
    let memory = Double(ProcessInfo.processInfo.physicalMemory) / 1_073_741_824
    var cpu = "unknown CPU"
    if let text = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
       let line = text.split(separator: "\n").first(where: { $0.hasPrefix("model name") }) {
        cpu = line.split(separator: ":", maxSplits: 1).last.map { $0.trimmingCharacters(in: .whitespaces) } ?? cpu
    }
    let redis = server == nil ? "REDIS_URL \(host):\(port)" : "throwaway redis-server on \(host):\(port)"
    return String(format: "machine: %d cores (%@), %.0f GiB; %@; build: %@", cores, cpu, memory, redis, buildMode)
}

#if DEBUG
let buildMode = "DEBUG (numbers are not representative: use make bench)"
#else
let buildMode = "release"
#endif

func format(_ value: Double?) -> String {
    guard let value else { return "—" }
    if value >= 1000 { return String(format: "%.0f", value) }
    if value >= 10 { return String(format: "%.1f", value) }
    return String(format: "%.3f", value)
}

func row(_ figures: Figures) -> String {
    var text = "\(figures.shape): \(format(figures.median)) \(figures.unit) (min \(format(figures.minimum)), max \(format(figures.maximum))), p50 \(format(figures.p50Milliseconds)) ms, p99 \(format(figures.p99Milliseconds)) ms"
    if let reference = figures.reference {
        text += "; \(reference): \(format(figures.referenceMedian)) ops/s; ratio \(String(format: "%.2f", figures.ratio ?? 0))"
        if let target = figures.target { text += " (target ≥ \(target): \(figures.met == true ? "met" : "NOT met"))" }
    }
    if let cpu = figures.cpuMicroseconds {
        text += "; client CPU \(format(cpu)) µs/op (user \(format(figures.cpuUserMicroseconds)))"
        if let reference = figures.referenceCPUMicroseconds {
            text += ", redis-benchmark \(format(reference)) (user \(format(figures.referenceCPUUserMicroseconds)))"
        }
    }
    if let label = figures.bestLabel, let best = figures.bestMedian, let ratio = figures.ratioToBest {
        text += "; \(label): \(format(best)) \(figures.unit), ours \(String(format: "%.2f", ratio)) of it"
        if let target = figures.targetToBest { text += " (target ≥ \(target): \(figures.bestMet == true ? "met" : "NOT met"))" }
    }
    if let baseline = figures.baseline {
        text += "; \(baseline): \(format(figures.baselineMedian)) \(figures.unit), p50 \(format(figures.baselineP50Milliseconds)) ms, p99 \(format(figures.baselineP99Milliseconds)) ms, client CPU \(format(figures.baselineCPUMicroseconds)) µs/op; ratio \(String(format: "%.2f", figures.ratioToBaseline ?? 0))"
        if let target = figures.target { text += " (target ≥ \(target)× single node: \(figures.met == true ? "met" : "NOT met"))" }
    }
    if let floor = figures.floor { text += " (target ≥ \(format(floor)) \(figures.unit): \(figures.met == true ? "met" : "NOT met"))" }
    if let note = figures.note, !note.isEmpty { text += "; \(note)" }
    return text
}

func table(_ all: [Figures]) -> String {
    var lines = ["| shape | ours (median) | min–max | p50 ms | p99 ms | reference or single node (median) | ref p50/p99 ms | ratio | target | client CPU µs/op (ours / ref) | allocs/op |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
    for f in all {
        let reference = f.reference.map { "\($0): \(format(f.referenceMedian))" }
            ?? f.baseline.map { "\($0): \(format(f.baselineMedian))" } ?? "—"
        let referenceLatency = f.reference != nil ? "\(format(f.referenceP50Milliseconds)) / \(format(f.referenceP99Milliseconds))"
            : f.baseline != nil ? "\(format(f.baselineP50Milliseconds)) / \(format(f.baselineP99Milliseconds))" : "—"
        let ratio = (f.ratio ?? f.ratioToBaseline).map { String(format: "%.2f", $0) } ?? "—"
        var targets = [f.target.map { "≥ \($0)\(f.baseline == nil ? "" : "× single node") \(f.met == true ? "met" : "not met")" }
            ?? f.floor.map { "≥ \(format($0)) \(f.unit) \(f.met == true ? "met" : "not met")" }].compactMap { $0 }
        if let best = f.targetToBest, let ratio = f.ratioToBest {
            targets.append(String(format: "%.2f of its scripts: ≥ %@ %@", ratio, "\(best)", f.bestMet == true ? "met" : "not met"))
        }
        let target = targets.isEmpty ? "report" : targets.joined(separator: "; ")
        let cpu = "\(format(f.cpuMicroseconds)) / \(format(f.referenceCPUMicroseconds ?? f.baselineCPUMicroseconds))"
        let allocations = f.allocationsPerOperation.map { String(format: "%.2f", $0) } ?? "—"
        lines.append("| \(f.shape) | \(format(f.median)) \(f.unit) | \(format(f.minimum))–\(format(f.maximum)) | \(format(f.p50Milliseconds)) | \(format(f.p99Milliseconds)) | \(reference) | \(referenceLatency) | \(ratio) | \(target) | \(cpu) | \(allocations) |")
    }
    return lines.joined(separator: "\n")
}

/// Shapes that have no target but whose figure issue 21 asks for.
let reportedShapes = ["job store (file): create→pull→fulfil→notify"]

/// Every figure that has a target, beside it, one line each (and the reported ones): what
/// issue 21 asks `make bench` to show.
func targets(_ all: [Figures], _ allocations: [AllocationFigure]?) -> String {
    func verdict(_ met: Bool?) -> String { met == true ? "met" : "NOT met" }
    var lines = ["targets:"]
    for f in all {
        if let target = f.target, let ratio = f.ratio {
            lines.append(String(format: "  %@: %.2f of %@ (target ≥ %@: %@)", f.shape, ratio, f.reference ?? "the reference", "\(target)", verdict(f.met)))
        } else if let target = f.target, let ratio = f.ratioToBaseline {
            lines.append(String(format: "  %@: %.2f of %@ (target ≥ %@: %@)", f.shape, ratio, f.baseline ?? "the single node", "\(target)", verdict(f.met)))
        }
        if let floor = f.floor {
            lines.append("  \(f.shape): \(format(f.median)) \(f.unit) (target ≥ \(format(floor)) \(f.unit): \(verdict(f.met)))")
        }
        if let target = f.targetToBest, let ratio = f.ratioToBest {
            lines.append(String(format: "  %@: %.2f of its scripts run by redis-benchmark (target ≥ %@: %@)", f.shape, ratio, "\(target)", verdict(f.bestMet)))
        }
        if reportedShapes.contains(f.shape) {
            lines.append("  \(f.shape): \(format(f.median)) \(f.unit) (report)")
        }
    }
    for figure in allocations ?? [] {
        guard let target = figure.target else { continue }
        lines.append(String(format: "  allocations, %@: %.2f (target ≤ %g: %@)", figure.name, figure.perOperation, target, verdict(figure.met)))
    }
    if allocations == nil { lines.append("  allocations: not measured (--only without it, or the shim not built: see above)") }
    return lines.joined(separator: "\n")
}

/// A child process of the fanout shape: `callers` concurrent fanouts of one id; prints
/// each caller's return time (wall clock, seconds).
struct FanoutChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "fanout-child", shouldDisplay: false)
    @Option(help: "The server, as REDIS_URL gives it (password and database included).")
    var url: String
    @Option var channel: String
    @Option var id: String
    @Option var callers: Int

    func run() async throws {
        let configuration = try RedisConfiguration(url: url)
        let client = try await RedisConnection.connect(configuration)
        let queue = try CallbackQueue(client: client, pubsub: try await RedisSubscriber.connect(configuration),
                                      options: CallbackQueueOptions(channel: channel))
        let id = self.id
        let times = try await withThrowingTaskGroup(of: Double.self) { group in
            for _ in 0..<callers {
                group.addTask {
                    _ = try await queue.fanout(id, timeout: .seconds(30)) { () async throws -> String in
                        try await client.send("INCR", id + ":runs")
                        try await Task.sleep(for: .milliseconds(200))
                        try await client.send("SET", id + ":completed", Date().timeIntervalSince1970)
                        return "value"
                    }
                    return Date().timeIntervalSince1970
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        print(times.map { String($0) }.joined(separator: "\n"))
    }
}
