import Hiredis

/// Gives something back to Redis (a lock, a permit) on the caller's behalf.
///
/// Tries `attempt` once, now. When Redis could not be asked, or its answer was lost (a
/// dropped connection, a restarting or stalled server, a cancelled task), it keeps trying
/// in the background, 25 ms doubling to 500 ms apart, while `wanted()` holds and until
/// `deadline()` (when the lease would have run out anyway), then calls `expired()`: the
/// key is not left taken for the rest of its lease. Any other error ends it. Returns
/// after the first try.
func giveBack(
    until deadline: @escaping @Sendable () -> ContinuousClock.Instant,
    while wanted: @escaping @Sendable () -> Bool = { true },
    expired: @escaping @Sendable () -> Void = {},
    _ attempt: @escaping @Sendable () async throws -> Void
) async {
    do {
        try await attempt()
        return
    } catch {
        // A cancelled task never asked; a transient error may or may not have asked.
        guard error is CancellationError || (error as? RedisError)?.isTransient == true else { return }
    }
    Task {
        var delay: Duration = .milliseconds(25)
        while ContinuousClock.now < deadline() && wanted() {
            try? await Task.sleep(for: delay)
            do {
                try await attempt()
                return
            } catch let error as RedisError where error.isTransient {
                delay = min(delay * 2, .milliseconds(500))
            } catch {
                return
            }
        }
        expired()
    }
}
