import Foundation
import Hiredis

/// The loop of "sequential SET, 1 connection, 1 in flight" run by a caller on the main
/// actor, as top-level code or a command-line tool runs: every `await` resumes on the
/// main actor's executor, the main dispatch queue. Checked at the start
/// (`dispatchPrecondition`) and after each command (a queue-specific value set on the main
/// queue only); a resume off the main queue fails the shape.
///
/// On Linux the process's first thread is not the one that runs it: an async `main` ends
/// in `dispatchMain()`, which exits that thread, and from then on one dispatch thread at a
/// time drains the main queue (so `Thread.isMainThread` is false there, in top-level code
/// as here). That is the main actor a Linux program gets.
@MainActor
func mainActorSequentialSET(_ context: Context, _ count: Int) async throws -> Run {
    dispatchPrecondition(condition: .onQueue(.main))
    DispatchQueue.main.setSpecific(key: mainQueueKey, value: true)
    let connection = try await RedisConnection.connect(context.configuration)
    defer { Task { await connection.close() } }
    let value = "xxx"
    var latencies: [UInt64] = []
    latencies.reserveCapacity(count)
    var offMain = 0
    let cpuBefore = CPUTime(RUSAGE_SELF)
    let start = now()
    for _ in 0..<count {
        let started = now()
        try await connection.send("SET", "key:__rand_int__", value)
        latencies.append(now() - started)
        if DispatchQueue.getSpecific(key: mainQueueKey) != true { offMain += 1 }
    }
    let seconds = Double(now() - start) / 1e9
    let cpu = CPUTime(RUSAGE_SELF) - cpuBefore
    guard offMain == 0 else { throw BenchError("\(offMain) of \(count) SETs resumed off the main queue") }
    dispatchPrecondition(condition: .onQueue(.main))
    return Run(operations: count, seconds: seconds, latencies: latencies, cpu: cpu)
}

/// Set on the main queue alone: tells whether code runs on it without trapping.
private let mainQueueKey = DispatchSpecificKey<Bool>()
