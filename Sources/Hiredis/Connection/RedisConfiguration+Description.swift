// Descriptions of the configurations that show where they connect and as whom, never a
// secret: a password or key passphrase that is set reads `(redacted)`. `dump` and test
// failures (which read a `Mirror`) get the same treatment.

extension RedisConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The endpoint, user, database, client name, TLS and Sentinel settings; the password
    /// as `(redacted)` when set.
    public var description: String { "RedisConfiguration(\(fields(debug: false).joined(separator: ", ")))" }

    /// ``description`` and the timeouts and reconnect policy.
    public var debugDescription: String { "RedisConfiguration(\(fields(debug: true).joined(separator: ", ")))" }

    private func fields(debug: Bool) -> [String] {
        var fields = [sentinel == nil ? "endpoint: \(endpoint)" : "master via sentinels"]
        if !fallbackEndpoints.isEmpty { fields.append("fallbackEndpoints: \(fallbackEndpoints)") }
        if let username { fields.append("username: \(username)") }
        if password != nil { fields.append("password: \(redactedMark)") }
        fields.append("database: \(database)")
        if let clientName { fields.append("clientName: \(clientName)") }
        if let tls { fields.append("tls: \(tls)") }
        if let sentinel { fields.append("sentinel: \(sentinel)") }
        if debug {
            fields.append("connectTimeout: \(connectTimeout)")
            fields.append("commandTimeout: \(commandTimeout.map { "\($0)" } ?? "none")")
            fields.append("inlineReplyWait: \(inlineReplyWait)")
            fields.append("reconnect: \(reconnect)")
        }
        return fields
    }

    /// What `dump` and test failures show: the password redacted, no logger.
    public var customMirror: Mirror {
        Mirror(self, children: [
            "endpoint": endpoint, "fallbackEndpoints": fallbackEndpoints, "sentinel": sentinel as Any,
            "username": username as Any, "password": redactedSecret(password) as Any, "database": database,
            "clientName": clientName as Any, "tls": tls as Any, "connectTimeout": connectTimeout,
            "commandTimeout": commandTimeout as Any, "inlineReplyWait": inlineReplyWait, "reconnect": reconnect,
        ], displayStyle: .struct)
    }
}

extension SentinelConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The sentinels, master name, user and TLS; the password as `(redacted)` when set.
    public var description: String {
        var fields = ["sentinels: \(sentinels)", "masterName: \(masterName)"]
        if let username { fields.append("username: \(username)") }
        if password != nil { fields.append("password: \(redactedMark)") }
        if let tls { fields.append("tls: \(tls)") }
        return "SentinelConfiguration(\(fields.joined(separator: ", ")))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: [
            "sentinels": sentinels, "masterName": masterName, "username": username as Any,
            "password": redactedSecret(password) as Any, "tls": tls as Any,
        ], displayStyle: .struct)
    }
}

extension RedisClusterConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The seeds, the redirection limit, and the node template (its password redacted).
    public var description: String {
        "RedisClusterConfiguration(seeds: \(seeds), maximumRedirections: \(maximumRedirections), node: \(node.description))"
    }

    public var debugDescription: String {
        "RedisClusterConfiguration(seeds: \(seeds), maximumRedirections: \(maximumRedirections), node: \(node.debugDescription))"
    }

    public var customMirror: Mirror {
        Mirror(self, children: ["seeds": seeds, "node": node, "maximumRedirections": maximumRedirections],
               displayStyle: .struct)
    }
}

extension ReconnectPolicy: CustomStringConvertible {
    public var description: String {
        guard enabled else { return "never" }
        return "exponentialBackoff(\(initialDelay)...\(maximumDelay), jitter: \(jitter), maximumAttempts: "
            + "\(maximumAttempts.map(String.init) ?? "unlimited"))"
    }
}
