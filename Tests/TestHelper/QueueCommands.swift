import Foundation
import Hiredis
import QueueKit
import RedisTestSupport

/// Work-queue commands of the test helper.
enum QueueCommands {
    static func run(_ command: String, _ configuration: RedisTarget, _ arguments: [String]) async throws {
        let client = try await configuration.client()
        let subscriber = try await configuration.subscriber()
        switch command {
        case "queue-worker":
            // queue-worker <redis> <prefix> <queue> <concurrency> <logKey> <doneKey> <total> <handlerMs>
            // Works until <total> distinct tasks are done; logs "start|worker|task|delivery|ms"
            // to <logKey> when a handler starts and counts completions in the hash <doneKey>.
            let queueName = arguments[1]
            let concurrency = Int(arguments[2])!
            let logKey = arguments[3], doneKey = arguments[4]
            let total = Int(arguments[5])!, handlerTime = Int(arguments[6])!
            var options = WorkQueueOptions(prefix: arguments[0], heartbeatInterval: .milliseconds(250),
                                           workerTimeout: .seconds(5), cleanupInterval: .milliseconds(500))
            options.pollInterval = .milliseconds(500)
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: options)
            let worker = try await queue.startWorker()
            say("worker \(await worker.id)")
            let work = Task {
                try await worker.run(queueName, concurrency: concurrency) { process in
                    let now = Int64(Date().timeIntervalSince1970 * 1000)
                    try await client.send("RPUSH", logKey, "start|\(process.worker)|\(process.string)|\(process.deliveries)|\(now)")
                    if handlerTime > 0 { try await Task.sleep(for: .milliseconds(handlerTime)) }
                    try await client.send("HINCRBY", doneKey, process.task, 1)
                }
            }
            while try await client.send("HLEN", doneKey).decode(Int.self) < total {
                try await Task.sleep(for: .milliseconds(100))
            }
            work.cancel()
            _ = await work.result
            try await worker.failWorker()
            say("done")
        case "queue-hold":
            // queue-hold <redis> <prefix> <queue> <count> [<workerTimeoutMs>]: dequeues <count>
            // tasks, holds them until this worker learns it was declared dead, then tries to
            // finish them. Its heartbeat lives 800 ms unless given: a test that kills it
            // gives a longer one, so that a stall of a loaded machine does not fail it first.
            let queueName = arguments[1]
            let count = Int(arguments[2])!
            let timeout = arguments.count > 3 ? Int64(arguments[3])! : 800
            var options = WorkQueueOptions(prefix: arguments[0], heartbeatInterval: .milliseconds(100),
                                           workerTimeout: .milliseconds(timeout), cleanupInterval: .seconds(3600))
            options.pollInterval = .seconds(3600)
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: options)
            let worker = try await queue.startWorker()
            let events = try await worker.startWork(queueName)
            let held = try await worker.dequeue(queueName, max: count)
            say("held \(held.map(\.string).joined(separator: ","))")
            for await event in events { if case .failed = event { break } }
            var rejected = 0
            for process in held {
                do {
                    try await worker.finish(process)
                } catch let error as WorkQueueError where error.code == .processNotOwned {
                    rejected += 1
                }
            }
            say("finish rejected \(rejected) of \(held.count)")
        case "queue-take":
            // queue-take <redis> <prefix> <queue> <goKey> <result> [permanent]: takes one task,
            // prints "process <id>"; with goKey "-" finishes it at once with <result>, else
            // waits until goKey exists, then tries to finish it and prints "finished" or
            // "finish refused". "permanent" makes a worker without a heartbeat expiry that
            // holds its task until killed.
            let queueName = arguments[1], goKey = arguments[2], result = arguments[3]
            let permanent = arguments.count > 4 && arguments[4] == "permanent"
            var options = WorkQueueOptions(prefix: arguments[0], heartbeatInterval: .milliseconds(250),
                                           workerTimeout: permanent ? nil : .seconds(10), cleanupInterval: .seconds(3600))
            options.pollInterval = .seconds(3600)
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: options)
            let worker = try await queue.startWorker()
            let events = try await worker.startWork(queueName)
            var taken = try await worker.dequeue(queueName)
            if taken == nil {
                for await event in events {
                    guard case .work = event else { continue }
                    taken = try await worker.dequeue(queueName)
                    if taken != nil { break }
                }
            }
            guard let process = taken else { exit(3) }
            say("process \(process.id)")
            if permanent { try await untilCancelled() }
            if goKey != "-" {
                while try await client.send("EXISTS", goKey).decode(Int.self) == 0 {
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            do {
                try await worker.finish(process, result: result)
                say("finished")
            } catch let error as WorkQueueError where error.code == .processNotOwned {
                say("finish refused")
            }
            try await worker.failWorker()
        case "queue-run":
            // queue-run <redis> <prefix> <queue> <concurrency> <doneKey> <total> <handlerMs>:
            // works until <total> distinct tasks are done. Each handler raises the counter
            // <doneKey>:active (its peak across processes goes to <doneKey>:peak), runs
            // <handlerMs>, lowers it, and counts its task in the hash <doneKey>.
            let queueName = arguments[1]
            let concurrency = Int(arguments[2])!
            let doneKey = arguments[3]
            let total = Int(arguments[4])!, handlerTime = Int(arguments[5])!
            var options = WorkQueueOptions(prefix: arguments[0], heartbeatInterval: .milliseconds(250),
                                           workerTimeout: .seconds(5), cleanupInterval: .milliseconds(500))
            options.pollInterval = .milliseconds(500)
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: options)
            let worker = try await queue.startWorker()
            say("worker \(await worker.id)")
            let peak = """
                local n = redis.call('INCR', KEYS[1])
                if n > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], n) end
                return n
                """
            let work = Task {
                try await worker.run(queueName, concurrency: concurrency) { process in
                    try await client.send("EVAL", peak, 2, doneKey + ":active", doneKey + ":peak")
                    if handlerTime > 0 { try await Task.sleep(for: .milliseconds(handlerTime)) }
                    try await client.send("DECR", doneKey + ":active")
                    try await client.send("HINCRBY", doneKey, process.task, 1)
                }
            }
            while try await client.send("HLEN", doneKey).decode(Int.self) < total {
                try await Task.sleep(for: .milliseconds(100))
            }
            work.cancel()
            _ = await work.result
            try await worker.failWorker()
            say("done")
        case "queue-await":
            // queue-await <redis> <prefix> <queue> <taskID> <timeoutMs>: says "waiting", then
            // awaits the task's outcome and says "<state> <result>" or "timed out".
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: WorkQueueOptions(prefix: arguments[0]))
            say("waiting")
            do {
                let info = try await queue.waitUntilFinished(arguments[1], arguments[2], timeout: .milliseconds(Int64(arguments[3])!))
                say("\(info.state.rawValue) \(info.resultString ?? "")")
            } catch let error as WorkQueueError where error.code == .timedOut {
                say("timed out")
            }
        case "queue-progress":
            // queue-progress <redis> <prefix> <queue> <taskID>: says "watching" once it observes
            // the task, then each progress report as it arrives ("progress <number>" or
            // "progress bytes <text>"), then "end <state>" when the sequence ends.
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: WorkQueueOptions(prefix: arguments[0]))
            let updates = try await queue.progressUpdates(arguments[1], arguments[2])
            say("watching")
            for try await progress in updates {
                switch progress {
                case .number(let value): say("progress \(value)")
                case .bytes(let bytes): say("progress bytes \(String(decoding: bytes, as: UTF8.self))")
                }
            }
            say("end \(try await queue.task(arguments[1], arguments[2])?.state.rawValue ?? "gone")")
        case "queue-schedule":
            // queue-schedule <redis> <prefix> <queue> <stopKey>: says "scheduling", runs a
            // scheduler of the queue's repeatable tasks until <stopKey> exists (or it is
            // killed), then says "done".
            let queueName = arguments[1], stopKey = arguments[2]
            var options = WorkQueueOptions(prefix: arguments[0])
            options.pollInterval = .seconds(2)
            let queue = try WorkQueue(client: client, subscriber: subscriber, options: options)
            let scheduler = Task { try await queue.runRepeatables(queueName) }
            say("scheduling")
            while try await client.send("EXISTS", stopKey).decode(Int.self) == 0 {
                try await Task.sleep(for: .milliseconds(100))
            }
            scheduler.cancel()
            _ = await scheduler.result
            say("done")
        default:
            exit(2)
        }
    }
}
