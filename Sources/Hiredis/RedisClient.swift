/// What LockKit, QueueKit and your own code need from Redis, whatever the deployment: a
/// single server or a Sentinel-configured master (``RedisConnection``) or a cluster
/// (``RedisCluster``). Every module takes `any RedisClient`.
public protocol RedisClient: Sendable {
    /// Sends one command and returns its reply. A cluster routes it by its keys (commands
    /// without keys go to any primary).
    nonisolated(nonsending) func send(_ command: RedisCommand, timeout: Duration?) async throws -> RedisReply

    /// Sends `command` to the server that holds `key` (a cluster routes by its slot; a
    /// single server ignores it): for commands whose keys the client cannot see, such as
    /// `WAIT` after a write to `key`, or `SCRIPT LOAD` before a script on `key`.
    nonisolated(nonsending) func send(_ command: RedisCommand, routedBy key: [UInt8], timeout: Duration?) async throws -> RedisReply

    /// Sends several commands with one suspension; one result per command, in order (a
    /// cluster splits them per node and puts the results back in order).
    nonisolated(nonsending) func pipeline(_ commands: [RedisCommand], timeout: Duration?) async throws -> [Result<RedisReply, RedisError>]

    /// Runs `script` (`EVALSHA`, loading it where it runs on `NOSCRIPT`). On a cluster the
    /// keys must share one slot (a hash tag), else ``RedisError/Code/crossSlot`` before
    /// anything is sent.
    nonisolated(nonsending) func run(_ script: RedisScript, keys: [any RedisArgument], arguments: [any RedisArgument],
                                     timeout: Duration?) async throws -> RedisReply

    /// Every key matching the glob `pattern`, found with `SCAN` (on every primary of a
    /// cluster), never `KEYS`.
    func scanKeys(matching pattern: String) async throws -> [String]

    /// Closes the connection(s); commands in flight fail with
    /// ``RedisError/Code/connectionClosed``.
    func close() async
}

extension RedisClient {
    /// Sends one command built from a name and arguments.
    @discardableResult
    public nonisolated(nonsending) func send<each Argument: RedisArgument>(_ name: String, _ arguments: repeat each Argument) async throws -> RedisReply {
        try await send(RedisCommand(name, repeat each arguments), timeout: nil)
    }

    /// ``send(_:timeout:)`` with the configured timeout.
    @discardableResult
    public nonisolated(nonsending) func send(_ command: RedisCommand) async throws -> RedisReply {
        try await send(command, timeout: nil)
    }

    /// ``run(_:keys:arguments:timeout:)`` with the configured timeout.
    @discardableResult
    public nonisolated(nonsending) func run(_ script: RedisScript, keys: [any RedisArgument] = [], arguments: [any RedisArgument] = []) async throws -> RedisReply {
        try await run(script, keys: keys, arguments: arguments, timeout: nil)
    }

    /// ``pipeline(_:timeout:)`` with the configured timeout.
    public nonisolated(nonsending) func pipeline(_ commands: [RedisCommand]) async throws -> [Result<RedisReply, RedisError>] {
        try await pipeline(commands, timeout: nil)
    }
}

extension RedisConnection: RedisClient {
    public nonisolated(nonsending) func send(_ command: RedisCommand, routedBy key: [UInt8], timeout: Duration?) async throws -> RedisReply {
        try await send(command, timeout: timeout)
    }

    public nonisolated func scanKeys(matching pattern: String) async throws -> [String] {
        var cursor = "0"
        var keys: [String] = []
        repeat {
            let reply = try await send(RedisCommand("SCAN", cursor, "MATCH", pattern, "COUNT", 1000))
            guard case .array(let parts) = reply, parts.count == 2 else {
                throw RedisError(.wrongReplyType, "unexpected SCAN reply")
            }
            cursor = try parts[0].decode(String.self)
            keys += try parts[1].decode([String].self)
        } while cursor != "0"
        return keys
    }
}

extension RedisScript {
    /// EVALSHA (or EVAL) of this script with `keys` and `arguments`.
    func command(_ name: String, _ first: String, keys: [any RedisArgument], arguments: [any RedisArgument]) -> RedisCommand {
        var command = RedisCommand(name, first, keys.count)
        for key in keys { command.append(key) }
        for argument in arguments { command.append(argument) }
        return command
    }
}
