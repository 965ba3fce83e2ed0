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
    /// Names of the commands that have subcommands with specs of their own.
    private let containers: Set<String>

    init(specs: [String: Spec] = CommandKeys.builtIn) {
        self.specs = specs
        containers = Set(specs.keys.compactMap { key in key.firstIndex(of: "|").map { String(key[..<$0]) } })
    }

    /// Where `command` goes.
    enum Route {
        /// The one slot of its keys; `nil` for a keyless command (any primary will do).
        case slot(Int?)
        /// The keys' positions depend on the arguments in a way only the server knows
        /// (`COMMAND GETKEYS` tells).
        case askServer
    }

    /// Where the keys of a command are.
    enum KeyPositions {
        /// These word positions (empty for a keyless command).
        case keys(StrideTo<Int>)
        /// The positions depend on the arguments in a way only the server knows.
        case askServer
    }

    /// The word positions of `command`'s keys (`EVAL`/`EVALSHA`/`FCALL`: from numkeys).
    func keyPositions(of command: RedisCommand) -> KeyPositions {
        var name = ""
        command.forEachWord { _, bytes in
            name = String(decoding: bytes, as: UTF8.self).lowercased()
            return false
        }
        let count = command.count
        let none = KeyPositions.keys(stride(from: 0, to: 0, by: 1))
        if Self.scriptCommands.contains(name) {
            // Scripts and functions: numkeys, then the keys.
            guard count >= 3 else { return none }
            var numkeys = 0
            command.forEachWord { index, bytes in
                if index == 2 { numkeys = Int(String(decoding: bytes, as: UTF8.self)) ?? 0 }
                return index < 2
            }
            return .keys(stride(from: 3, to: min(3 + max(numkeys, 0), count), by: 1))
        }
        guard var spec = specs[name] else { return .askServer }
        if containers.contains(name) {
            var sub = ""
            command.forEachWord { index, bytes in
                if index == 1 { sub = String(decoding: bytes, as: UTF8.self).lowercased() }
                return index < 1
            }
            if let subSpec = specs[name + "|" + sub] { spec = subSpec }
        }
        if spec.movable { return .askServer }
        guard spec.first > 0, spec.first < count else { return none }
        let last = spec.last < 0 ? count + spec.last : min(spec.last, count - 1)
        guard last >= spec.first else { return none }
        return .keys(stride(from: spec.first, to: last + 1, by: max(spec.step, 1)))
    }

    /// The slot of `command`'s keys, found in one walk over its words, copying nothing.
    ///
    /// - Throws: ``RedisError/Code/crossSlot`` (naming the keys) when they are in different slots.
    func route(_ command: RedisCommand) throws -> Route {
        let positions: StrideTo<Int>
        switch keyPositions(of: command) {
        case .askServer: return .askServer
        case .keys(let keys): positions = keys
        }
        var slot: Int?
        var crossed = false
        var next = positions.makeIterator()
        var wanted = next.next()
        command.forEachWord { index, bytes in
            guard let position = wanted else { return false }
            if index == position {
                let keySlot = ClusterSlot.of(bytes)
                if let slot, slot != keySlot { crossed = true }
                slot = slot ?? keySlot
                wanted = next.next()
            }
            return !crossed
        }
        if crossed {
            var keys: [String] = []
            var all = positions.makeIterator()
            var want = all.next()
            command.forEachWord { index, bytes in
                guard let position = want else { return false }
                if index == position {
                    keys.append(String(decoding: bytes.prefix(64), as: UTF8.self))
                    want = all.next()
                }
                return true
            }
            throw RedisError(.crossSlot, "the keys of \(command.name) are in different slots (use a hash tag): "
                             + keys.joined(separator: ", "))
        }
        return .slot(slot)
    }

    /// The built-in table, for messages about commands sent outside a cluster.
    static let builtInTable = CommandKeys()

    /// `command`'s keys for an error message (at most `limit`, each shown as in
    /// ``RedisCommand/loggableDescription``): `"keys: a, b"`, `"no keys"`, or `nil` when the
    /// table does not know where they are.
    func describeKeys(of command: RedisCommand, limit: Int = 8) -> String? {
        guard case .keys(let positions) = keyPositions(of: command) else { return nil }
        var wanted = Set(positions)
        guard !wanted.isEmpty else { return "no keys" }
        let total = wanted.count
        var shown: [String] = []
        command.forEachWord { index, bytes in
            guard wanted.remove(index) != nil else { return !wanted.isEmpty }
            var text = ""
            RedisCommand.appendLoggable(bytes, to: &text)
            shown.append(text)
            return shown.count < limit && !wanted.isEmpty
        }
        let more = total > shown.count ? " …(+\(total - shown.count) keys)" : ""
        return (total == 1 ? "key: " : "keys: ") + shown.joined(separator: ", ") + more
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
