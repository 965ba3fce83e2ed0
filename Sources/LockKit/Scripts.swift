import Hiredis

/// The Lua scripts of LockKit. Every check of an owner and every multi-key change runs
/// inside one script, on the server's clock. (Package access: the bench runs them with
/// redis-benchmark too.)
package enum Scripts {
    /// KEYS: lock₁…lockₙ, fence₁…fenceₙ. ARGV: token, ttl ms.
    /// All free → set all, return their new fencing tokens; else return {0, index…} of
    /// every key that is held.
    static let acquire = RedisScript("""
        local n = #KEYS / 2
        local held = {0}
        for i = 1, n do
          if redis.call('EXISTS', KEYS[i]) == 1 then held[#held + 1] = i end
        end
        if #held > 1 then return held end
        local fences = {}
        for i = 1, n do
          redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
          fences[i] = redis.call('INCR', KEYS[n + i])
        end
        return fences
        """)

    /// ``acquire`` for one key, in one `SET NX` (the usual lock): the same replies.
    package static let acquireOne = RedisScript("""
        if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
          return {redis.call('INCR', KEYS[2])}
        end
        return {0, 1}
        """)

    /// KEYS: locks. Read-only: the indices of the keys that are held.
    static let held = RedisScript("""
        local held = {}
        for i = 1, #KEYS do
          if redis.call('EXISTS', KEYS[i]) == 1 then held[#held + 1] = i end
        end
        return held
        """)

    /// KEYS: job lock, fence, outcome. ARGV: token, ttl ms.
    /// -1 when the job's outcome is already stored (nothing to run), 0 when the lock is
    /// held, else the new fencing token.
    static let acquireJob = RedisScript("""
        if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
        if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return redis.call('INCR', KEYS[2])
        """)

    /// KEYS: locks. ARGV: token, ttl ms. Extends all when all are owned by token; else
    /// returns {0, index…} of every key that is not.
    static let extend = RedisScript("""
        local lost = {0}
        for i = 1, #KEYS do
          if redis.call('GET', KEYS[i]) ~= ARGV[1] then lost[#lost + 1] = i end
        end
        if #lost > 1 then return lost end
        for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
        return {1}
        """)

    /// KEYS: lock. ARGV: token. Compare-and-delete.
    package static let release = RedisScript("""
        if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
        return 0
        """)

    /// KEYS: lock, outcome. ARGV: token, outcome ttl ms, channel, message, outcome.
    /// Only the owner of the lock may publish: store the outcome briefly, broadcast it,
    /// release the lock. Returns 1, or 0 when the lock had been lost.
    static let complete = RedisScript("""
        if redis.call('GET', KEYS[1]) ~= ARGV[1] then
          -- A retry of a call whose reply was lost finds its own outcome stored.
          if redis.call('GET', KEYS[2]) == ARGV[5] then return 1 end
          return 0
        end
        redis.call('SET', KEYS[2], ARGV[5], 'PX', ARGV[2])
        redis.call('PUBLISH', ARGV[3], ARGV[4])
        redis.call('DEL', KEYS[1])
        return 1
        """)

    /// KEYS: permits zset, limit. ARGV: token, permits, ttl ms.
    /// Drops expired permits (server time), then takes one if fewer than `permits` are held;
    /// records `permits` under `limit` (for ``LockInspector``), expiring with the set.
    static let take = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
        if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
          redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
          redis.call('PEXPIRE', KEYS[1], ARGV[3])
          redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
          return 1
        end
        return 0
        """)

    /// KEYS: permits zset, limit. ARGV: token, ttl ms. Extends a permit that is still held
    /// (and the recorded limit with the set).
    static let extendPermit = RedisScript("""
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if not expiry or tonumber(expiry) <= now then return 0 end
        redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
        if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
        if KEYS[2] and redis.call('PTTL', KEYS[2]) >= 0 and redis.call('PTTL', KEYS[2]) < tonumber(ARGV[2]) then
          redis.call('PEXPIRE', KEYS[2], ARGV[2])
        end
        return 1
        """)

    /// KEYS: permits zset. ARGV: token, channel, message. Returns a permit and wakes waiters.
    static let leave = RedisScript("""
        local removed = redis.call('ZREM', KEYS[1], ARGV[1])
        if removed == 1 then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
        return removed
        """)
}

