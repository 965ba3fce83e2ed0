// `make chaos`: a fault-injection soak of locks, fanout, the work queue and the job store.
// `hiredis-chaos` is the conductor; `hiredis-chaos child …` are the worker processes it
// spawns, kills, stops and restarts.
import ArgumentParser
import Foundation

@main
struct Chaos: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hiredis-chaos",
        abstract: "Injects faults (kill -9, SIGSTOP, dropped connections, Redis stalls and restarts, SCRIPT FLUSH) into a mixed workload and verifies that nothing was lost, no two holders overlapped and nothing hung.",
        subcommands: [Run.self, ChildCommand.self],
        defaultSubcommand: Run.self)
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Conducts a chaos run (the default).")

    @Option(help: "Seconds of fault injection (a drain and the verification follow).")
    var duration: Int = 120

    @Option(help: "The schedule's seed (printed by every run, to replay it). Random when omitted.")
    var seed: UInt64?

    @Option(help: "Worker processes.")
    var workers: Int = 4

    @Flag(help: "Keep the logs directory even when every figure held.")
    var keepLogs = false

    @Flag(help: "Run against a Redis Cluster (3 primaries, 1 replica each) and add primary kills and slot migrations to the faults.")
    var cluster = false

    func validate() throws {
        guard duration >= 5 else { throw ValidationError("--duration must be at least 5 seconds") }
        guard (1...16).contains(workers) else { throw ValidationError("--workers must be 1…16") }
    }

    func run() async throws {
        let seed = self.seed ?? UInt64.random(in: 1...999_999)
        let passed = try await Conductor(duration: .seconds(duration), seed: seed, workers: workers, keep: keepLogs, cluster: cluster).run()
        if !passed { throw ExitCode(1) }
    }
}

struct ChildCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "child", abstract: "A worker process (started by the conductor).",
                                                    shouldDisplay: false)

    @Option var directory: String
    @Option(help: "A redis:// URL, or cluster:host:port,… (RedisTarget).") var url: String
    @Option var name: String

    func run() async throws {
        try await Child(directory: URL(fileURLWithPath: directory), url: url, name: name).run()
    }
}
