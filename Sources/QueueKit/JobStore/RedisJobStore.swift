import Foundation
import Hiredis
import Logging
import Metrics

/// The job store on Redis, for many hosts. Every change is one Lua script; leases are keys
/// with PX and owner tokens, handed out with fencing tokens; each fulfilled job with
/// waiting targets sits in an outbox until they are notified. A fulfilled job with no
/// target waiting is listed in `done`, scored by the server's time, and removed once it has
/// been there for the store's ``retention``.
///
/// With one shard (the default) all keys share the hash tag `{prefix}` (one cluster slot
/// per store); with `shards: n`, a job's keys and its shard's indexes share `{prefix:s}`,
/// `s` chosen by the job's id, so that on Redis Cluster a store spreads over n slots:
/// `…:job:<id>` (hash: state, version, request, value), `…:pending`, `…:leased`,
/// `…:outbox`, `…:notifying`, `…:done` (sorted sets), `…:waiting:<id>` (set of targets as
/// JSON), `…:lease:<id>` and `…:notify:<id>` (lease tokens), `…:fence`, `…:seq`. An empty
/// store holds only `fence` and `seq`.
///
/// ```swift
/// let store = try RedisJobStore<String>(client: connection, prefix: "jobs") { target, id, value in
///     await notify(target, value)      // true: notified, the target is removed
/// }
/// let id = try await store.create(request: ["url": "https://example.com"])
/// if let lease = try await store.pullWork() {
///     try await store.fulfill(lease.id, value: "done")
///     try await lease.release()
/// }
/// ```
public struct RedisJobStore<Target: Codable & Sendable>: JobStore {
    /// Where the store's scripts run (a connection, a Sentinel-backed connection, or a cluster).
    public let client: any RedisClient
    /// The store's key prefix (its hash tag).
    public let prefix: String
    /// How long a lease lives without renewal (default 10 s; renewed every third).
    public let leaseTimeout: Duration
    /// How long a fulfilled job is kept once no target waits for it (`nil`: for ever).
    public let retention: Duration?
    /// How many slots the store spreads over (default 1).
    public let shards: Int
    let responder: Responder<Target>?
    let metrics: JobStoreMetrics
    /// The hash-tagged key prefix of each shard.
    let tags: [String]

    /// Opens the store under `prefix` on `client`.
    ///
    /// - Parameters:
    ///   - client: a connection, a Sentinel-backed connection, or a cluster.
    ///   - prefix: the namespace; no `{`, `}` or `:`.
    ///   - leaseTimeout: how long a lease lives without renewal (default 10 s).
    ///   - shards: how many cluster slots the store spreads over (1...1024, default 1). Each
    ///     shard has its own indexes and fencing counter (a job's fencing tokens still only
    ///     grow: a job stays in its shard); a pull tries the shards in turn from a random
    ///     one, so an empty store costs up to `shards` round trips per pull. Every process
    ///     of a store must use the same count. Worth it on Redis Cluster, for a store whose
    ///     load one primary cannot carry.
    ///   - retention: how long a fulfilled job stays once no target waits for it and no lease
    ///     is held on it (default 1 hour, counted on the server's clock; `nil`: for ever, as
    ///     fs-job-store). Expired jobs are removed a few at a time by ``pullWork()`` and
    ///     ``pullNotification()``, or by ``removeExpired(limit:)``; a removed job is
    ///     ``JobState/unknown``. Every store on one prefix should use the same retention.
    ///   - metricsFactory: where the store's metrics go (see the README's metrics table);
    ///     `nil`, the default, is the app's bootstrapped `MetricsSystem`.
    ///   - metricsDimensions: dimensions added to each of them (besides `backend`).
    ///   - logger: where a failed `respond` is logged (at `error`); nothing is logged by default.
    ///   - respond: notifies a target as soon as its job is fulfilled, or at once when it is
    ///     queued to a fulfilled job (optional); see ``JobResponder``.
    ///   - onResponseFailure: told when `respond` throws; the target stays queued.
    /// - Throws: `RedisError` `invalidArgument` for a bad prefix, a lease timeout under 30 ms
    ///   or a retention that is not positive.
    public init(client: any RedisClient, prefix: String = "jobstore", leaseTimeout: Duration = .seconds(10),
                retention: Duration? = .seconds(3600), shards: Int = 1,
                metricsFactory: (any MetricsFactory)? = nil, metricsDimensions: [(String, String)] = [],
                logger: Logger = Logger(label: "queuekit.jobstore", factory: { _ in SwiftLogNoOpLogHandler() }),
                respond: JobResponder<Target>? = nil, onResponseFailure: JobResponseFailureHandler<Target>? = nil) throws {
        try validateName(prefix, what: "job store prefix")
        guard leaseTimeout >= .milliseconds(30) else { throw RedisError.invalidArgument("leaseTimeout must be at least 30 ms") }
        try validateRetention(retention)
        guard (1...1024).contains(shards) else { throw RedisError.invalidArgument("shards must be in 1...1024") }
        self.client = client
        self.shards = shards
        self.prefix = prefix
        self.leaseTimeout = leaseTimeout
        self.retention = retention
        self.responder = Responder(respond, onFailure: onResponseFailure, logger: logger)
        self.metrics = JobStoreMetrics(backend: "redis", factory: metricsFactory, dimensions: metricsDimensions)
        self.tags = shards == 1 ? ["{\(prefix)}:"] : (0..<shards).map { "{\(prefix):\($0)}:" }
    }

    /// The key prefix of `id`'s shard.
    private func tag(_ id: JobID) -> String {
        shards == 1 ? tags[0] : tags[ClusterSlot.of(id.rawValue) % shards]
    }

    /// Every shard's key prefix, from a random one on (pulls spread over the shards).
    private var shuffledTags: some Sequence<String> {
        let start = shards == 1 ? 0 : Int.random(in: 0..<shards)
        return (0..<shards).lazy.map { self.tags[(start + $0) % self.shards] }
    }

    private var ttl: Int64 { leaseTimeout.redisMilliseconds }
    /// The retention in ms for the scripts; -1 keeps jobs for ever.
    private var retentionMilliseconds: Int64 { retention?.redisMilliseconds ?? -1 }
    private func job(_ id: JobID) -> String { tag(id) + "job:" + id.rawValue }

    public func create(request: [UInt8]) async throws -> JobID {
        try validateTask(request)
        let id = JobID()
        let tag = tag(id)
        try await client.run(JobScripts.create, keys: [job(id), tag + "pending", tag + "seq"], arguments: [id.rawValue, request])
        metrics.created.increment()
        return id
    }

    public func pullWork() async throws -> JobLease? {
        for tag in shuffledTags {
            if let lease = try await pullWork(tag) {
                metrics.pulled.increment()
                return lease
            }
        }
        return nil
    }

    private func pullWork(_ tag: String) async throws -> JobLease? {
        let token = OwnerToken.next()
        let reply = try await client.run(JobScripts.pullWork, keys: [tag + "pending", tag + "leased", tag + "fence", tag + "done"],
                                         arguments: [tag, token, ttl, retentionMilliseconds, opportunisticRemovals])
        guard case .array(let parts) = reply, parts.count == 4 else { return nil }
        let id = try JobID(try parts[0].decode(String.self))
        let keeper = leaseKeeper(kind: "lease", zset: "leased", id: id, token: token)
        return JobLease(id: id, request: try parts[1].bytes(), version: try parts[2].decode(Int.self),
                        fencingToken: try parts[3].decode(Int64.self), keeper: keeper)
    }

    public func fulfill(_ id: JobID, value: [UInt8]) async throws {
        try validateTask(value)
        let token = OwnerToken.next()
        let tag = tag(id)
        let reply = try await client.run(
            JobScripts.fulfill, keys: [job(id), tag + "pending", tag + "leased", tag + "outbox", tag + "notifying", tag + "done"],
            arguments: [tag, id.rawValue, value, token, ttl, responder == nil ? "0" : "1"])
        guard case .array(let parts) = reply, let status = parts.first else { throw RedisError(.wrongReplyType, "fulfill") }
        switch try status.decode(Int.self) {
        case -1: throw JobStoreError(.unknownJob, "no job \(id)")
        case 0: throw JobStoreError(.alreadyFulfilled, "job \(id) was fulfilled already")
        default: break
        }
        metrics.fulfilled.increment()
        if let responder, parts.count > 1 {
            let waiting = try parts.dropFirst().map { try decodeTarget(try $0.bytes(), as: Target.self) }
            try await deliver(notificationLease(id: id, value: value, waiting: waiting, token: token), responder)
        }
    }

    public func queue(_ id: JobID, target: Target) async throws {
        let encoded = try encodeTarget(target)
        let tag = tag(id)
        let keys: [any RedisArgument] = [job(id), tag + "waiting:" + id.rawValue, tag + "outbox", tag + "done"]
        let reply = try await client.run(JobScripts.queue, keys: keys, arguments: [encoded, responder == nil ? "0" : "1"])
        guard case .array(let parts) = reply, let status = parts.first else { throw RedisError(.wrongReplyType, "queue") }
        switch try status.decode(Int.self) {
        case -1: throw JobStoreError(.unknownJob, "no job \(id)")
        case 1:
            // Fulfilled already: notify now; only a target that was not reached waits.
            if let responder, await responder.notify(target, id, try parts[1].bytes()) {
                metrics.notified.increment()
                return
            }
            try await client.run(JobScripts.queue, keys: keys, arguments: [encoded, "0"])
        default: break
        }
    }

    public func unqueue(_ id: JobID, target: Target) async throws {
        try await unqueueAll(id, targets: [target])
    }

    public func unqueueAll(_ id: JobID, targets: [Target]) async throws {
        var arguments: [any RedisArgument] = []
        for target in targets { arguments.append(try encodeTarget(target)) }
        let tag = tag(id)
        let removed = try await client.run(JobScripts.unqueue, keys: [job(id), tag + "waiting:" + id.rawValue, tag + "outbox", tag + "done"],
                                           arguments: arguments).decode(Int.self)
        if removed < 0 { throw JobStoreError(.unknownJob, "no job \(id)") }
    }

    public func pullNotification() async throws -> NotificationLease<Target>? {
        for tag in shuffledTags {
            if let lease = try await pullNotification(tag) { return lease }
        }
        return nil
    }

    private func pullNotification(_ tag: String) async throws -> NotificationLease<Target>? {
        let token = OwnerToken.next()
        let reply = try await client.run(JobScripts.pullNotification, keys: [tag + "outbox", tag + "notifying", tag + "done"],
                                         arguments: [tag, token, ttl, retentionMilliseconds, opportunisticRemovals])
        guard case .array(let parts) = reply, parts.count >= 2 else { return nil }
        let id = try JobID(try parts[0].decode(String.self))
        let waiting = try parts.dropFirst(2).map { try decodeTarget(try $0.bytes(), as: Target.self) }
        return notificationLease(id: id, value: try parts[1].bytes(), waiting: waiting, token: token)
    }

    @discardableResult
    public func update(_ id: JobID, expectedVersion: Int, request: [UInt8]) async throws -> Int {
        try validateTask(request)
        let version = try await client.run(JobScripts.update, keys: [job(id)], arguments: [expectedVersion, request]).decode(Int.self)
        switch version {
        case -1: throw JobStoreError(.unknownJob, "no job \(id)")
        case -2: throw JobStoreError(.alreadyFulfilled, "job \(id) was fulfilled already")
        case -3: throw JobStoreError(.versionMismatch, "job \(id) is not at version \(expectedVersion)")
        default: return version
        }
    }

    @discardableResult
    public func removeExpired(limit: Int) async throws -> Int {
        guard limit > 0 else { throw RedisError.invalidArgument("limit must be positive") }
        guard retention != nil else { return 0 }
        var removed = 0
        for tag in shuffledTags where removed < limit {
            removed += try await client.run(JobScripts.removeExpired, keys: [tag + "done"],
                                            arguments: [tag, retentionMilliseconds, limit - removed]).decode(Int.self)
        }
        return removed
    }

    public func state(_ id: JobID) async throws -> JobState {
        let fields = try await client.send("HMGET", job(id), "state", "version").decode([String?].self)
        switch fields.first ?? nil {
        case "p": return .pending(version: Int(fields[1] ?? "") ?? 0)
        case "f": return .fulfilled
        default: return .unknown
        }
    }

    // MARK: Leases

    private func leaseKeeper(kind: String, zset: String, id: JobID, token: String) -> LeaseKeeper {
        let client = self.client, tag = self.tag(id), ttl = self.ttl
        let renewTimeout = max(leaseTimeout / 3, .milliseconds(10))
        let keys: [any RedisArgument] = [tag + kind + ":" + id.rawValue, tag + zset, job(id), tag + (zset == "leased" ? "pending" : "outbox")]
        return LeaseKeeper(timeout: leaseTimeout, metrics: metrics, renew: {
            // A renewal that cannot finish within a third of the lease is as good as failed.
            try await client.run(JobScripts.renew, keys: Array(keys.prefix(2)), arguments: [id.rawValue, token, ttl],
                                 timeout: renewTimeout).decode(Int.self) == 1
        }, release: {
            try await client.run(JobScripts.release, keys: keys, arguments: [id.rawValue, token, tag + "waiting:" + id.rawValue])
                .decode(Int.self) == 1
        })
    }

    private func notificationLease(id: JobID, value: [UInt8], waiting: [Target], token: String) -> NotificationLease<Target> {
        let client = self.client, tag = self.tag(id)
        let keys: [any RedisArgument] = [tag + "waiting:" + id.rawValue, tag + "outbox", job(id), tag + "done"]
        return NotificationLease(id: id, value: value, waiting: waiting,
                                 keeper: leaseKeeper(kind: "notify", zset: "notifying", id: id, token: token)) { targets in
            var arguments: [any RedisArgument] = [id.rawValue]
            for target in targets { arguments.append(try encodeTarget(target)) }
            try await client.run(JobScripts.removeTargets, keys: keys, arguments: arguments)
        }
    }
}

/// The job store's scripts. Per-job keys are named from the tag inside a script only where
/// the job is found by the script itself (pulls, removals); they share the store's hash tag.
enum JobScripts {
    /// Lua: `removeExpired(tag, now, retention ms, limit)` looks at up to `limit` jobs listed
    /// in `done` for at least the retention (-1: none), oldest first. One that is not
    /// fulfilled any more or has a target waiting leaves the list (it is listed again when
    /// its targets are gone); one with a work or notification lease held is listed again
    /// as of now; any other is deleted with every trace of it. Returns how many it deleted.
    static let removeExpiredFunction = """
        local function removeExpired(tag, now, retention, limit)
          if retention < 0 or limit <= 0 then return 0 end
          local done = tag .. 'done'
          local removed = 0
          for _, id in ipairs(redis.call('ZRANGEBYSCORE', done, '-inf', now - retention, 'LIMIT', 0, limit)) do
            local job = tag .. 'job:' .. id
            if redis.call('HGET', job, 'state') ~= 'f' or redis.call('SCARD', tag .. 'waiting:' .. id) > 0 then
              redis.call('ZREM', done, id)
            elseif redis.call('EXISTS', tag .. 'lease:' .. id) == 1 or redis.call('EXISTS', tag .. 'notify:' .. id) == 1 then
              redis.call('ZADD', done, now, id)
            else
              redis.call('DEL', job)
              redis.call('ZREM', done, id)
              redis.call('ZREM', tag .. 'pending', id)
              redis.call('ZREM', tag .. 'leased', id)
              redis.call('ZREM', tag .. 'outbox', id)
              redis.call('ZREM', tag .. 'notifying', id)
              removed = removed + 1
            end
          end
          return removed
        end

        """

    /// The server's time in ms (Lua: `local now = serverNow()`).
    static let serverNowFunction = """
        local function serverNow()
          local t = redis.call('TIME')
          return t[1] * 1000 + math.floor(t[2] / 1000)
        end

        """

    /// KEYS: done. ARGV: tag, retention ms, limit. How many jobs were removed.
    static let removeExpired = RedisScript(removeExpiredFunction + serverNowFunction + """
        return removeExpired(ARGV[1], serverNow(), tonumber(ARGV[2]), tonumber(ARGV[3]))
        """)

    /// KEYS: job, pending, seq. ARGV: id, request.
    static let create = RedisScript("""
        local seq = redis.call('INCR', KEYS[3])
        redis.call('HSET', KEYS[1], 'state', 'p', 'version', 0, 'request', ARGV[2], 'seq', seq)
        redis.call('ZADD', KEYS[2], seq, ARGV[1])
        return seq
        """)

    /// KEYS: pending, leased, fence, done. ARGV: tag, token, ttl ms, retention ms, removal
    /// limit. Removes a few expired jobs, returns expired leases to pending, then leases the
    /// oldest pending job: {id, request, version, fencing token}.
    static let pullWork = RedisScript(removeExpiredFunction + """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        removeExpired(ARGV[1], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
          if redis.call('EXISTS', ARGV[1] .. 'lease:' .. id) == 0 then
            redis.call('ZREM', KEYS[2], id)
            local job = redis.call('HMGET', ARGV[1] .. 'job:' .. id, 'state', 'seq')
            if job[1] == 'p' then redis.call('ZADD', KEYS[1], job[2], id) end
          end
        end
        while true do
          local popped = redis.call('ZPOPMIN', KEYS[1])
          if #popped == 0 then return false end
          local id = popped[1]
          local job = redis.call('HMGET', ARGV[1] .. 'job:' .. id, 'state', 'request', 'version')
          if job[1] == 'p' then
            redis.call('SET', ARGV[1] .. 'lease:' .. id, ARGV[2], 'PX', ARGV[3])
            redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
            return {id, job[2], tonumber(job[3]), redis.call('INCR', KEYS[3])}
          end
        end
        """)

    /// KEYS: lease key, lease zset. ARGV: id, token, ttl ms. 1 renewed, 0 lost.
    static let renew = RedisScript("""
        if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
        local t = redis.call('TIME')
        redis.call('PEXPIRE', KEYS[1], ARGV[3])
        redis.call('ZADD', KEYS[2], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[3]), ARGV[1])
        return 1
        """)

    /// KEYS: lease key, lease zset, job, where the job goes back (pending or outbox).
    /// ARGV: id, token, waiting key. 1 released, 0 it was no longer held.
    static let release = RedisScript("""
        if redis.call('GET', KEYS[1]) ~= ARGV[2] then return 0 end
        redis.call('DEL', KEYS[1])
        redis.call('ZREM', KEYS[2], ARGV[1])
        local job = redis.call('HMGET', KEYS[3], 'state', 'seq')
        if string.find(KEYS[4], 'pending$') then
          if job[1] == 'p' then redis.call('ZADD', KEYS[4], job[2], ARGV[1]) end
        elseif job[1] == 'f' and redis.call('SCARD', ARGV[3]) > 0 then
          redis.call('ZADD', KEYS[4], job[2], ARGV[1])
        end
        return 1
        """)

    /// KEYS: job, pending, leased, outbox, notifying, done. ARGV: tag, id, value, token, ttl,
    /// take ('1': lease the notification now). {-1} unknown, {0} fulfilled already, {1} done
    /// (listed in done when no target waits), or {1, target…} with the notification lease taken.
    static let fulfill = RedisScript(serverNowFunction + """
        local job = redis.call('HMGET', KEYS[1], 'state', 'seq')
        if not job[1] then return {-1} end
        if job[1] == 'f' then return {0} end
        redis.call('HSET', KEYS[1], 'state', 'f', 'value', ARGV[3])
        redis.call('ZREM', KEYS[2], ARGV[2])
        redis.call('ZREM', KEYS[3], ARGV[2])
        local waiting = ARGV[1] .. 'waiting:' .. ARGV[2]
        if redis.call('SCARD', waiting) == 0 then
          redis.call('ZADD', KEYS[6], 'NX', serverNow(), ARGV[2])
          return {1}
        end
        local lease = ARGV[1] .. 'notify:' .. ARGV[2]
        if ARGV[6] == '1' and redis.call('EXISTS', lease) == 0 then
          local t = redis.call('TIME')
          redis.call('SET', lease, ARGV[4], 'PX', ARGV[5])
          redis.call('ZADD', KEYS[5], t[1] * 1000 + math.floor(t[2] / 1000) + tonumber(ARGV[5]), ARGV[2])
          local out = {1}
          for _, target in ipairs(redis.call('SMEMBERS', waiting)) do out[#out + 1] = target end
          return out
        end
        redis.call('ZADD', KEYS[4], job[2], ARGV[2])
        return {1}
        """)

    /// KEYS: job, waiting, outbox, done. ARGV: target, respond ('1': do not add to a fulfilled
    /// job, return its value). {-1} unknown, {0} added (pending), {1, value}, {2} added
    /// (fulfilled: in the outbox, out of done).
    static let queue = RedisScript("""
        local job = redis.call('HMGET', KEYS[1], 'state', 'seq', 'value')
        if not job[1] then return {-1} end
        if job[1] == 'p' then
          redis.call('SADD', KEYS[2], ARGV[1])
          return {0}
        end
        if ARGV[2] == '1' then return {1, job[3]} end
        local id = string.match(KEYS[2], 'waiting:(.*)$')
        redis.call('SADD', KEYS[2], ARGV[1])
        redis.call('ZADD', KEYS[3], job[2], id)
        redis.call('ZREM', KEYS[4], id)
        return {2}
        """)

    /// KEYS: job, waiting, outbox, done. ARGV: targets. The count removed, -1 for an unknown
    /// job. A fulfilled job left with no target is listed in done.
    static let unqueue = RedisScript(serverNowFunction + """
        local state = redis.call('HGET', KEYS[1], 'state')
        if not state then return -1 end
        local removed = 0
        for i = 1, #ARGV do removed = removed + redis.call('SREM', KEYS[2], ARGV[i]) end
        if redis.call('SCARD', KEYS[2]) == 0 then
          local id = string.match(KEYS[2], 'waiting:(.*)$')
          redis.call('ZREM', KEYS[3], id)
          if state == 'f' then redis.call('ZADD', KEYS[4], 'NX', serverNow(), id) end
        end
        return removed
        """)

    /// KEYS: waiting, outbox, job, done. ARGV: id, targets. Removes notified targets (the
    /// lease's release puts the job back in the outbox if targets remain); a fulfilled job
    /// left with no target is listed in done.
    static let removeTargets = RedisScript(serverNowFunction + """
        for i = 2, #ARGV do redis.call('SREM', KEYS[1], ARGV[i]) end
        if redis.call('SCARD', KEYS[1]) == 0 then
          redis.call('ZREM', KEYS[2], ARGV[1])
          if redis.call('HGET', KEYS[3], 'state') == 'f' then redis.call('ZADD', KEYS[4], 'NX', serverNow(), ARGV[1]) end
        end
        return 1
        """)

    /// KEYS: outbox, notifying, done. ARGV: tag, token, ttl, retention ms, removal limit.
    /// Removes a few expired jobs, returns expired notification leases to the outbox, then
    /// leases the first free job there: {id, value, target…}. A job found with no target
    /// left is listed in done.
    static let pullNotification = RedisScript(removeExpiredFunction + """
        local t = redis.call('TIME')
        local now = t[1] * 1000 + math.floor(t[2] / 1000)
        removeExpired(ARGV[1], now, tonumber(ARGV[4]), tonumber(ARGV[5]))
        for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 100)) do
          if redis.call('EXISTS', ARGV[1] .. 'notify:' .. id) == 0 then
            redis.call('ZREM', KEYS[2], id)
            if redis.call('SCARD', ARGV[1] .. 'waiting:' .. id) > 0 then
              redis.call('ZADD', KEYS[1], redis.call('HGET', ARGV[1] .. 'job:' .. id, 'seq'), id)
            elseif redis.call('HGET', ARGV[1] .. 'job:' .. id, 'state') == 'f' then
              redis.call('ZADD', KEYS[3], 'NX', now, id)
            end
          end
        end
        for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
          local lease = ARGV[1] .. 'notify:' .. id
          local waiting = ARGV[1] .. 'waiting:' .. id
          if redis.call('SCARD', waiting) == 0 then
            redis.call('ZREM', KEYS[1], id)
            if redis.call('HGET', ARGV[1] .. 'job:' .. id, 'state') == 'f' then redis.call('ZADD', KEYS[3], 'NX', now, id) end
          elseif redis.call('EXISTS', lease) == 0 then
            redis.call('ZREM', KEYS[1], id)
            redis.call('SET', lease, ARGV[2], 'PX', ARGV[3])
            redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), id)
            local out = {id, redis.call('HGET', ARGV[1] .. 'job:' .. id, 'value')}
            for _, target in ipairs(redis.call('SMEMBERS', waiting)) do out[#out + 1] = target end
            return out
          end
        end
        return false
        """)

    /// KEYS: job. ARGV: expected version, request. The new version, or -1 unknown,
    /// -2 fulfilled, -3 version mismatch.
    static let update = RedisScript("""
        local job = redis.call('HMGET', KEYS[1], 'state', 'version')
        if not job[1] then return -1 end
        if job[1] == 'f' then return -2 end
        if tonumber(job[2]) ~= tonumber(ARGV[1]) then return -3 end
        redis.call('HSET', KEYS[1], 'request', ARGV[2])
        return redis.call('HINCRBY', KEYS[1], 'version', 1)
        """)
}
