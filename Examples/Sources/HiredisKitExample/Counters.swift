import Hiredis
import Hummingbird
import LockKit
import Metrics

struct CounterValue: ResponseCodable {
    let name: String
    let value: Int
    let fencingToken: Int64
}

extension Example {
    /// `POST /counter/:name/increment`: GET, +1, SET under a lock, so that concurrent requests
    /// to any instance lose no update. The write is fenced: the stored value remembers the
    /// lock's fencing token, and a write with an older token (a holder whose lease ran out
    /// while it was paused) is refused in Redis.
    func increment(_ name: String) async throws -> CounterValue {
        // Many requests queue up for one counter: retry for up to about 30 s.
        let patient = LockOptions(timeout: .seconds(5), retries: 600, delay: .milliseconds(50), jitter: 0.5)
        let key = "example:counter:{\(name)}"
        do {
            return try await locks.withLock("counter:\(name)", options: patient) { lock in
                let current = try await redis.send("HGET", key, "value").decode(Int?.self) ?? 0
                let stored = try await redis.run(Self.fencedWrite, keys: [key], arguments: [current + 1, lock.fencingToken])
                guard try stored.decode(Int.self) == 1 else {
                    throw HTTPError(.conflict, message: "a newer lock holder has written \(name)")
                }
                Counter(label: "example_counter_increments_total").increment()
                return CounterValue(name: name, value: current + 1, fencingToken: lock.fencingToken)
            }
        } catch is LockAcquisitionError {
            throw HTTPError(.serviceUnavailable, message: "counter \(name) is busy; try again")
        }
    }

    /// Sets the value only if the caller's fencing token is newer than the stored one:
    /// `KEYS[1]` the counter hash, `ARGV` the value and the token. Returns 1, or 0 (stale).
    static let fencedWrite = RedisScript("""
        local stored = tonumber(redis.call('HGET', KEYS[1], 'token') or '0')
        if tonumber(ARGV[2]) <= stored then return 0 end
        redis.call('HSET', KEYS[1], 'value', ARGV[1], 'token', ARGV[2])
        return 1
        """)
}
