import Foundation
import Hiredis

/// The least-privilege Redis 7 ACL rules of the modules, as the README (`## Security`) and
/// the security article document them: one place for the text, so that the tests create users with exactly
/// what the README tells operators to paste.
///
/// Each rule resets channels, keys and commands first, then allows only the commands the
/// module sends (from Swift, and inside its Lua scripts, which run with the caller's ACL),
/// on the keys and channels of its prefix.
public enum ACLRules {
    /// What a script needs to run: `EVALSHA`, `SCRIPT LOAD` (first run) and `EVAL` (after
    /// `NOSCRIPT`: a restart, a failover, `SCRIPT FLUSH`).
    static let scripts = ["evalsha", "eval", "script|load"]

    /// LockKit (`CallbackQueue`): from Swift `GET` (a stored outcome), `SUBSCRIBE` and
    /// `UNSUBSCRIBE` (the subscriber connection); inside the scripts the rest.
    public static let lockKitCommands = scripts + [
        "get", "set", "exists", "del", "incr", "pexpire", "pttl", "time",
        "zadd", "zrem", "zcard", "zscore", "zremrangebyscore",
        "publish", "subscribe", "unsubscribe",
    ]

    /// WorkQueue and its workers: from Swift `SMEMBERS`, `HKEYS`, `SET … XX` (the
    /// heartbeat), `SREM`, `SCAN` (`getQueues`), `TIME` (repeatable-task schedulers),
    /// `SUBSCRIBE`/`UNSUBSCRIBE`; inside the scripts the rest. The sorted-set commands and
    /// `PEXPIRE` are for priorities, delayed tasks, retries with backoff and rate limits.
    public static let workQueueCommands = scripts + [
        "set", "exists", "del", "incrby", "pexpire", "time", "scan",
        "llen", "lpop", "lpush", "rpush", "lrange", "lindex", "lrem",
        "hget", "hmget", "hset", "hdel", "hexists", "hgetall", "hkeys", "hincrby",
        "sadd", "srem", "sismember", "smembers",
        "zadd", "zrem", "zcard", "zrange", "zrangebyscore", "zremrangebyscore",
        "publish", "subscribe", "unsubscribe",
    ]

    /// RedisJobStore: from Swift `HMGET` (`state`); inside the scripts the rest. No pub/sub.
    public static let jobStoreCommands = scripts + [
        "get", "set", "exists", "del", "incr", "pexpire", "time",
        "hget", "hmget", "hset", "hincrby",
        "sadd", "srem", "scard", "smembers",
        "zadd", "zrem", "zpopmin", "zrange", "zrangebyscore",
    ]

    /// A `CallbackQueue` with `lockPrefix` `prefix` and `channel`: its locks `prefix…`, their
    /// companions `{prefix…}:fence`, `:outcome`, `:permits`, and the one channel.
    public static func lockKit(prefix: String = "dlock:", channel: String) -> String {
        rule(commands: lockKitCommands, keys: ["\(glob(prefix))*", "{\(glob(prefix))*"], channels: [glob(channel)])
    }

    /// A `WorkQueue` with `prefix`: the registry `{prefix}:…`, each queue's `{prefix:queue}:…`,
    /// and the channels `prefix:queue:events` and `prefix:queue:done`.
    public static func workQueue(prefix: String = "worqr") -> String {
        rule(commands: workQueueCommands, keys: ["{\(glob(prefix))}:*", "{\(glob(prefix)):*"],
             channels: ["\(glob(prefix)):*:events", "\(glob(prefix)):*:done"])
    }

    /// A `RedisJobStore` with `prefix`: `{prefix}:…`, or `{prefix:shard}:…` with shards.
    public static func jobStore(prefix: String = "jobstore") -> String {
        rule(commands: jobStoreCommands, keys: ["{\(glob(prefix))}:*", "{\(glob(prefix)):*"], channels: [])
    }

    /// The line the README shows for `rule`.
    public static func setUserLine(_ rule: String) -> String {
        "ACL SETUSER <user> on ><password> " + rule
    }

    static func rule(commands: [String], keys: [String], channels: [String]) -> String {
        (["resetchannels"] + channels.map { "&" + $0 } + ["resetkeys"] + keys.map { "~" + $0 }
            + ["-@all"] + commands.map { "+" + $0 }).joined(separator: " ")
    }

    /// `text` with the glob characters of ACL patterns escaped.
    public static func glob(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }
}

/// A Redis user made for one test, with its password.
public struct ACLUser: Sendable {
    public let name: String
    public let password: String
    public let server: RedisServer

    /// Creates (or replaces) the user `name` with exactly `rule`, plus `selectors` (Redis 7
    /// selectors such as `(~app:* +rpush)`, for an application's own keys next to a
    /// module's: a command is allowed when the rule or a selector allows it, so keys
    /// outside the selectors' patterns get nothing from them).
    public static func create(on server: RedisServer, _ name: String, rule: String, selectors: [String] = []) async throws -> ACLUser {
        let password = UUID().uuidString
        let admin = try await server.connect()
        defer { Task { await admin.close() } }
        var command = RedisCommand("ACL", "SETUSER", name, "reset", "on", ">" + password)
        for word in rule.split(separator: " ") { command.append(String(word)) }
        for selector in selectors { command.append(selector) }
        try await admin.send(command)
        return ACLUser(name: name, password: password, server: server)
    }

    /// A configuration that authenticates as this user.
    public var configuration: RedisConfiguration {
        var configuration = server.configuration
        configuration.username = name
        configuration.password = password
        return configuration
    }

    /// A connection as this user.
    public func connect(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisConnection {
        var configuration = self.configuration
        configure(&configuration)
        return try await RedisConnection.connect(configuration)
    }

    /// A subscriber as this user.
    public func subscriber(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisSubscriber {
        var configuration = self.configuration
        configure(&configuration)
        return try await RedisSubscriber.connect(configuration)
    }

    /// What the server refused this user so far (`ACL LOG`): one line per entry, with the
    /// reason (`command`, `key`, `channel`, `auth`), the object and the context (`toplevel`,
    /// `lua`, `multi`). A denial a module swallows or retries shows here too.
    public func refusals() async throws -> [String] {
        let admin = try await server.connect()
        defer { Task { await admin.close() } }
        guard case .array(let entries) = try await admin.send("ACL", "LOG") else { return [] }
        var lines: [String] = []
        for entry in entries {
            guard case .array(let fields) = entry else { continue }
            var values: [String: String] = [:]
            for index in stride(from: 0, to: fields.count - 1, by: 2) {
                if let key = try? fields[index].decode(String.self), let value = try? fields[index + 1].decode(String.self) {
                    values[key] = value
                }
            }
            guard values["username"] == name else { continue }
            lines.append("\(values["reason"] ?? "?") \(values["object"] ?? "?") (\(values["context"] ?? "?"))")
        }
        return lines
    }

    /// The URL helper processes take.
    public var url: String { "redis://\(name):\(password)@127.0.0.1:\(server.port)" }
}

extension Error {
    /// Whether this is the server's `NOPERM` refusal (an ACL denied a command, key or channel).
    public var isNOPERM: Bool { (self as? RedisError)?.serverErrorPrefix == "NOPERM" }

    /// A `SUBSCRIBE` the ACL refused, as `RedisSubscriber` reports it: hiredis drops the
    /// connection on the error reply, so the subscription is never confirmed and
    /// `subscribe` times out (or `NOPERM`, should the subscriber ever pass the reply on).
    public var isRefusedSubscription: Bool { (self as? RedisError)?.code == .timeout || isNOPERM }
}

/// A file of the package, by its path from the package root (`README.md`,
/// `Sources/Hiredis/Documentation.docc/SecurityGuide.md`), for tests that check what the
/// documentation says.
public func packageDocument(_ relativePath: String, _ file: String = #filePath) throws -> String {
    var url = URL(fileURLWithPath: file)
    while url.pathComponents.count > 1 {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path),
           FileManager.default.fileExists(atPath: url.appendingPathComponent("README.md").path) {
            return try String(contentsOf: url.appendingPathComponent(relativePath), encoding: .utf8)
        }
    }
    throw TestSupportError("the package root was not found above \(file)")
}

/// The documents that must show the ACL rules: the README (its `## Security` section)
/// and the security article, by name.
public func documentsShowingACLRules() throws -> [(name: String, text: String)] {
    try ["README.md", "Sources/Hiredis/Documentation.docc/SecurityGuide.md"].map { ($0, try packageDocument($0)) }
}
