import Hiredis

/// Key and channel names. Every key of one queue shares the hash tag `{prefix:queue}`;
/// every key of the worker registry shares `{prefix}`. Each script touches one slot, so
/// the same code runs on Redis Cluster.
struct QueueKeys: Sendable {
    let queue: String
    let tag: String
    /// LIST of entry ids; the head is dequeued next, `stop` and recovery push to the head.
    var pending: String { tag + ":queue" }
    /// HASH entry id → task bytes.
    var tasks: String { tag + ":tasks" }
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
    /// HASH process id → entry id: what `worker` holds in this queue.
    func working(_ worker: String) -> String { tag + ":working:" + worker }

    /// Where `work`, `cancel` and `delete` are published.
    let channel: String

    init(prefix: String, queue: String) {
        self.queue = queue
        self.tag = "{\(prefix):\(queue)}"
        self.channel = "\(prefix):\(queue):events"
    }

    /// The nine keys every queue script receives first, plus `working:worker` when given.
    func all(worker: String? = nil) -> [any RedisArgument] {
        var keys: [any RedisArgument] = [pending, tasks, deliveries, uniqueEntries, markers, dead, reasons, owners, sequence]
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
}
