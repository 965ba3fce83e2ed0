import Foundation
import RedisTestSupport

/// A `redis-benchmark` run of the same shape on the same server.
struct Reference: Sendable {
    /// What the table calls it, e.g. `redis-benchmark -t set -c 1`.
    let label: String
    let test: String?           // the CSV row to read: SET, GET; nil: the only one (a command given in full)
    let arguments: [String]     // beyond host, port, count

    func run(host: String, port: Int, count: Int) throws -> Run {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: try findTool("redis-benchmark"))
        process.arguments = ["-h", host, "-p", "\(port)", "-n", "\(count)", "--csv"] + arguments
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
            var run = Run(operations: count, seconds: Double(count) / rps, cpu: cpu)
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
