import Dispatch

/// A serial executor that runs actor jobs on one `DispatchQueue`.
///
/// A connection's actor, its hiredis event-loop hooks and its timers all run on the same
/// queue, so actor code and hiredis callbacks never race and never hop threads.
/// (`DispatchSerialQueue` is not available on Linux, hence this small wrapper.)
final class DispatchQueueExecutor: SerialExecutor {
    let queue: DispatchQueue

    private static let marker = DispatchSpecificKey<ObjectIdentifier>()

    init(label: String) {
        queue = DispatchQueue(label: label)
        queue.setSpecific(key: Self.marker, value: ObjectIdentifier(self))
    }

    /// Whether the current thread is running this queue.
    var isCurrent: Bool { DispatchQueue.getSpecific(key: Self.marker) == ObjectIdentifier(self) }

    /// Runs a short `body` on the queue now: directly when already on it, else with
    /// `sync`, which libdispatch runs on the calling thread when the queue is idle. Saves
    /// the thread hop of `async` on the path of every command. `body` blocks at most for
    /// an inline reply wait (``RedisConfiguration/inlineReplyWait``, a few hundred µs).
    func runNow(_ body: () -> Void) {
        if isCurrent { body() } else { queue.sync(execute: body) }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        queue.async {
            job.runSynchronously(on: self.asUnownedSerialExecutor())
        }
    }

    func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets `assumeIsolated` succeed inside Dispatch source handlers and `queue.async`
    /// blocks, which run on the queue but outside any Swift job.
    func checkIsolated() {
        dispatchPrecondition(condition: .onQueue(queue))
    }
}
