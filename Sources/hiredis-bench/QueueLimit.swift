import Foundation
import Hiredis
import QueueKit
import RedisTestSupport

/// The queue's own per-task scripts run by `redis-benchmark`, one step after the other:
/// the best a client could do on this server with these scripts (issue 21), beside the
/// 4-worker queue shape.
///
/// - enqueue: 1,000 tasks a script from one client (`-c 1`), as the shape's producer
///   sends them; at least 20 requests, since redis-benchmark's rate is coarse for fewer.
/// - dequeue: 16 tasks a script (`max` 16, the most our run loop asks for at concurrency
///   16) from 4 clients (`-c 4`): each of our 4 workers has at most one dequeue and one
///   finish script in flight, so 4 clients put as many of each on the server at once.
///   Each takes real tasks that the enqueue step put in the list; the first process
///   number is `__rand_int__` of 10⁸ (16 numbers from it; ranges practically never meet).
/// - finish: 16 processes a script, `-c 4`, with the shape's retention (1 h, 1,000: the
///   record is kept, joins the completed list, and the list is trimmed in batches). The
///   process numbers redis-benchmark can send are random, so they cannot name the
///   processes that the dequeue step made: before this step the in-flight hash is
///   refilled with 5 × count processes `000000000000`…, each holding a task of its own,
///   and the numbers are drawn from that range. Picks repeat, so about 9 % of finishes
///   find their process gone and return at once (the `found` figure in the note says how
///   many did): the best is flattered by that much.
///
/// Also flattering the best: nobody subscribes to the channels the scripts publish on
/// (ours has 4 workers on the events channel), and one worker's in-flight hash holds
/// every process (ours: 4 small ones). Against it: ours may take fewer than 16 tasks a
/// dequeue and fewer than 16 processes a finish when the queue runs dry, which only
/// ours pays for.
func queueLimitSteps(_ context: Context, count: Int, found: Locked<[Double]>) -> [Reference] {
    let keys = QueueKeys(prefix: "benchlimit", queue: "tasks")
    let worker = "limit-worker"
    let all = keys.all(worker: worker).compactMap { $0 as? String }
    let queueKeys = Array(all.prefix(15))
    let batch = 16
    let retentionAge = "3600000", retentionCount = "1000"   // TaskRetention.completedDefault
    return [
        Reference(label: "enqueue", test: nil, arguments: [
            "-c", "1", "EVALSHA", context.queueScripts.enqueue, "15"] + queueKeys + [
            keys.channel, "0", "0", "", "", "", "0", ""] + Array(repeating: "task-0000", count: 1000),
                  operationsPerRequest: 1000, minimumRequests: 20, before: { context, _ in
            // A fresh queue each round (the records of earlier rounds' tasks stay: they are only read by key).
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            try await connection.send(RedisCommand("UNLINK", arguments: all))
        }),
        Reference(label: "dequeue", test: nil, arguments: [
            "-c", "4", "-r", "100000000", "EVALSHA", context.queueScripts.dequeue, "16"] + all + [
            worker, "\(batch)", "__rand_int__"],
                  operationsPerRequest: batch, before: { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            let waiting = try await connection.send("LLEN", keys.pending).decode(Int.self)
            let needed = max(1, count / batch) * batch
            guard waiting >= needed else { throw BenchError("the queue limit's dequeue needs \(needed) tasks, the list holds \(waiting)") }
        }),
        Reference(label: "finish", test: nil, arguments: [
            "-c", "4", "-r", "\(5 * count)", "EVALSHA", context.queueScripts.finish, "16"] + all + [
            keys.doneChannel, worker, keys.encoded + "/" + worker + "/", "0", "", retentionAge, retentionCount, keys.channel]
                  + Array(repeating: "__rand_int__", count: batch),
                  operationsPerRequest: batch, before: { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            try await connection.send("UNLINK", keys.working(worker), keys.tasks)
            try await connection.send("EVAL", fillInFlight, 2, keys.working(worker), keys.tasks, 5 * count)
        }, after: { context, count in
            let connection = try await RedisConnection.connect(context.configuration)
            defer { Task { await connection.close() } }
            let left = try await connection.send("HLEN", keys.working(worker)).decode(Int.self)
            let finishes = max(1, count / batch) * batch
            found.withLock { $0.append(Double(5 * count - left) / Double(finishes)) }
        }),
    ]
}

/// KEYS: in-flight hash, tasks hash; ARGV: n. Processes `%012d` 0…n−1 (as redis-benchmark
/// writes `__rand_int__`), each holding a task `f<i>` of its own.
private let fillInFlight = """
    for i = 0, tonumber(ARGV[1]) - 1 do
      local id = 'f' .. i
      redis.call('HSET', KEYS[1], string.format('%012d', i), id)
      redis.call('HSET', KEYS[2], id, 'task-0000')
    end
    return 1
    """

func queueLimitNote(_ found: Locked<[Double]>) -> String? {
    let values = found.withLock { $0 }
    guard let low = values.min(), let high = values.max() else { return nil }
    let range = low == high ? String(format: "%.0f %%", low * 100) : String(format: "%.0f–%.0f %%", low * 100, high * 100)
    return "the limit's finishes found their process in \(range) of calls (the rest return at once: the limit is flattered by them)"
}
