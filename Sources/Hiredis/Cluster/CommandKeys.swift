/// Where a command's keys are, so that a cluster client can route it: learned from the
/// server's `COMMAND` reply at start-up (first key, last key, step, and whether the keys
/// move), with a built-in table for the common commands should `COMMAND` be refused.
struct CommandKeys: Sendable {
    struct Spec: Sendable, Hashable {
        /// Position of the first key (the name is 0); 0: the command has no key.
        var first: Int
        /// Position of the last key; negative counts from the end (-1: the last word).
        var last: Int
        var step: Int
        /// The keys' positions depend on the arguments (`EVAL`, `ZUNIONSTORE`, `XREAD`…).
        var movable = false
    }

    /// Lowercased name (or `container|sub`) → spec.
    private(set) var specs: [String: Spec]

    init(specs: [String: Spec] = CommandKeys.builtIn) {
        self.specs = specs
    }

    /// Where the keys of `command` are.
    enum Keys {
        /// The byte ranges of the keys (empty: a keyless command, any node will do).
        case keys([[UInt8]])
        /// The positions depend on the arguments in a way only the server knows
        /// (`COMMAND GETKEYS` tells).
        case askServer
    }

    func keys(of command: RedisCommand) throws -> Keys {
        var name = ""
        var sub = ""
        command.forEachWord { index, bytes in
            if index == 0 { name = String(decoding: bytes, as: UTF8.self).lowercased() }
            if index == 1 { sub = String(decoding: bytes, as: UTF8.self).lowercased() }
            return index < 1
        }
        let count = command.count
        // Scripts and functions: numkeys, then the keys.
        if Self.scriptCommands.contains(name) {
            guard count >= 3 else { return .keys([]) }
            var numkeys = 0
            command.forEachWord { index, bytes in
                if index == 2 { numkeys = Int(String(decoding: bytes, as: UTF8.self)) ?? 0 }
                return index < 2
            }
            return .keys(words(of: command, in: 3..<min(3 + max(numkeys, 0), count)))
        }
        guard var spec = specs[name] else { return .askServer }
        if let subSpec = specs[name + "|" + sub] { spec = subSpec }
        if spec.movable { return .askServer }
        guard spec.first > 0, spec.first < count else { return .keys([]) }
        let last = spec.last < 0 ? count + spec.last : min(spec.last, count - 1)
        guard last >= spec.first else { return .keys([]) }
        return .keys(words(of: command, in: spec.first..<(last + 1), step: max(spec.step, 1)))
    }

    private func words(of command: RedisCommand, in positions: Range<Int>, step: Int = 1) -> [[UInt8]] {
        var keys: [[UInt8]] = []
        guard !positions.isEmpty else { return keys }
        command.forEachWord { index, bytes in
            if index >= positions.lowerBound, (index - positions.lowerBound) % step == 0 { keys.append(Array(bytes)) }
            return index + 1 < positions.upperBound
        }
        return keys
    }

    static let scriptCommands: Set<String> = ["eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"]

    /// Reads a `COMMAND` reply: one entry per command, `[name, arity, flags, first key,
    /// last key, step, …, subcommands]` (the subcommands, Redis 7, in the same shape).
    static func parse(_ reply: RedisReply) -> [String: Spec] {
        var specs: [String: Spec] = [:]
        func read(_ entry: RedisReply) {
            guard case .array(let parts) = entry, parts.count >= 6,
                  let name = try? parts[0].decode(String.self),
                  let first = try? parts[3].decode(Int.self),
                  let last = try? parts[4].decode(Int.self),
                  let step = try? parts[5].decode(Int.self) else { return }
            let flags = (try? parts[2].decode([String].self)) ?? []
            specs[name.lowercased()] = Spec(first: first, last: last, step: step, movable: flags.contains("movablekeys"))
            if parts.count >= 10, case .array(let subcommands) = parts[9] {
                for subcommand in subcommands { read(subcommand) }
            }
        }
        if case .array(let entries) = reply { for entry in entries { read(entry) } }
        return specs
    }

    /// The common commands, for when `COMMAND` cannot be asked.
    static let builtIn: [String: Spec] = {
        var specs: [String: Spec] = [:]
        let oneKey = ["get", "set", "setnx", "setex", "psetex", "getset", "getdel", "getex", "append", "strlen",
                      "incr", "decr", "incrby", "decrby", "incrbyfloat", "expire", "pexpire", "expireat", "pexpireat",
                      "ttl", "pttl", "persist", "type", "hget", "hset", "hsetnx", "hmset", "hmget", "hdel", "hgetall",
                      "hkeys", "hvals", "hlen", "hexists", "hincrby", "hincrbyfloat", "lpush", "rpush", "lpop", "rpop",
                      "llen", "lrange", "lindex", "lrem", "ltrim", "lset", "sadd", "srem", "smembers", "sismember",
                      "scard", "spop", "zadd", "zrem", "zrange", "zrangebyscore", "zscore", "zcard", "zincrby",
                      "zremrangebyscore", "zpopmin", "zpopmax", "xadd", "xlen", "xrange", "publish", "spublish",
                      "getrange", "setrange", "getbit", "setbit", "bitcount", "pfadd", "dump", "restore"]
        for name in oneKey { specs[name] = Spec(first: 1, last: 1, step: 1) }
        specs["publish"] = Spec(first: 0, last: 0, step: 0)
        for name in ["del", "unlink", "exists", "touch", "mget", "watch", "sunion", "sinter", "sdiff", "pfcount"] {
            specs[name] = Spec(first: 1, last: -1, step: 1)
        }
        for name in ["mset", "msetnx"] { specs[name] = Spec(first: 1, last: -1, step: 2) }
        for name in ["rename", "renamenx", "rpoplpush", "lmove", "smove", "copy"] { specs[name] = Spec(first: 1, last: 2, step: 1) }
        for name in ["blpop", "brpop", "bzpopmin", "bzpopmax"] { specs[name] = Spec(first: 1, last: -2, step: 1) }
        for name in ["zunionstore", "zinterstore", "sort", "xread", "xreadgroup", "migrate", "georadius"] {
            specs[name] = Spec(first: 0, last: 0, step: 0, movable: true)
        }
        return specs
    }()
}
