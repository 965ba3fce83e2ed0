import Synchronization

/// Suspends until the current task is cancelled, then throws `CancellationError`: for a body
/// that must hold something (a lock, a permit, a task) until it is cancelled or its process
/// is killed.
public func untilCancelled() async throws {
    let (stream, continuation) = AsyncStream<Never>.makeStream()
    await withTaskCancellationHandler {
        for await _ in stream {}
    } onCancel: {
        continuation.finish()
    }
    throw CancellationError()
}

/// Opens once `count` arrivals have happened; ``wait()`` returns when it is open.
public final class Latch: Sendable {
    private let state: Mutex<(remaining: Int, waiters: [CheckedContinuation<Void, Never>])>

    public init(count: Int) { state = Mutex((count, [])) }

    public func arrive() {
        let opened = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.remaining -= 1
            guard state.remaining <= 0 else { return [] }
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in opened { waiter.resume() }
    }

    public func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { state -> Bool in
                if state.remaining <= 0 { return true }
                state.waiters.append(continuation)
                return false
            }
            if open { continuation.resume() }
        }
    }
}

/// `body`'s result, or `nil` when `timeout` passes first (`body` is then cancelled): awaiting
/// an event with a deadline.
public func within<T: Sendable>(_ timeout: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T? {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: timeout)   // the deadline, not a synchronisation
            return nil
        }
        defer { group.cancelAll() }
        return try await group.next()!
    }
}
