import Logging

/// Asks Redis Sentinel where the master is.
enum SentinelDiscovery {
    /// The master's address from the first sentinel that knows it, asking in order.
    ///
    /// - Returns: ``RedisError/Code/noSentinelReachable`` when no sentinel answered,
    ///   ``RedisError/Code/unknownMaster`` when those that answered do not know the name.
    /// The sentinel connections log to `logger` (their `AUTH` redacted, as every command).
    static func masterAddress(
        _ sentinel: SentinelConfiguration, connectTimeout: Duration, logger: Logger
    ) async -> Result<RedisConfiguration.Endpoint, RedisError> {
        var logger = logger
        logger[metadataKey: "redis.role"] = "sentinel"
        var unreachable: [String] = []
        var answered = 0
        for endpoint in sentinel.sentinels {
            var configuration: RedisConfiguration
            switch endpoint {
            case .tcp(let host, let port): configuration = RedisConfiguration(host: host, port: port)
            case .unixSocket(let path): configuration = RedisConfiguration(unixSocketPath: path)
            }
            configuration.username = sentinel.username
            configuration.password = sentinel.password
            configuration.tls = sentinel.tls
            configuration.logger = logger
            configuration.reconnect = .never
            configuration.connectTimeout = connectTimeout
            configuration.commandTimeout = connectTimeout
            do {
                let connection = try await RedisConnection.connect(configuration)
                let reply: RedisReply
                do {
                    reply = try await connection.send("SENTINEL", "get-master-addr-by-name", sentinel.masterName)
                } catch {
                    await connection.close()
                    throw error
                }
                await connection.close()
                answered += 1
                guard case .array = reply else { continue }   // null: this sentinel does not know the name
                let parts = try reply.decode([String].self)
                guard parts.count == 2, let port = Int(parts[1]) else { continue }
                return .success(.tcp(host: parts[0], port: port))
            } catch {
                unreachable.append("\(endpoint) (\(error))")
            }
        }
        if answered == 0 {
            return .failure(RedisError(.noSentinelReachable, "no sentinel reachable: \(unreachable.joined(separator: ", "))"))
        }
        return .failure(RedisError(.unknownMaster, "\(answered) sentinel(s) answered but none knows master \"\(sentinel.masterName)\""))
    }
}
