import Hiredis

/// Key and channel names. Every key of one queue shares the hash tag `{prefix:name}`, where
/// `name` is the queue name encoded by ``QueueName/encode(_:)`` (so any name is safe);
/// every key of the worker registry shares `{prefix}`. Each script touches one slot, so
/// the same code runs on Redis Cluster.
package struct QueueKeys: Sendable {
    let queue: String
    /// The queue name as it appears in keys and channels.
    package let encoded: String
    let tag: String
    /// LIST of entry ids; the head is dequeued next, `stop` and recovery push to the head.
    package var pending: String { tag + ":queue" }
    /// HASH entry id → task bytes.
    package var tasks: String { tag + ":tasks" }
    /// HASH entry id → deliveries so far.
    var deliveries: String { tag + ":deliveries" }
    /// SET of entry ids that own a unique marker.
    var uniqueEntries: String { tag + ":unique" }
    /// SET of task bytes enqueued with `unique: true` and not yet finished or cancelled.
    var markers: String { tag + ":markers" }
    /// LIST of dead-lettered entry ids, oldest first.
    var dead: String { tag + ":dead" }
    /// HASH entry id → why it was last returned.
    var reasons: String { tag + ":reasons" }
    /// HASH worker id → `live`, or `dead:<ms>` once the worker was declared dead (its
    /// later dequeues in this queue are refused).
    var owners: String { tag + ":owners" }
    /// Counter for entry and process ids.
    var sequence: String { tag + ":seq" }
    /// ZSET of waiting entry ids with a priority other than 0; score
    /// `-priority·2³² + 2³¹ ± sequence` (higher priority first, FIFO within one priority;
    /// `stop` and recovery use a falling sequence to go to the front of their priority).
    var prioritized: String { tag + ":prio" }
    /// ZSET of delayed entry ids (scheduled, or waiting out a retry's backoff), scored by
    /// their due time in ms of the server's clock.
    var delayed: String { tag + ":delayed" }
    /// HASH of queue settings and counters: `paused`, `rate`/`per` (rate limit),
    /// `concurrency` (fleet-wide limit), `front` (falling sequence for prioritized
    /// give-backs), `watched` (some task was awaited: finishes look for waiters).
    var meta: String { tag + ":meta" }
    /// LIST of `<finished ms>|<id>` of completed tasks, oldest first (retention trims the head).
    package var completed: String { tag + ":completed" }
    /// LIST of `<finished ms>|<id>` of failed tasks, oldest first (retention trims the head).
    var failed: String { tag + ":failed" }
    /// HASH repeatable name → definition (``RepeatDefinition``).
    var repeats: String { tag + ":repeat" }
    /// HASH repeatable name → its next tick, ms of the server's clock.
    var repeatNext: String { tag + ":repeatnext" }
    /// ZSET of recent starts (rate limit), scored by start time in ms.
    var starts: String { tag + ":starts" }
    /// HASH of one task's record: `st` state, `pr` priority, `ca`/`sa`/`fa`/`du` created,
    /// started, finished and due times (server ms), `at` attempts, `ra` retry policy,
    /// `er` last error, `rs` result, `pg` progress, `w` watched.
    func job(_ id: String) -> String { tag + ":job:" + id }
    /// HASH process id → entry id: what `worker` holds in this queue.
    package func working(_ worker: String) -> String { tag + ":working:" + worker }

    /// Where `work`, `cancel` and `delete` are published.
    package let channel: String
    /// Where a `done` message is published for every finished process (producers listen).
    package let doneChannel: String

    package init(prefix: String, queue: String) {
        self.queue = queue
        self.encoded = QueueName.encode(queue)
        self.tag = "{\(prefix):\(encoded)}"
        self.channel = "\(prefix):\(encoded):events"
        self.doneChannel = "\(prefix):\(encoded):done"
    }

    /// The fifteen keys every queue script receives first, plus `working:worker` when given.
    package func all(worker: String? = nil) -> [any RedisArgument] {
        var keys: [any RedisArgument] = [pending, tasks, deliveries, uniqueEntries, markers, dead, reasons, owners, sequence,
                                         prioritized, delayed, meta, completed, failed, starts]
        if let worker { keys.append(working(worker)) }
        return keys
    }
}

/// The worker registry, in slot `{prefix}`.
struct RegistryKeys: Sendable {
    let tag: String
    init(prefix: String) { tag = "{\(prefix)}" }
    /// SET of registered worker ids.
    var workers: String { tag + ":workers" }
    /// `RUN` with a PX of the worker timeout, refreshed by the heartbeat.
    func heartbeat(_ worker: String) -> String { tag + ":heartbeat:" + worker }
    /// SET of queue names the worker started work on.
    func queues(_ worker: String) -> String { tag + ":queues:" + worker }
}

/// The messages on a queue's channel: a kind, a colon, a payload.
enum QueueMessage {
    static let work = "work:"
    static let cancel = "cancel:"
    static let delete = "delete:"
    /// A repeatable task was added or removed (schedulers re-read; workers ignore it).
    static let repeatChanged = "repeat:"
}

/// Queue names in keys and channels. Any non-empty name is allowed: `%`, `:`, `{`, `}` and
/// `/` are percent-encoded, so that an encoded name never ends a hash tag early, never
/// reads as a key's separator, and never collides with another name's keys. Names without
/// those characters are their own encoding.
enum QueueName {
    private static let reserved: Set<UInt8> = [UInt8(ascii: "%"), UInt8(ascii: ":"), UInt8(ascii: "{"),
                                               UInt8(ascii: "}"), UInt8(ascii: "/")]

    static func encode(_ name: String) -> String {
        guard name.utf8.contains(where: { reserved.contains($0) }) else { return name }
        var out: [UInt8] = []
        out.reserveCapacity(name.utf8.count + 8)
        let hex = Array("0123456789ABCDEF".utf8)
        for byte in name.utf8 {
            if reserved.contains(byte) {
                out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The name of an encoded one; `nil` when `encoded` is not an encoding.
    static func decode(_ encoded: String) -> String? {
        guard encoded.utf8.contains(UInt8(ascii: "%")) else { return encoded }
        var out: [UInt8] = []
        var bytes = encoded.utf8.makeIterator()
        while let byte = bytes.next() {
            guard byte == UInt8(ascii: "%") else { out.append(byte); continue }
            guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue) else { return nil }
            out.append(high << 4 | low)
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return byte - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
