import Dispatch

/// A serial executor that runs actor jobs on one `DispatchQueue`.
///
/// A connection's actor, its hiredis event-loop hooks and its timers all run on the same
/// queue, so actor code and hiredis callbacks never race and never hop threads.
/// (`DispatchSerialQueue` is not available on Linux, hence this small wrapper.)
final class DispatchQueueExecutor: SerialExecutor {
    let queue: DispatchQueue

    init(label: String) {
        queue = DispatchQueue(label: label)
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
