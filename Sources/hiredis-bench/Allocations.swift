import ArgumentParser
import Foundation
import Hiredis
import LockKit
import QueueKit
import RedisTestSupport

/// Heap allocations per operation of one kind of operation (issue 21).
struct AllocationFigure: Codable, Sendable {
    var name: String
    /// The table's shape whose operation this is, if one is.
    var shape: String?
    var perOperation: Double
    /// The most allocations per operation the issue allows, if it sets a limit.
    var target: Double?
    var met: Bool? { target.map { perOperation <= $0 } }
}

/// The shim that counts allocations: `make bench` builds it from `scripts/malloc-count.c`.
let allocationShimName = "libhiredis-malloc-count.so"

/// Where the shim is: `HIREDIS_BENCH_MALLOC_COUNT`, or beside the executable or up to three
/// folders above it (`.build/release/hiredis-bench` → `.build/`), symlinks followed or not.
func findAllocationShim() -> String? {
    if let path = ProcessInfo.processInfo.environment["HIREDIS_BENCH_MALLOC_COUNT"], !path.isEmpty {
        return FileManager.default.fileExists(atPath: path) ? path : nil
    }
    let invoked = URL(fileURLWithPath: CommandLine.arguments[0])
    for executable in [invoked, invoked.resolvingSymlinksInPath()] {
        var folder = executable.deletingLastPathComponent()
        for _ in 0..<4 {
            let candidate = folder.appendingPathComponent(allocationShimName).path
            if FileManager.default.fileExists(atPath: candidate) { return candidate }
            folder = folder.deletingLastPathComponent()
        }
    }
    return nil
}

/// Runs `hiredis-bench allocations` with the shim preloaded, in a process of its own: the
/// timing runs of this process are never interposed. `nil` and a line saying how to get
/// the figures when the shim was not built.
func measureAllocations(_ context: Context) throws -> (figures: [AllocationFigure]?, text: String) {
    guard let shim = findAllocationShim() else {
        return (nil, "allocations per operation: not measured: \(allocationShimName) was not found (make bench builds it; "
                + "or: cc -shared -fPIC -O2 -o .build/\(allocationShimName) scripts/malloc-count.c -ldl)")
    }
    let process = ChildProcess()
    process.executableURL = URL(fileURLWithPath: context.executable)
    process.arguments = ["allocations", "--url", context.url, "--operations", context.quick ? "2000" : "20000"]
    var environment = ProcessInfo.processInfo.environment
    environment["LD_PRELOAD"] = [shim, environment["LD_PRELOAD"]].compactMap { $0 }.filter { !$0.isEmpty }.joined(separator: ":")
    process.environment = environment
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else { throw BenchError("hiredis-bench allocations failed (status \(process.terminationStatus))") }
    let figures = try JSONDecoder().decode([AllocationFigure].self, from: data)
    var lines = ["allocations per operation (malloc, calloc, realloc and the aligned ones, counted by \(allocationShimName) "
                 + "preloaded into a separate process of the bench; the timing runs are not interposed):"]
    for figure in figures {
        var line = "  \(figure.name): \(String(format: "%.2f", figure.perOperation))"
        if let target = figure.target { line += " (target ≤ \(String(format: "%g", target)): \(figure.met == true ? "met" : "NOT met"))" }
        lines.append(line)
    }
    return (figures, lines.joined(separator: "\n"))
}

/// The child of ``measureAllocations(_:)``: warms each operation up, reads the shim's
/// counter, runs `operations` of it, reads the counter again; prints the figures as JSON.
struct AllocationsChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "allocations", shouldDisplay: false)
    @Option(help: "The server, as REDIS_URL gives it.")
    var url: String
    @Option(help: "Operations of each kind (a lock cycle, a pipelined command…) after the warm-up.")
    var operations = 20_000

    func run() async throws {
        guard let symbol = dlsym(nil, "hiredis_kit_allocation_count") else {
            throw BenchError("hiredis_kit_allocation_count not found: run with LD_PRELOAD=.build/\(allocationShimName)")
        }
        let counter = unsafeBitCast(symbol, to: (@convention(c) () -> UInt64).self)
        let configuration = try RedisConfiguration(url: url)
        var figures: [AllocationFigure] = []

        /// Allocations per unit of `body(n)`, which does `n × units` units.
        func measure(_ name: String, shape: String?, target: Double? = nil, operations: Int, units: Int = 1,
                     _ body: (Int) async throws -> Void) async throws {
            try await body(max(operations / 10, 100))   // warm-up: caches, buffers, scripts loaded
            let before = counter()
            try await body(operations)
            let after = counter()
            figures.append(AllocationFigure(name: name, shape: shape, perOperation: Double(after - before) / Double(operations * units),
                                            target: target))
        }

        let connection = try await RedisConnection.connect(configuration)
        try await measure("sequential SET", shape: "sequential SET, 1 connection, 1 in flight", operations: operations) { n in
            for _ in 0..<n { try await connection.send("SET", "key:__rand_int__", "xxx") }
        }
        try await measure("sequential SET from the main actor", shape: "sequential SET from the main actor (top-level code)",
                          operations: operations) { n in
            try await mainActorSETs(connection, n)
        }
        let batch = Array(repeating: RedisCommand("SET", "key:__rand_int__", "xxx"), count: 50)
        try await measure("pipelined SET, per command (batches of 50, built once)", shape: "explicit pipeline, 50 per batch",
                          target: 3, operations: max(1, operations / 50), units: 50) { n in
            for _ in 0..<n { _ = try await connection.pipeline(batch) }
        }
        await connection.close()

        let locks = try await callbackQueue(configuration)
        try await measure("lock acquire+release cycle", shape: "lock acquire+release, uncontended, sequential",
                          operations: max(1, operations / 2)) { n in
            for _ in 0..<n {
                let lock = try await locks.once("bench:allocations")
                try await lock.release()
            }
        }

        var options = WorkQueueOptions(prefix: "benchalloc\(UInt32.random(in: 0...UInt32.max))")
        options.pollInterval = .seconds(60)
        let queue = try WorkQueue(client: try await RedisConnection.connect(configuration),
                                  subscriber: try await RedisSubscriber.connect(configuration), options: options)
        let worker = try await queue.startWorker()
        let events = try await worker.startWork("tasks")
        let listening = Task { for await _ in events {} }
        try await measure("queue task: enqueue, dequeue, finish (one at a time, one worker listening)", shape: nil,
                          operations: max(1, operations / 4)) { n in
            for _ in 0..<n {
                try await queue.enqueue("tasks", ["task"])
                guard let process = try await worker.dequeue("tasks") else { throw BenchError("nothing to dequeue") }
                try await worker.finish(process)
            }
        }
        listening.cancel()
        try? await worker.failWorker()

        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        print(String(decoding: try encoder.encode(figures), as: UTF8.self))
    }
}

/// `n` SETs awaited on the main actor.
@MainActor
private func mainActorSETs(_ connection: RedisConnection, _ n: Int) async throws {
    for _ in 0..<n { try await connection.send("SET", "key:__rand_int__", "xxx") }
}
