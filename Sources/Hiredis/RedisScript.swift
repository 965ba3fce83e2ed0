import Synchronization

/// A Lua script run with `EVALSHA`, loaded on demand.
///
/// The first run loads the script (`SCRIPT LOAD`) and remembers its SHA1; later runs send
/// only the SHA1. When the server answers `NOSCRIPT` (after `SCRIPT FLUSH`, a restart or
/// a failover) the script is sent again with `EVAL`, which reloads it.
///
/// ```swift
/// let compareAndDelete = RedisScript("""
///     if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
///     return 0
///     """)
/// let deleted = try await connection.run(compareAndDelete, keys: ["lock"], arguments: [token]).decode(Int.self)
/// ```
public final class RedisScript: Sendable, CustomStringConvertible {
    /// The Lua source.
    public let source: String
    private let sha = Mutex<String?>(nil)

    /// A script with this Lua source; its SHA1 is learned on first use (`EVALSHA`, then
    /// `EVAL` when the server does not know it).
    public init(_ source: String) {
        self.source = source
    }

    /// The SHA1 the server reported, once known.
    public var sha1: String? { sha.withLock { $0 } }

    func remember(_ value: String) { sha.withLock { $0 = value } }

    public var description: String { "RedisScript(\(sha1 ?? "not loaded"), \(source.prefix(40))…)" }
}

extension RedisConnection {
    /// Runs `script` with `EVALSHA`, falling back to `EVAL` on `NOSCRIPT`.
    ///
    /// - Throws: ``RedisError`` (a Lua error is ``RedisError/Code/server``; a key or
    ///   command the ACL user may not touch, ``RedisError/Code/noPermission``).
    @discardableResult
    public nonisolated(nonsending) func run(
        _ script: RedisScript,
        keys: [any RedisArgument] = [],
        arguments: [any RedisArgument] = [],
        timeout: Duration? = nil
    ) async throws -> RedisReply {
        func command(_ name: String, _ first: String) -> RedisCommand {
            var command = RedisCommand(name, first, keys.count)
            for key in keys { command.append(key) }
            for argument in arguments { command.append(argument) }
            return command
        }
        var sha = script.sha1
        if sha == nil {
            let loaded = try await send(RedisCommand("SCRIPT", "LOAD", script.source), timeout: timeout).decode(String.self)
            script.remember(loaded)
            sha = loaded
        }
        do {
            return try await send(command("EVALSHA", sha!), timeout: timeout)
        } catch let error as RedisError where error.serverErrorPrefix == "NOSCRIPT" {
            return try await send(command("EVAL", script.source), timeout: timeout)
        }
    }
}
