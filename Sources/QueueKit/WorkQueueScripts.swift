import Hiredis

/// The Lua scripts of the work queue. A queue script gets ``QueueKeys/all(worker:)``:
/// KEYS[1] pending list, [2] tasks, [3] deliveries, [4] unique entries, [5] markers,
/// [6] dead letters, [7] reasons, [8] owners, [9] sequence, [10] a worker's in-flight hash.
/// Registry scripts touch only `{prefix}` keys. Each script touches one slot.
enum QueueScripts {
    /// Forgets an entry: its task, counters, reason, and the unique marker it owns.
    private static let forget = """
        local function forget(id)
          if redis.call('SREM', KEYS[4], id) == 1 then
            local task = redis.call('HGET', KEYS[2], id)
            if task then redis.call('SREM', KEYS[5], task) end
          end
          redis.call('HDEL', KEYS[2], id)
          redis.call('HDEL', KEYS[3], id)
          redis.call('HDEL', KEYS[7], id)
        end

        """

    /// ARGV: channel, unique ('1'/'0'), strict ('1'/'0'), task₁…taskₙ. Appends the tasks in
    /// order. A unique enqueue skips a task already marked (queued or in flight from an
    /// earlier unique enqueue) or given twice in the batch; a strict one appends nothing
    /// then. Returns {1, queue length, skipped index…} (indices 1-based), or, strict,
    /// {0, index of the first duplicate}.
    static let enqueue = RedisScript("""
        local first = 4
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
        if n > 0 then
          local last = redis.call('INCRBY', KEYS[9], n)
          for j, i in ipairs(ids) do
            local id = string.format('%d', last - n + j)
            redis.call('HSET', KEYS[2], id, ARGV[i])
            redis.call('RPUSH', KEYS[1], id)
            if ARGV[2] == '1' then
              redis.call('SADD', KEYS[5], ARGV[i])
              redis.call('SADD', KEYS[4], id)
            end
          end
          redis.call('PUBLISH', ARGV[1], 'work:' .. n)
        end
        local out = {1, redis.call('LLEN', KEYS[1])}
        for _, index in ipairs(skipped) do out[#out + 1] = index end
        return out
        """)

    /// ARGV: worker, max, first process number. Moves up to `max` entries from the head of
    /// the queue to the worker's in-flight hash. {-1} when the worker was declared dead in
    /// this queue; else {count, remaining, (process, task, deliveries)…}.
    static let dequeue = RedisScript("""
        local owner = redis.call('HGET', KEYS[8], ARGV[1])
        if owner and owner ~= 'live' then return {-1} end
        local out = {0, 0}
        local number = tonumber(ARGV[3])
        for i = 1, tonumber(ARGV[2]) do
          local id = redis.call('LPOP', KEYS[1])
          if not id then break end
          local process = string.format('%d', number + i - 1)
          redis.call('HSET', KEYS[10], process, id)
          out[#out + 1] = process
          out[#out + 1] = redis.call('HGET', KEYS[2], id) or ''
          out[#out + 1] = redis.call('HINCRBY', KEYS[3], id, 1)
          out[1] = out[1] + 1
        end
        if out[1] > 0 and not owner then redis.call('HSET', KEYS[8], ARGV[1], 'live') end
        out[2] = redis.call('LLEN', KEYS[1])
        return out
        """)

    /// ARGV: done channel, worker, process id prefix, has result ('1'/'0'), result,
    /// process₁…processₙ. Finishes the processes the worker holds and publishes a `done`
    /// message for each (``DoneMessage``): one 1 (finished) or 0 (not held) per process.
    static let finish = RedisScript(forget + """
        local function field(s) return #s .. ':' .. s end
        local results = {}
        for i = 6, #ARGV do
          local id = redis.call('HGET', KEYS[10], ARGV[i])
          if id then
            local task = redis.call('HGET', KEYS[2], id) or ''
            redis.call('HDEL', KEYS[10], ARGV[i])
            forget(id)
            local message = field(ARGV[3] .. ARGV[i]) .. field(ARGV[2]) .. field(task)
            if ARGV[4] == '1' then message = message .. field(ARGV[5]) end
            redis.call('PUBLISH', ARGV[1], message)
            results[#results + 1] = 1
          else
            results[#results + 1] = 0
          end
        end
        return results
        """)

    /// KEYS: pending. ARGV: channel. Publishes `work` with the queue's length; returns it.
    static let requestWork = RedisScript("""
        local n = redis.call('LLEN', KEYS[1])
        redis.call('PUBLISH', ARGV[1], 'work:' .. n)
        return n
        """)

    /// ARGV: channel, maxDeliveries, reason, counts ('1': this delivery failed and counts
    /// towards maxDeliveries; '0': given back unharmed), worker to mark dead in this queue
    /// ('' for none), process₁…processₙ (none: every process the worker holds here).
    /// Returns processes to the FRONT of the queue, in their dequeue order, or to the dead
    /// letters once they reached maxDeliveries; publishes `work`.
    /// Returns {requeued, dead-lettered, not held}.
    static let giveBack = RedisScript("""
        local processes = {}
        if #ARGV > 5 then
          for i = 6, #ARGV do processes[#processes + 1] = ARGV[i] end
        else
          processes = redis.call('HKEYS', KEYS[10])
          table.sort(processes, function(a, b) return tonumber(a) < tonumber(b) end)
        end
        local max = tonumber(ARGV[2])
        local requeued, dead, missing = 0, 0, 0
        for i = #processes, 1, -1 do
          local id = redis.call('HGET', KEYS[10], processes[i])
          if not id then
            missing = missing + 1
          else
            redis.call('HDEL', KEYS[10], processes[i])
            if redis.call('HEXISTS', KEYS[2], id) == 1 then
              local deliveries = tonumber(redis.call('HGET', KEYS[3], id) or '0')
              if ARGV[4] == '0' and deliveries > 0 then
                deliveries = redis.call('HINCRBY', KEYS[3], id, -1)
              end
              redis.call('HSET', KEYS[7], id, ARGV[3])
              if ARGV[4] == '1' and deliveries >= max then
                redis.call('RPUSH', KEYS[6], id)
                dead = dead + 1
              else
                redis.call('LPUSH', KEYS[1], id)
                requeued = requeued + 1
              end
            end
          end
        end
        if ARGV[5] ~= '' then
          local now = tonumber(redis.call('TIME')[1])
          redis.call('HSET', KEYS[8], ARGV[5], 'dead:' .. now)
          local owners = redis.call('HGETALL', KEYS[8])
          for i = 1, #owners, 2 do
            local since = tonumber(string.match(owners[i + 1], '^dead:(%d+)$') or '')
            if since and now - since > 86400 then redis.call('HDEL', KEYS[8], owners[i]) end
          end
        end
        if requeued > 0 then redis.call('PUBLISH', ARGV[1], 'work:' .. requeued) end
        return {requeued, dead, missing}
        """)

    /// ARGV: channel, task, prefix of the in-flight hashes. Removes every queued copy of the
    /// task and forgets the in-flight copies' tasks (so a stop, a shutdown or a recovery
    /// cannot put them back; their finish still succeeds), clears its unique marker,
    /// publishes `cancel`. Returns the number of queued copies removed.
    static let cancel = RedisScript(forget + """
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

    /// ARGV: channel, prefix of the in-flight hashes. Deletes the queue, its dead letters,
    /// markers and every worker's in-flight hash; keeps the dead-worker marks (pruned after
    /// a day) and the id sequence (so stale process ids never match new entries).
    /// Publishes `delete`. Returns the number of keys deleted.
    static let deleteQueue = RedisScript("""
        local deleted = 0
        local owners = redis.call('HGETALL', KEYS[8])
        for i = 1, #owners, 2 do
          deleted = deleted + redis.call('DEL', ARGV[2] .. owners[i])
          if owners[i + 1] == 'live' then redis.call('HDEL', KEYS[8], owners[i]) end
        end
        deleted = deleted + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7])
        redis.call('PUBLISH', ARGV[1], 'delete:')
        return deleted
        """)

    /// KEYS: pending, tasks. The task at the head, or nil.
    static let peek = RedisScript("""
        local id = redis.call('LINDEX', KEYS[1], 0)
        if not id then return false end
        return redis.call('HGET', KEYS[2], id)
        """)

    /// KEYS: a list of entry ids, tasks. ARGV: start, stop. The tasks, in list order.
    static let tasks = RedisScript("""
        local ids = redis.call('LRANGE', KEYS[1], ARGV[1], ARGV[2])
        local out = {}
        for i = 1, #ids, 1000 do
          local chunk = redis.call('HMGET', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
          for _, task in ipairs(chunk) do out[#out + 1] = task or '' end
        end
        return out
        """)

    /// ARGV: prefix of the in-flight hashes, task ('' with ARGV[3] == '0' for all).
    /// {worker, process, task, deliveries}… of every live worker's matching processes.
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
    /// letters to the back of the queue with their deliveries reset; purge forgets them.
    /// Returns how many were moved or purged.
    static let settleDeadLetters = RedisScript(forget + """
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
            redis.call('RPUSH', KEYS[1], id)
          else
            forget(id)
          end
        end
        if ARGV[2] == 'retry' and #ids > 0 then redis.call('PUBLISH', ARGV[1], 'work:' .. #ids) end
        return #ids
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
