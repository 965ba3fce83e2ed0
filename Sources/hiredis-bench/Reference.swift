import Foundation
import RedisTestSupport

/// A `redis-benchmark` run of the same shape on the same server.
struct Reference: Sendable {
    /// What the table calls it, e.g. `redis-benchmark -t set -c 1`.
    let label: String
    let test: String?           // the CSV row to read: SET, GET; nil: the only one (a command given in full)
    let arguments: [String]     // beyond host, port, count
    /// Operations one request does (a script taking a batch of tasks): `count` operations
    /// are `count / operationsPerRequest` requests, but at least `minimumRequests`
    /// (redis-benchmark's rate is coarse for a handful of requests).
    var operationsPerRequest = 1
    var minimumRequests = 1
    /// Run before and after the measured run (outside its time), with the shape's count:
    /// state the step needs, and what it found.
    var before: (@Sendable (Context, Int) async throws -> Void)? = nil
    var after: (@Sendable (Context, Int) async throws -> Void)? = nil

    /// How many requests a run of `count` operations sends.
    func requests(_ count: Int) -> Int { max(minimumRequests, count / operationsPerRequest, 1) }

    /// The step with its hooks, timed by redis-benchmark alone.
    func run(_ context: Context, count: Int) async throws -> Run {
        try await before?(context, count)
        let run = try run(host: context.host, port: context.port, count: count)
        try await after?(context, count)
        return run
    }

    func run(host: String, port: Int, count: Int) throws -> Run {
        let requests = requests(count)
        let operations = requests * operationsPerRequest
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: try findTool("redis-benchmark"))
        process.arguments = ["-h", host, "-p", "\(port)", "-n", "\(requests)", "--csv"] + arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        let cpuBefore = CPUTime(RUSAGE_CHILDREN)
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let cpu = CPUTime(RUSAGE_CHILDREN) - cpuBefore
        let text = String(decoding: data, as: UTF8.self)
        // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
        for line in text.split(whereSeparator: \.isNewline) {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: CharacterSet(charactersIn: "\"")) }
            guard fields.first != "test", test == nil || fields.first == test, fields.count >= 2,
                  let rps = Double(fields[1]) else { continue }
            var run = Run(operations: operations, seconds: Double(requests) / rps, cpu: cpu)
            if fields.count >= 7, let p50 = Double(fields[4]), let p99 = Double(fields[6]) {
                run.latencies = [UInt64(p50 * 1_000_000), UInt64(p99 * 1_000_000)]
                run.referencePercentiles = (p50, p99)
            }
            return run
        }
        throw BenchError("redis-benchmark printed no \(test ?? "result") row: \(text.prefix(200))")
    }
}

extension Run {
    /// redis-benchmark reports its own percentiles.
    var referencePercentiles: (Double, Double)? {
        get { referenceP50.map { ($0, referenceP99 ?? $0) } }
        set { referenceP50 = newValue?.0; referenceP99 = newValue?.1 }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func findTool(_ name: String) throws -> String {
    let path = findExecutable(name)
    guard path.hasPrefix("/") else { throw BenchError("\(name) not found (apt-get install redis-tools, or make deps)") }
    return path
}
