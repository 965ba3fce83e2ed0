import Hiredis

/// A read-only view of the locks and semaphores under one key prefix, for operators
/// (`hiredis-admin locks`, the dashboard): it knows LockKit's key layout so that tools
/// never keep a second copy of it. Keys are found with `SCAN` (on every primary of a
/// cluster), never `KEYS`; each lock or semaphore is then read with a few commands, so a
/// listing is a snapshot that may be a moment old by the time it is shown.
///
/// ```swift
/// let inspector = try LockInspector(client: connection, lockPrefix: "dlock:")
/// for lock in try await inspector.locks() { print(lock.key, lock.fencingToken ?? 0) }
/// ```
public struct LockInspector: Sendable {
    /// Where the keys are read.
    public let client: any RedisClient
    /// The ``CallbackQueueOptions/lockPrefix`` of the queues to look at.
    public let lockPrefix: String

    /// An inspector of the locks and semaphores under `lockPrefix`, read through `client`.
    ///
    /// - Throws: `RedisError` `invalidArgument` for an empty prefix (it would list every key
    ///   of the database), before anything is sent.
    public init(client: any RedisClient, lockPrefix: String = "dlock:") throws {
        guard !lockPrefix.isEmpty else { throw RedisError.invalidArgument("the lock prefix is empty") }
        self.client = client
        self.lockPrefix = lockPrefix
    }

    /// Every lock held now (`once`, `multi`, `withLock`, and the leader locks of
    /// push/fanout jobs), by key.
    public func locks() async throws -> [LockInfo] {
        let keys = try await classify().locks.sorted()
        var commands: [RedisCommand] = []
        for key in keys {
            let redisKey = lockPrefix + key
            commands += [RedisCommand("GET", redisKey), RedisCommand("PTTL", redisKey), RedisCommand("GET", sameSlot(redisKey, ":fence"))]
        }
        let replies = commands.isEmpty ? [] : try await client.pipeline(commands)
        var locks: [LockInfo] = []
        for (index, key) in keys.enumerated() {
            // Released between the scan and the read (not held any more), or a key of
            // another kind under the prefix (not a lock): skipped.
            guard let token = try? replies[index * 3].get().decode(String?.self),
                  let ttl = try? replies[index * 3 + 1].get().decode(Int64.self) else { continue }
            let fence = try? replies[index * 3 + 2].get().decode(String?.self).flatMap { Int64($0) }
            locks.append(LockInfo(key: key, token: token, fencingToken: fence ?? nil, ttlMilliseconds: ttl >= 0 ? ttl : nil))
        }
        return locks
    }

    /// Every semaphore with a permit held now, by key.
    public func semaphores() async throws -> [SemaphoreInfo] {
        let keys = try await classify().semaphores.sorted()
        var semaphores: [SemaphoreInfo] = []
        for key in keys {
            let permitsKey = sameSlot(lockPrefix + key, ":permits")
            let replies = try await client.pipeline([
                RedisCommand("TIME"), RedisCommand("ZRANGE", permitsKey, 0, -1, "WITHSCORES"),
                RedisCommand("GET", sameSlot(lockPrefix + key, ":limit")), RedisCommand("PTTL", permitsKey),
            ])
            let time = try replies[0].get().decode([String].self)
            let now = (Int64(time.first ?? "") ?? 0) * 1000 + (Int64(time.dropFirst().first ?? "") ?? 0) / 1000
            // Gone since the scan, or not a permit set: skipped.
            guard let flat = try? replies[1].get().decode([String].self) else { continue }
            var holders: [PermitInfo] = []
            for index in stride(from: 0, to: flat.count - 1, by: 2) {
                guard let expiry = Double(flat[index + 1]).map({ Int64($0) }), expiry > now else { continue }
                holders.append(PermitInfo(token: flat[index], ttlMilliseconds: expiry - now))
            }
            guard !holders.isEmpty else { continue }
            let limit = (try? replies[2].get().decode(String?.self))?.flatMap { Int($0) }
            let ttl = (try? replies[3].get().decode(Int64.self)) ?? -1
            semaphores.append(SemaphoreInfo(key: key, permits: limit, holders: holders, ttlMilliseconds: ttl >= 0 ? ttl : nil))
        }
        return semaphores
    }

    /// The lock and semaphore keys (without the prefix) among the keys under the prefix:
    /// lock keys are `prefix+key`; companions are `{prefix+key}:suffix` or, when the key
    /// has a hash tag of its own, `prefix+key:suffix`.
    private func classify() async throws -> (locks: Set<String>, semaphores: Set<String>) {
        var locks: Set<String> = []
        var semaphores: Set<String> = []
        let companions = [":fence", ":permits", ":outcome", ":limit"]
        let tagged = "{" + lockPrefix
        for redisKey in try await client.scanKeys(matching: glob(lockPrefix) + "*") {
            let name = String(redisKey.dropFirst(lockPrefix.count))
            if hashTag(redisKey) != nil, let suffix = companions.first(where: { redisKey.hasSuffix($0) }) {
                if suffix == ":permits" { semaphores.insert(String(name.dropLast(suffix.count))) }
                continue
            }
            locks.insert(name)
        }
        // Untagged keys' companions: `{prefix+key}:suffix`.
        for redisKey in try await client.scanKeys(matching: glob(tagged) + "*}:permits")
        where redisKey.hasPrefix(tagged) && redisKey.hasSuffix("}:permits") {
            let base = String(redisKey.dropFirst(tagged.count).dropLast("}:permits".count))
            if hashTag(lockPrefix + base) == nil { semaphores.insert(base) }
        }
        return (locks, semaphores)
    }

    private func glob(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }
}

/// A lock held now (``LockInspector/locks()``).
public struct LockInfo: Sendable, Hashable, Codable {
    /// The lock's key, without the prefix.
    public let key: String
    /// The holder's owner token.
    public let token: String
    /// The fencing token of the latest acquisition of this key (`nil` if unknown).
    public let fencingToken: Int64?
    /// Time left on the lease (server clock); `nil` for no expiry.
    public let ttlMilliseconds: Int64?
}

/// A semaphore with permits held now (``LockInspector/semaphores()``).
public struct SemaphoreInfo: Sendable, Hashable, Codable {
    /// The semaphore's key, without the prefix.
    public let key: String
    /// Its number of permits, as the latest taker declared it (`nil` when unknown: taken
    /// by an older LockKit that did not record it).
    public let permits: Int?
    /// The live permits, soonest to expire first.
    public let holders: [PermitInfo]
    /// Time left before the whole set expires (server clock).
    public let ttlMilliseconds: Int64?
    /// How many permits are held.
    public var held: Int { holders.count }
}

/// One held permit of a semaphore.
public struct PermitInfo: Sendable, Hashable, Codable {
    /// The holder's owner token.
    public let token: String
    /// Time left on its lease (server clock).
    public let ttlMilliseconds: Int64
}

extension CallbackQueue {
    /// A ``LockInspector`` over this queue's client and prefix.
    public nonisolated var inspector: LockInspector {
        // The prefix was accepted by init; an empty one cannot reach here in practice.
        (try? LockInspector(client: client, lockPrefix: options.lockPrefix))
            ?? LockInspector(unchecked: client, lockPrefix: options.lockPrefix)
    }
}

extension LockInspector {
    init(unchecked client: any RedisClient, lockPrefix: String) {
        self.client = client
        self.lockPrefix = lockPrefix
    }
}
