import Hiredis

/// The Lua scripts of the work queue. A queue script gets ``QueueKeys/all(worker:)``:
/// KEYS[1] pending list, [2] tasks, [3] deliveries, [4] unique entries, [5] markers,
/// [6] dead letters, [7] reasons, [8] owners, [9] sequence, [10] prioritized, [11] delayed,
/// [12] meta, [13] completed, [14] failed, [15] starts, [16] a worker's in-flight hash.
/// A task's record is `TAG:job:<id>` (same slot). Registry scripts touch only `{prefix}`
/// keys. Each script touches one slot.
///
/// Sorted sets (priorities, delays, rate limits) are touched only when they exist or the
/// feature is configured, so that plain queues run with the commands of the README's ACL
/// rule; time comes from `TIME` (the server's clock).
package enum QueueScripts {
    // Helpers of the queue scripts, in pieces: a script includes those it uses (each Lua
    // function costs a closure per call).

    /// The record key, the server's clock, number formatting.
    private static let base = """
        local TAG = string.sub(KEYS[1], 1, -7)
        local function jobkey(id) return TAG .. ':job:' .. id end
        local function nowms()
          local t = redis.call('TIME')
          return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        end
        local function fmt(n) return string.format('%.0f', n) end

        """

    /// The number of waiting tasks (the list and the prioritized set).
    private static let counting = """
        local function waitingCount()
          local n = redis.call('LLEN', KEYS[1])
          if redis.call('EXISTS', KEYS[10]) == 1 then n = n + redis.call('ZCARD', KEYS[10]) end
          return n
        end

        """

    /// Priority scores; makes an entry wait at the back of its priority, or at its front.
    private static let placing = """
        local function pscore(p, s) return -p * 4294967296 + 2147483648 + s end
        local function toWaiting(id, front)
          local job = jobkey(id)
          local p = tonumber(redis.call('HGET', job, 'pr') or '0') or 0
          if p == 0 then
            if front then redis.call('LPUSH', KEYS[1], id) else redis.call('RPUSH', KEYS[1], id) end
          else
            local s
            if front then s = -redis.call('HINCRBY', KEYS[12], 'front', 1) else s = redis.call('INCRBY', KEYS[9], 1) end
            redis.call('ZADD', KEYS[10], fmt(pscore(p, s)), id)
          end
          redis.call('HSET', job, 'st', 'waiting')
        end

        """

    /// Tells waiters of a watched task (`!state:id` on the done channel: not a done
    /// message). Only queues where a task was ever watched (meta `watched`) look.
    private static let announcing = """
        local watchedQueue
        local function announce(id, state, channel)
          if watchedQueue == nil then watchedQueue = redis.call('HEXISTS', KEYS[12], 'watched') == 1 end
          if watchedQueue and redis.call('HEXISTS', jobkey(id), 'w') == 1 then
            redis.call('PUBLISH', channel, '!' .. state .. ':' .. id)
          end
        end

        """

    /// Retention lists hold `<finished ms>|<id>`, oldest first. `trim` removes records
    /// older than maxAge (at most 100 per call), and records over maxCount in batches once
    /// they are a tenth of maxCount (at most 100) too many, so that a finish seldom pays for it.
    private static let trimming = """
        local function trim(list, length, maxAge, maxCount, now)
          local over = length - maxCount
          if over > 0 and over >= math.min(100, math.max(1, math.floor(maxCount / 10))) then
            local popped = redis.call('LPOP', list, math.min(over, 100))
            local keys = {}
            for i, member in ipairs(popped) do keys[i] = jobkey(string.match(member, '^%d+|(.*)$')) end
            redis.call('DEL', unpack(keys))
          end
          for _ = 1, 100 do
            local head = redis.call('LINDEX', list, 0)
            if not head then return end
            local at, id = string.match(head, '^(%d+)|(.*)$')
            if now - tonumber(at) <= maxAge then return end
            redis.call('LPOP', list)
            redis.call('DEL', jobkey(id))
          end
        end

        """

    /// Forgets an entry's bytes, counters, reason and unique marker (and its record unless
    /// keepJob). Whether the unique set and the reasons hash exist is read once per script
    /// call (plain queues have neither: no SREM or HDEL each). So a script must not add to
    /// either after its first `forget`, except a reason before the forget of its own entry
    /// (which then finds the hash).
    private static let forgetting = """
        local uniqueSet, reasonsSet
        local function forget(id, keepJob)
          if uniqueSet == nil then uniqueSet = redis.call('EXISTS', KEYS[4]) == 1 end
          if uniqueSet and redis.call('SREM', KEYS[4], id) == 1 then
            local task = redis.call('HGET', KEYS[2], id)
            if task then redis.call('SREM', KEYS[5], task) end
          end
          redis.call('HDEL', KEYS[2], id)
          redis.call('HDEL', KEYS[3], id)
          if reasonsSet == nil then reasonsSet = redis.call('EXISTS', KEYS[7]) == 1 end
          if reasonsSet then redis.call('HDEL', KEYS[7], id) end
          if not keepJob then redis.call('DEL', jobkey(id)) end
        end

        """

    /// ARGV: channel, unique ('1'/'0'), strict ('1'/'0'), caller's id ('' none), delay ms
    /// ('' none), due time ms ('' none), priority, retry policy ('' none), task₁…taskₙ.
    /// Appends the tasks in order (or delays them). A unique enqueue skips a task already
    /// marked (queued or in flight from an earlier unique enqueue) or given twice in the
    /// batch; a caller's id that has a record is skipped too; a strict one appends nothing
    /// then. Returns {1, waiting count, last sequence (-1: the caller's id exists), skipped
    /// index…} (indices 1-based), or, strict, {0, index of the first duplicate}.
    package static let enqueue = RedisScript(base + counting + placing + """
        local first = 9
        local now = nowms()
        local due
        if ARGV[5] ~= '' then due = now + tonumber(ARGV[5]) elseif ARGV[6] ~= '' then due = tonumber(ARGV[6]) end
        if due and due <= now then due = nil end
        local p = tonumber(ARGV[7])
        local custom = ARGV[4] ~= ''
        if custom and redis.call('EXISTS', jobkey(ARGV[4])) == 1 then
          if ARGV[3] == '1' then return {0, 1} end
          return {1, waitingCount(), -1, 1}
        end
        local ids = {}
        local skipped = {}
        if ARGV[2] == '1' then
          local seen = {}
          for i = first, #ARGV do
            if seen[ARGV[i]] or redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 1 then
              if ARGV[3] == '1' then return {0, i - first + 1} end
              skipped[#skipped + 1] = i - first + 1
            else
              seen[ARGV[i]] = true
              ids[#ids + 1] = i
            end
          end
        else
          for i = first, #ARGV do ids[#ids + 1] = i end
        end
        local n = #ids
        local last = 0
        local created = fmt(now)
        if n > 0 then
          last = redis.call('INCRBY', KEYS[9], n)
          for j, i in ipairs(ids) do
            local seq = last - n + j
            local id = string.format('%d', seq)
            if custom then id = ARGV[4] end
            redis.call('HSET', KEYS[2], id, ARGV[i])
            local job = jobkey(id)
            if due then
              redis.call('ZADD', KEYS[11], fmt(due), id)
              redis.call('HSET', job, 'st', 'delayed', 'ca', created, 'pr', ARGV[7], 'du', fmt(due))
            elseif p ~= 0 then
              redis.call('ZADD', KEYS[10], fmt(pscore(p, seq)), id)
              redis.call('HSET', job, 'st', 'waiting', 'ca', created, 'pr', ARGV[7])
            else
              redis.call('RPUSH', KEYS[1], id)
              redis.call('HSET', job, 'st', 'waiting', 'ca', created)   -- priority 0: no 'pr'
            end
            if ARGV[8] ~= '' then redis.call('HSET', job, 'ra', ARGV[8]) end
            if ARGV[2] == '1' then
              redis.call('SADD', KEYS[5], ARGV[i])
              redis.call('SADD', KEYS[4], id)
            end
          end
          if due then
            redis.call('PUBLISH', ARGV[1], 'work:0')
          else
            redis.call('PUBLISH', ARGV[1], 'work:' .. n)
          end
        end
        local out = {1, waitingCount(), last}
        for _, index in ipairs(skipped) do out[#out + 1] = index end
        return out
        """)

    /// ARGV: worker, max, first process number. Promotes due delayed entries (up to 1,000),
    /// then, unless the queue is paused and within its rate and concurrency limits, moves
    /// up to `max` entries (prioritized above 0, the list, prioritized below 0) to the
    /// worker's in-flight hash. {-1} when the worker was declared dead in this queue; else
    /// {count, waiting, wake ms (-1: none), (process, task, deliveries, id, attempts)…}
    /// where `wake` is when a delayed entry falls due or the rate window frees.
    package static let dequeue = RedisScript(base + counting + placing + """
        local owner = redis.call('HGET', KEYS[8], ARGV[1])
        if owner and owner ~= 'live' then return {-1} end
        local now = nowms()
        local wake = -1
        local function soonest(ms)
          if ms < 0 then ms = 0 end
          if wake < 0 or ms < wake then wake = ms end
        end
        if redis.call('EXISTS', KEYS[11]) == 1 then
          for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[11], '-inf', fmt(now), 'LIMIT', 0, 1000)) do
            redis.call('ZREM', KEYS[11], id)
            toWaiting(id, false)
          end
          local nxt = redis.call('ZRANGE', KEYS[11], 0, 0, 'WITHSCORES')
          if nxt[2] then soonest(tonumber(nxt[2]) - now) end
        end
        local take = tonumber(ARGV[2])
        local settings = redis.call('HMGET', KEYS[12], 'paused', 'rate', 'per', 'concurrency')
        if settings[1] then take = 0 end
        local rate, per = tonumber(settings[2] or ''), tonumber(settings[3] or '')
        if take > 0 and rate then
          redis.call('ZREMRANGEBYSCORE', KEYS[15], '-inf', fmt(now - per))
          take = math.max(math.min(take, rate - redis.call('ZCARD', KEYS[15])), 0)
        end
        local limit = tonumber(settings[4] or '')
        if take > 0 and limit then
          local active = 0
          local owners = redis.call('HGETALL', KEYS[8])
          for i = 1, #owners, 2 do
            if owners[i + 1] == 'live' then active = active + #redis.call('HKEYS', TAG .. ':working:' .. owners[i]) end
          end
          take = math.max(math.min(take, limit - active), 0)
        end
        local hasPrio = redis.call('EXISTS', KEYS[10]) == 1
        -- Every give-back records a reason until the task is forgotten: with no reasons
        -- hash, no task here was ever given back, so its attempts equal its deliveries
        -- (one HSET per task instead of an HSET and an HINCRBY).
        local attemptsAreDeliveries = redis.call('EXISTS', KEYS[7]) == 0
        local function pop()
          if hasPrio then
            local top = redis.call('ZRANGE', KEYS[10], 0, 0, 'WITHSCORES')
            if top[1] and tonumber(top[2]) < 0 then
              redis.call('ZREM', KEYS[10], top[1])
              return top[1]
            end
          end
          local id = redis.call('LPOP', KEYS[1])
          if id then return id end
          if hasPrio then
            local top = redis.call('ZRANGE', KEYS[10], 0, 0)
            if top[1] then
              redis.call('ZREM', KEYS[10], top[1])
              return top[1]
            end
          end
          return nil
        end
        local out = {0, 0, 0}
        local startedAt = fmt(now)
        local number = tonumber(ARGV[3])
        for i = 1, take do
          local id = pop()
          if not id then break end
          local process = string.format('%d', number + i - 1)
          redis.call('HSET', KEYS[16], process, id)
          local job = jobkey(id)
          if rate then
            redis.call('ZADD', KEYS[15], fmt(now), fmt(now) .. ':' .. id .. ':' .. ARGV[1] .. ':' .. process)
          end
          local deliveries = redis.call('HINCRBY', KEYS[3], id, 1)
          local attempts
          if attemptsAreDeliveries then
            attempts = deliveries
            redis.call('HSET', job, 'st', 'active', 'sa', startedAt, 'at', attempts)
          else
            redis.call('HSET', job, 'st', 'active', 'sa', startedAt)
            attempts = redis.call('HINCRBY', job, 'at', 1)
          end
          out[#out + 1] = process
          out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
          out[#out + 1] = deliveries
          out[#out + 1] = id
          out[#out + 1] = attempts
          out[1] = out[1] + 1
        end
        if rate then
          if out[1] > 0 then redis.call('PEXPIRE', KEYS[15], fmt(per * 2)) end
          if redis.call('ZCARD', KEYS[15]) >= rate then
            local oldest = redis.call('ZRANGE', KEYS[15], 0, 0, 'WITHSCORES')
            if oldest[2] then soonest(tonumber(oldest[2]) + per - now + 1) end
          end
        end
        if out[1] > 0 and not owner then redis.call('HSET', KEYS[8], ARGV[1], 'live') end
        out[2] = waitingCount()
        out[3] = wake
        return out
        """)

    /// ARGV: done channel, worker, process id prefix, has result ('1'/'0'), result,
    /// completed max age ms, completed max count, events channel, process₁…processₙ.
    /// Finishes the processes the worker holds: the record becomes `completed` (with the
    /// result) and joins the retention list (with a max count of 0 it is deleted at once,
    /// the cheapest path); publishes a `done` message for each
    /// (``DoneMessage``). One 1 (finished) or 0 (not held) per process.
    package static let finish = RedisScript(base + announcing + trimming + forgetting + """
        local function field(s) return #s .. ':' .. s end
        local now = nowms()
        local finishedAt = fmt(now)
        local keep = tonumber(ARGV[7])
        local settings = redis.call('HMGET', KEYS[12], 'concurrency', 'watched')
        watchedQueue = settings[2] ~= false
        local results = {}
        local length = 0
        for i = 9, #ARGV do
          local id = redis.call('HGET', KEYS[16], ARGV[i])
          if id then
            local task = redis.call('HGET', KEYS[2], id)
            redis.call('HDEL', KEYS[16], ARGV[i])
            if task and keep == 0 then
              announce(id, 'completed', ARGV[1])
              forget(id, false)
            elseif task then
              forget(id, true)
              local job = jobkey(id)
              if ARGV[4] == '1' then
                redis.call('HSET', job, 'st', 'completed', 'fa', finishedAt, 'rs', ARGV[5])
              else
                redis.call('HSET', job, 'st', 'completed', 'fa', finishedAt)
              end
              length = redis.call('RPUSH', KEYS[13], finishedAt .. '|' .. id)
              announce(id, 'completed', ARGV[1])
            else
              forget(id, false)
              task = ''
            end
            local message = field(ARGV[3] .. ARGV[i]) .. field(ARGV[2]) .. field(task)
            if ARGV[4] == '1' then message = message .. field(ARGV[5]) end
            redis.call('PUBLISH', ARGV[1], message)
            results[#results + 1] = 1
          else
            results[#results + 1] = 0
          end
        end
        if length > 0 then trim(KEYS[13], length, tonumber(ARGV[6]), keep, now) end
        if settings[1] and (redis.call('LLEN', KEYS[1]) > 0 or redis.call('EXISTS', KEYS[10]) == 1) then
          redis.call('PUBLISH', ARGV[8], 'work:' .. #results)
        end
        return results
        """)

    /// ARGV: channel. Publishes `work` with the number of waiting tasks; returns it.
    static let requestWork = RedisScript(base + counting + """
        local n = waitingCount()
        redis.call('PUBLISH', ARGV[1], 'work:' .. n)
        return n
        """)

    /// The number of waiting tasks (the list and the prioritized set).
    static let count = RedisScript(base + counting + """
        return waitingCount()
        """)

    /// ARGV: channel, maxDeliveries, reason, mode, worker to mark dead in this queue ('' for
    /// none), a random fraction (jitter), failed max age ms, failed max count, done channel,
    /// process₁…processₙ (none: every process the worker holds here).
    ///
    /// Modes: '0' given back unharmed (no delivery, no attempt counted): FRONT of the queue.
    /// '1' stopped (a delivery counted, no attempt): FRONT, or the dead letters at
    /// maxDeliveries. '2' failed (an attempt counted): with a retry policy, delayed by its
    /// backoff or, after its last attempt, dead-lettered; without one as '1'. '3' failed for
    /// good: the record becomes `failed` and joins the retention list.
    /// Publishes `work`. Returns {requeued, dead-lettered, not held, delayed, failed}.
    static let giveBack = RedisScript(base + placing + announcing + trimming + forgetting + """
        local now = nowms()
        local mode = ARGV[4]
        local processes = {}
        if #ARGV > 9 then
          for i = 10, #ARGV do processes[#processes + 1] = ARGV[i] end
        else
          processes = redis.call('HKEYS', KEYS[16])
          table.sort(processes, function(a, b) return tonumber(a) < tonumber(b) end)
        end
        local max = tonumber(ARGV[2])
        local random = tonumber(ARGV[6])
        local requeued, dead, missing, delayed, failed = 0, 0, 0, 0, 0
        local failedLength = 0
        local function toDead(id)
          redis.call('RPUSH', KEYS[6], id)
          redis.call('HSET', jobkey(id), 'st', 'dead', 'er', ARGV[3], 'fa', fmt(now))
          announce(id, 'dead', ARGV[9])
          dead = dead + 1
        end
        for i = #processes, 1, -1 do
          local id = redis.call('HGET', KEYS[16], processes[i])
          if not id then
            missing = missing + 1
          else
            redis.call('HDEL', KEYS[16], processes[i])
            if redis.call('HEXISTS', KEYS[2], id) == 1 then
              local job = jobkey(id)
              local deliveries = tonumber(redis.call('HGET', KEYS[3], id) or '0')
              if mode == '0' and deliveries > 0 then
                deliveries = redis.call('HINCRBY', KEYS[3], id, -1)
              end
              if (mode == '0' or mode == '1') and tonumber(redis.call('HGET', job, 'at') or '0') > 0 then
                redis.call('HINCRBY', job, 'at', -1)
              end
              redis.call('HSET', KEYS[7], id, ARGV[3])
              local policy = false
              if mode == '2' then policy = redis.call('HGET', job, 'ra') end
              if mode == '3' then
                forget(id, true)
                redis.call('HSET', job, 'st', 'failed', 'er', ARGV[3], 'fa', fmt(now))
                failedLength = redis.call('RPUSH', KEYS[14], fmt(now) .. '|' .. id)
                announce(id, 'failed', ARGV[9])
                failed = failed + 1
              elseif policy then
                redis.call('HSET', job, 'er', ARGV[3])
                local attempts = tonumber(redis.call('HGET', job, 'at') or '0')
                local limit, kind, base, cap, jitter = string.match(policy, '^(%d+),(%a),(%d+),(%d+),([%d%.]+)$')
                if attempts >= tonumber(limit) then
                  toDead(id)
                else
                  local delay = tonumber(base)
                  if kind == 'e' then delay = delay * 2 ^ math.min(attempts - 1, 60) end
                  delay = math.min(delay, tonumber(cap))
                  local fraction = (random + i * 0.6180339887) % 1
                  delay = math.floor(delay * (1 - tonumber(jitter) * fraction))
                  local due = now + delay
                  redis.call('ZADD', KEYS[11], fmt(due), id)
                  redis.call('HSET', job, 'st', 'delayed', 'du', fmt(due))
                  delayed = delayed + 1
                end
              elseif mode ~= '0' and deliveries >= max then
                redis.call('HSET', job, 'er', ARGV[3])
                toDead(id)
              else
                if mode ~= '0' then redis.call('HSET', job, 'er', ARGV[3]) end
                toWaiting(id, true)
                requeued = requeued + 1
              end
            end
          end
        end
        if ARGV[5] ~= '' then
          local seconds = tonumber(redis.call('TIME')[1])
          redis.call('HSET', KEYS[8], ARGV[5], 'dead:' .. seconds)
          local owners = redis.call('HGETALL', KEYS[8])
          for i = 1, #owners, 2 do
            local since = tonumber(string.match(owners[i + 1], '^dead:(%d+)$') or '')
            if since and seconds - since > 86400 then redis.call('HDEL', KEYS[8], owners[i]) end
          end
        end
        if failed > 0 then trim(KEYS[14], failedLength, tonumber(ARGV[7]), tonumber(ARGV[8]), now) end
        if requeued > 0 then
          redis.call('PUBLISH', ARGV[1], 'work:' .. requeued)
        elseif delayed > 0 or (missing == 0 and #processes > 0 and redis.call('HEXISTS', KEYS[12], 'concurrency') == 1) then
          redis.call('PUBLISH', ARGV[1], 'work:0')
        end
        return {requeued, dead, missing, delayed, failed}
        """)

    /// ARGV: channel, task, prefix of the in-flight hashes. Removes every waiting or delayed
    /// copy of the task and forgets the in-flight copies' tasks (so a stop, a shutdown or a
    /// recovery cannot put them back; their finish still succeeds), clears its unique
    /// marker, publishes `cancel`. Returns the number of queued copies removed.
    static let cancel = RedisScript(base + forgetting + """
        local ids = redis.call('LRANGE', KEYS[1], 0, -1)
        local keep, removed = {}, 0
        for _, id in ipairs(ids) do
          if redis.call('HGET', KEYS[2], id) == ARGV[2] then
            forget(id)
            removed = removed + 1
          else
            keep[#keep + 1] = id
          end
        end
        if removed > 0 then
          redis.call('DEL', KEYS[1])
          for i = 1, #keep, 1000 do
            redis.call('RPUSH', KEYS[1], unpack(keep, i, math.min(i + 999, #keep)))
          end
        end
        for _, set in ipairs({KEYS[10], KEYS[11]}) do
          if redis.call('EXISTS', set) == 1 then
            for _, id in ipairs(redis.call('ZRANGE', set, 0, -1)) do
              if redis.call('HGET', KEYS[2], id) == ARGV[2] then
                redis.call('ZREM', set, id)
                forget(id)
                removed = removed + 1
              end
            end
          end
        end
        local owners = redis.call('HGETALL', KEYS[8])
        for i = 1, #owners, 2 do
          if owners[i + 1] == 'live' then
            local held = redis.call('HGETALL', ARGV[3] .. owners[i])
            for j = 2, #held, 2 do
              if redis.call('HGET', KEYS[2], held[j]) == ARGV[2] then forget(held[j]) end
            end
          end
        end
        for _, id in ipairs(redis.call('SMEMBERS', KEYS[4])) do
          if redis.call('HGET', KEYS[2], id) == ARGV[2] then redis.call('SREM', KEYS[4], id) end
        end
        redis.call('SREM', KEYS[5], ARGV[2])
        redis.call('PUBLISH', ARGV[1], 'cancel:' .. ARGV[2])
        return removed
        """)

    /// ARGV: channel, prefix of the in-flight hashes. Deletes the queue: its tasks and their
    /// records, dead letters, markers, settings (pause, limits, repeatable tasks) and every
    /// worker's in-flight hash; keeps the dead-worker marks (pruned after a day) and the id
    /// sequence (so stale process ids never match new entries). Publishes `delete`.
    /// Returns the number of keys deleted.
    static let deleteQueue = RedisScript(base + """
        local deleted = 0
        local owners = redis.call('HGETALL', KEYS[8])
        for i = 1, #owners, 2 do
          deleted = deleted + redis.call('DEL', ARGV[2] .. owners[i])
          if owners[i + 1] == 'live' then redis.call('HDEL', KEYS[8], owners[i]) end
        end
        for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do deleted = deleted + redis.call('DEL', jobkey(id)) end
        for _, list in ipairs({KEYS[13], KEYS[14]}) do
          for _, member in ipairs(redis.call('LRANGE', list, 0, -1)) do
            deleted = deleted + redis.call('DEL', jobkey(string.match(member, '^%d+|(.*)$')))
          end
        end
        deleted = deleted + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                                       KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15],
                                       TAG .. ':repeat', TAG .. ':repeatnext')
        redis.call('PUBLISH', ARGV[1], 'delete:')
        return deleted
        """)

    /// ARGV: limit (-1: all). The waiting tasks, in dequeue order (prioritized above 0, the
    /// list, prioritized below 0).
    static let waiting = RedisScript(base + """
        local limit = tonumber(ARGV[1])
        local ids = {}
        local function add(list)
          for _, id in ipairs(list) do
            if limit >= 0 and #ids >= limit then return end
            ids[#ids + 1] = id
          end
        end
        local hasPrio = redis.call('EXISTS', KEYS[10]) == 1
        if hasPrio then add(redis.call('ZRANGEBYSCORE', KEYS[10], '-inf', '(0')) end
        if limit < 0 then
          add(redis.call('LRANGE', KEYS[1], 0, -1))
        elseif #ids < limit then
          add(redis.call('LRANGE', KEYS[1], 0, limit - #ids - 1))
        end
        if hasPrio then add(redis.call('ZRANGEBYSCORE', KEYS[10], 0, '+inf')) end
        local out = {}
        for i = 1, #ids, 1000 do
          local chunk = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
          for _, task in ipairs(chunk) do out[#out + 1] = task or '' end
        end
        return out
        """)

    /// ARGV: prefix of the in-flight hashes, task ('' with ARGV[3] == '0' for all).
    /// {worker, process, task, deliveries, id, attempts}… of every live worker's matching processes.
    static let processes = RedisScript("""
        local out = {}
        local owners = redis.call('HGETALL', KEYS[8])
        for i = 1, #owners, 2 do
          if owners[i + 1] == 'live' then
            local held = redis.call('HGETALL', ARGV[1] .. owners[i])
            for j = 1, #held, 2 do
              local task = redis.call('HGET', KEYS[2], held[j + 1]) or ''
              if ARGV[3] == '0' or task == ARGV[2] then
                out[#out + 1] = owners[i]
                out[#out + 1] = held[j]
                out[#out + 1] = task
                out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], held[j + 1]) or '0')
                out[#out + 1] = held[j + 1]
                out[#out + 1] = tonumber(redis.call('HGET', string.sub(KEYS[1], 1, -7) .. ':job:' .. held[j + 1], 'at') or '1')
              end
            end
          end
        end
        return out
        """)

    /// {id, task, deliveries, reason}… of the dead letters, oldest first.
    static let deadLetters = RedisScript("""
        local out = {}
        for _, id in ipairs(redis.call('LRANGE', KEYS[6], 0, -1)) do
          out[#out + 1] = id
          out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
          out[#out + 1] = tonumber(redis.call('HGET', KEYS[3], id) or '0')
          out[#out + 1] = redis.call('HGET', KEYS[7], id) or ''
        end
        return out
        """)

    /// ARGV: channel, mode ('retry'/'purge'), id₁…idₙ (none: all). Retry appends the dead
    /// letters to the back of their priority with their deliveries and attempts reset;
    /// purge forgets them and their records. Returns how many were moved or purged.
    static let settleDeadLetters = RedisScript(base + placing + forgetting + """
        local ids = {}
        if #ARGV > 2 then
          for i = 3, #ARGV do
            if redis.call('LREM', KEYS[6], 1, ARGV[i]) == 1 then ids[#ids + 1] = ARGV[i] end
          end
        else
          ids = redis.call('LRANGE', KEYS[6], 0, -1)
          redis.call('DEL', KEYS[6])
        end
        for _, id in ipairs(ids) do
          if ARGV[2] == 'retry' then
            redis.call('HDEL', KEYS[3], id)
            redis.call('HSET', jobkey(id), 'at', 0)
            toWaiting(id, false)
          else
            forget(id)
          end
        end
        if ARGV[2] == 'retry' and #ids > 0 then redis.call('PUBLISH', ARGV[1], 'work:' .. #ids) end
        return #ids
        """)

    /// ARGV: task id. {record fields (flat), task bytes or nil, deliveries or nil, now ms},
    /// or nil when the task has no record.
    static let taskInfo = RedisScript(base + """
        local fields = redis.call('HGETALL', jobkey(ARGV[1]))
        if #fields == 0 then return false end
        return {fields, redis.call('HGET', KEYS[2], ARGV[1]) or false,
                redis.call('HGET', KEYS[3], ARGV[1]) or false, fmt(nowms())}
        """)

    /// ARGV: task id. Marks the task as watched (its changes are announced on the done
    /// channel); 1, or 0 when it has no record.
    static let watch = RedisScript(base + """
        if redis.call('EXISTS', jobkey(ARGV[1])) == 0 then return 0 end
        redis.call('HSET', jobkey(ARGV[1]), 'w', 1)
        redis.call('HSET', KEYS[12], 'watched', 1)
        return 1
        """)

    /// ARGV: process number, progress, done channel. Stores the progress of a process the
    /// worker holds and counts the report (`pn`, which orders reports for observers), and
    /// announces it when watched; 1, or 0 when not held.
    static let progress = RedisScript(base + announcing + """
        local id = redis.call('HGET', KEYS[16], ARGV[1])
        if not id or redis.call('HEXISTS', KEYS[2], id) == 0 then return 0 end
        redis.call('HSET', jobkey(id), 'pg', ARGV[2])
        redis.call('HINCRBY', jobkey(id), 'pn', 1)
        announce(id, 'progress', ARGV[3])
        return 1
        """)

    /// ARGV: channel, paused ('1'/'0'). Pauses (takes effect at every worker's next dequeue)
    /// or resumes the queue; a resume publishes `work`. Returns 1.
    static let setPaused = RedisScript(base + counting + """
        if ARGV[2] == '1' then
          redis.call('HSET', KEYS[12], 'paused', fmt(nowms()))
        else
          redis.call('HDEL', KEYS[12], 'paused')
          redis.call('PUBLISH', ARGV[1], 'work:' .. waitingCount())
        end
        return 1
        """)

    /// ARGV: channel, rate ('' none), per ms, concurrency ('' none). Sets the queue's
    /// fleet-wide limits and publishes `work` (a looser limit frees workers). Returns 1.
    static let setLimits = RedisScript(base + counting + """
        if ARGV[2] == '' then
          redis.call('HDEL', KEYS[12], 'rate', 'per')
        else
          redis.call('HSET', KEYS[12], 'rate', ARGV[2], 'per', ARGV[3])
        end
        if ARGV[4] == '' then
          redis.call('HDEL', KEYS[12], 'concurrency')
        else
          redis.call('HSET', KEYS[12], 'concurrency', ARGV[4])
        end
        redis.call('PUBLISH', ARGV[1], 'work:' .. waitingCount())
        return 1
        """)

    /// {paused since ms or nil, rate or nil, per ms or nil, concurrency or nil, waiting,
    /// delayed, active, dead, completed, failed}.
    static let queueState = RedisScript(base + counting + """
        local settings = redis.call('HMGET', KEYS[12], 'paused', 'rate', 'per', 'concurrency')
        local delayed = 0
        if redis.call('EXISTS', KEYS[11]) == 1 then delayed = redis.call('ZCARD', KEYS[11]) end
        local active = 0
        local owners = redis.call('HGETALL', KEYS[8])
        for i = 1, #owners, 2 do
          if owners[i + 1] == 'live' then active = active + #redis.call('HKEYS', TAG .. ':working:' .. owners[i]) end
        end
        return {settings[1] or false, settings[2] or false, settings[3] or false, settings[4] or false,
                waitingCount(), delayed, active, redis.call('LLEN', KEYS[6]), redis.call('LLEN', KEYS[13]),
                redis.call('LLEN', KEYS[14])}
        """)

    // MARK: Repeatable tasks (KEYS[16] definitions, KEYS[17] next ticks)

    /// ARGV: channel, name, definition, first tick ms. Adds or replaces a repeatable task;
    /// publishes `repeat:` (schedulers re-read). The same definition again keeps its next
    /// tick (every instance of a service adds its repeatables when it starts: that must not
    /// move the schedule). Returns 1 when added or replaced, 0 when unchanged.
    static let setRepeatable = RedisScript(base + """
        if redis.call('HGET', KEYS[16], ARGV[2]) == ARGV[3] and redis.call('HEXISTS', KEYS[17], ARGV[2]) == 1 then
          return 0
        end
        redis.call('HSET', KEYS[16], ARGV[2], ARGV[3])
        redis.call('HSET', KEYS[17], ARGV[2], ARGV[4])
        redis.call('PUBLISH', ARGV[1], 'repeat:')
        return 1
        """)

    /// ARGV: channel, name. Removes a repeatable task; 1, or 0 when there was none.
    static let removeRepeatable = RedisScript(base + """
        local removed = redis.call('HDEL', KEYS[16], ARGV[2])
        redis.call('HDEL', KEYS[17], ARGV[2])
        if removed == 1 then redis.call('PUBLISH', ARGV[1], 'repeat:') end
        return removed
        """)

    /// {now ms, (name, definition, next tick)…}.
    static let repeatState = RedisScript(base + """
        local out = {fmt(nowms())}
        local definitions = redis.call('HGETALL', KEYS[16])
        for i = 1, #definitions, 2 do
          out[#out + 1] = definitions[i]
          out[#out + 1] = definitions[i + 1]
          out[#out + 1] = redis.call('HGET', KEYS[17], definitions[i]) or '0'
        end
        return out
        """)

    /// ARGV: channel, name, expected tick, following tick, definition, task id, task,
    /// priority, retry policy ('' none). Only when the repeatable still has this definition
    /// and its next tick still is the expected one: advances it to the following tick and
    /// enqueues the tick's task (unless a task with its id has a record). So each tick is
    /// enqueued once, whatever the number of schedulers. 1 enqueued, 2 already there,
    /// 0 another scheduler was first (or the definition changed).
    static let tick = RedisScript(base + placing + """
        if redis.call('HGET', KEYS[16], ARGV[2]) ~= ARGV[5] then return 0 end
        if redis.call('HGET', KEYS[17], ARGV[2]) ~= ARGV[3] then return 0 end
        redis.call('HSET', KEYS[17], ARGV[2], ARGV[4])
        local id = ARGV[6]
        if redis.call('EXISTS', jobkey(id)) == 1 then return 2 end
        local now = nowms()
        local seq = redis.call('INCRBY', KEYS[9], 1)
        local p = tonumber(ARGV[8])
        redis.call('HSET', KEYS[2], id, ARGV[7])
        local job = jobkey(id)
        redis.call('HSET', job, 'ca', fmt(now), 'pr', ARGV[8], 'st', 'waiting')
        if ARGV[9] ~= '' then redis.call('HSET', job, 'ra', ARGV[9]) end
        if p ~= 0 then
          redis.call('ZADD', KEYS[10], fmt(pscore(p, seq)), id)
        else
          redis.call('RPUSH', KEYS[1], id)
        end
        redis.call('PUBLISH', ARGV[1], 'work:1')
        return 1
        """)

    // MARK: Registry ({prefix} slot)

    /// KEYS: workers, heartbeat. ARGV: worker, timeout ms ('' for a permanent worker,
    /// whose heartbeat never expires). 1 registered, 0 id in use.
    static let register = RedisScript("""
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
        local set
        if ARGV[2] == '' then
          set = redis.call('SET', KEYS[2], 'RUN', 'NX')
        else
          set = redis.call('SET', KEYS[2], 'RUN', 'PX', ARGV[2], 'NX')
        end
        if not set then return 0 end
        redis.call('SADD', KEYS[1], ARGV[1])
        return 1
        """)

    /// KEYS: heartbeat, queues of the worker. ARGV: queue. 1, or 0 when the worker's
    /// heartbeat is gone (it was declared dead).
    static let startWork = RedisScript("""
        if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
        redis.call('SADD', KEYS[2], ARGV[1])
        return 1
        """)

    /// KEYS: workers. ARGV: registry tag + ':'. {{worker, {queue…}}…} of the registered
    /// workers whose heartbeat expired.
    static let findDead = RedisScript("""
        local out = {}
        for _, worker in ipairs(redis.call('SMEMBERS', KEYS[1])) do
          if redis.call('EXISTS', ARGV[1] .. 'heartbeat:' .. worker) == 0 then
            out[#out + 1] = {worker, redis.call('SMEMBERS', ARGV[1] .. 'queues:' .. worker)}
          end
        end
        return out
        """)

    /// KEYS: workers, heartbeat. ARGV: worker. Deletes a registered worker's heartbeat
    /// (it is then dead); 1, or 0 when the worker is not registered.
    static let unregisterHeartbeat = RedisScript("""
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
        redis.call('DEL', KEYS[2])
        return 1
        """)

    /// KEYS: workers, heartbeat, queues of the worker. ARGV: worker, force ('1': even if
    /// its heartbeat is alive). Removes the registration; 0 when it was alive.
    static let deregister = RedisScript("""
        if ARGV[2] ~= '1' and redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
        redis.call('DEL', KEYS[2], KEYS[3])
        redis.call('SREM', KEYS[1], ARGV[1])
        return 1
        """)
}
