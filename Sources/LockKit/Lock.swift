import Hiredis
import Synchronization

/// A lock held in Redis: `key` is set to a random `token` with an expiry (the lease).
/// Only the holder of the token can extend or release it; the check runs inside Redis.
public final class Lock: Sendable, CustomStringConvertible {
    /// The key the caller asked for (without the prefix).
    public let key: String
    /// The Redis key.
    public let redisKey: String
    /// This holder's random token, the lock's value in Redis.
    public let token: String
    /// Strictly increasing per key across every holder: a resource that remembers the
    /// highest token it has seen can reject writes from a stale holder.
    public let fencingToken: Int64
    /// The lease length used by ``extend(by:)`` when no duration is given.
    public let timeout: Duration
    let connection: any RedisClient
    private let locked = Mutex(true)
    /// When the lease runs out if nobody extends it (as this process sees it).
    private let leaseEnd: Mutex<ContinuousClock.Instant>

    init(key: String, redisKey: String, token: String, fencingToken: Int64, timeout: Duration, connection: any RedisClient) {
        self.key = key
        self.redisKey = redisKey
        self.token = token
        self.fencingToken = fencingToken
        self.timeout = timeout
        self.connection = connection
        leaseEnd = Mutex(.now + timeout)
    }

    /// `false` once released, or once an extend or release found it lost.
    public var isLocked: Bool { locked.withLock { $0 } }

    /// Sets the lease to `duration` (default: the lock timeout) from now, if still held.
    ///
    /// - Throws: ``LockExtendError`` when the lock had expired or belongs to another owner
    ///   (the lock is then marked unlocked); `RedisError` when Redis could not be asked.
    public func extend(by duration: Duration? = nil) async throws {
        let lease = duration ?? timeout
        guard lease >= .milliseconds(1) else { throw RedisError.invalidArgument("a lock extension must be at least 1 ms") }
        guard isLocked else { throw LockExtendError(key: key) }
        let sent = ContinuousClock.now
        let reply = try await connection.run(Scripts.extend, keys: [redisKey], arguments: [token, lease.redisMilliseconds])
        if try reply.decode([Int].self).first != 1 {
            locked.withLock { $0 = false }
            throw LockExtendError(key: key)
        }
        extended(since: sent, by: lease)
    }

    /// Redis extended the lease by `lease`, counted from `sent` (when the request left).
    func extended(since sent: ContinuousClock.Instant, by lease: Duration) {
        leaseEnd.withLock { $0 = sent + lease }
    }

    /// Deletes the lock if this holder still owns it.
    ///
    /// - Throws: ``LockReleaseError`` when it had expired, belongs to another owner, or
    ///   was released already; `RedisError` when Redis could not be asked (the lock then
    ///   still counts as held, and `release()` can be called again).
    public func release() async throws {
        guard locked.withLock({ wasLocked in defer { wasLocked = false }; return wasLocked }) else {
            throw LockReleaseError(key: key)
        }
        let reply: RedisReply
        do {
            reply = try await connection.run(Scripts.release, keys: [redisKey], arguments: [token])
        } catch {
            locked.withLock { $0 = true }
            throw error
        }
        if try reply.decode(Int.self) != 1 { throw LockReleaseError(key: key) }
    }

    /// Releases on the caller's behalf (`withLock`, fanout, a failed multi-key attempt).
    /// When Redis cannot be asked — a dropped connection, a restarting or stalled server, a
    /// cancelled task — it keeps trying in the background until the lease would have run
    /// out anyway, rather than leaving the key taken for the rest of its lease.
    func releaseSoon() async {
        await giveBack(until: { self.leaseDeadline }, while: { self.isLocked }, expired: { self.markLost() }) {
            try await self.release()
        }
    }

    func markLost() { locked.withLock { $0 = false } }

    /// When the lease runs out unless extended.
    var leaseDeadline: ContinuousClock.Instant { leaseEnd.withLock { $0 } }

    public var description: String { "Lock(\(key), fencing token \(fencingToken), \(isLocked ? "held" : "released"))" }
}

/// Several locks taken all or nothing.
public final class MultiLock: Sendable {
    /// One lock per distinct key, in the order the keys were given.
    public let locks: [Lock]

    init(locks: [Lock]) { self.locks = locks }

    /// Extends every lock, or throws ``MultiLockError`` naming every one that was lost,
    /// after releasing the others (locks in other cluster slots may have been extended
    /// before the loss was found).
    ///
    /// - Throws: ``MultiLockError``; `RedisError` when Redis could not be asked.
    public func extend(by duration: Duration? = nil) async throws {
        var errors: [String: any Error] = [:]
        for group in groupBySlot(locks) {
            let lease = duration ?? group[0].timeout
            let sent = ContinuousClock.now
            let reply = try await group[0].connection.run(
                Scripts.extend, keys: group.map(\.redisKey), arguments: [group[0].token, lease.redisMilliseconds])
            let result = try reply.decode([Int].self)
            if result.first != 1 {
                var lost = result.dropFirst().compactMap { group.indices.contains($0 - 1) ? group[$0 - 1] : nil }
                if lost.isEmpty { lost = [group[0]] }
                for lock in lost {
                    lock.markLost()
                    errors[lock.key] = LockExtendError(key: lock.key)
                }
            } else {
                for lock in group { lock.extended(since: sent, by: lease) }
            }
        }
        if !errors.isEmpty {
            // All or nothing: give back what is still ours, then report.
            await release()
            throw MultiLockError(errors: errors, locks: locks)
        }
    }

    /// Releases every lock; never throws. Returns each key's outcome.
    @discardableResult
    public func release() async -> [String: Result<Void, any Error>] {
        var results: [String: Result<Void, any Error>] = [:]
        for lock in locks {
            do {
                try await lock.release()
                results[lock.key] = .success(())
            } catch {
                results[lock.key] = .failure(error)
            }
        }
        return results
    }
}

/// The name of a key's slot group: `{tag` for a hash-tagged key, else the key itself.
func slotGroup(_ redisKey: String) -> String {
    hashTag(redisKey).map { "{" + $0 } ?? redisKey
}

/// Locks grouped so that each group's keys share a cluster slot (same hash tag), in a
/// fixed order.
func groupBySlot(_ locks: [Lock]) -> [[Lock]] {
    groupBySlot(locks) { $0.redisKey }
}

/// Items grouped by the cluster slot of their Redis key, groups in a fixed order. One
/// item (the usual single-key lock) is one group, without a dictionary or a sort.
func groupBySlot<Item>(_ items: [Item], redisKey: (Item) -> String) -> [[Item]] {
    if items.count == 1 { return [items] }
    var groups: [String: [Item]] = [:]
    for item in items {
        groups[slotGroup(redisKey(item)), default: []].append(item)
    }
    return groups.keys.sorted().map { groups[$0]! }
}
