extension RedisConfiguration {
    /// Parses a Redis URL:
    ///
    /// - `redis://[[username]:password@]host[:port][/database]` — `redis://secret@host` is a
    ///   password, as in `AUTH secret`; the username and password are percent-decoded
    ///   (`%40` is `@`); an IPv6 host goes in brackets (`redis://[::1]:6380/2`); the port
    ///   defaults to 6379, the database to 0, an empty host to 127.0.0.1.
    /// - `rediss://…` — the same over TLS: sets ``tls`` to the default, verified
    ///   ``RedisTLSConfiguration``.
    /// - `unix:///path/to/socket[?db=N]` — a Unix domain socket (the path is percent-decoded).
    ///
    /// - Throws: ``RedisError/Code/invalidArgument`` naming the malformed part (the scheme,
    ///   the username, the password, the host, the port, the database, the socket path, the
    ///   query). The message quotes the URL with its password as `(redacted)`, and never
    ///   quotes a username or password.
    public init(url: String) throws {
        let shown = Self.redactedURL(url)
        func bad(_ why: String) -> RedisError { .invalidArgument("invalid Redis URL \"\(shown)\": \(why)") }
        guard let separator = url.range(of: "://") else {
            throw bad("the scheme is missing (redis://, rediss:// or unix://)")
        }
        let scheme = url[..<separator.lowerBound]
        let rest = url[separator.upperBound...]
        switch scheme.lowercased() {
        case "redis": self = try Self.parseTCP(rest, bad)
        case "rediss":
            self = try Self.parseTCP(rest, bad)
            tls = RedisTLSConfiguration()
        case "unix": self = try Self.parseUnix(rest, bad)
        default:
            // Quoted only when it looks like a scheme: text before "://" could be anything.
            let isScheme = !scheme.isEmpty && scheme.utf8.allSatisfy {
                (0x61...0x7A).contains($0 | 0x20) || (0x30...0x39).contains($0) || $0 == 0x2B || $0 == 0x2D || $0 == 0x2E
            }
            throw bad(isScheme ? "the scheme \"\(scheme)\" is not redis, rediss or unix"
                               : "the scheme is not redis, rediss or unix")
        }
    }

    private static func parseTCP(_ url: Substring, _ bad: (String) -> RedisError) throws -> RedisConfiguration {
        var rest = url
        var user: String?
        var pass: String?
        // The last "@": a password may hold an unencoded "@" (the host never does).
        if let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            rest = rest[rest.index(after: at)...]
            let passwordText: Substring
            if let colon = credentials.firstIndex(of: ":") {
                let name = credentials[..<colon]
                if !name.isEmpty {
                    guard let decoded = percentDecoded(name) else { throw bad(invalidEncoding("the username")) }
                    user = decoded
                }
                passwordText = credentials[credentials.index(after: colon)...]
            } else {
                passwordText = credentials
            }
            guard let decoded = percentDecoded(passwordText) else { throw bad(invalidEncoding("the password")) }
            pass = decoded.isEmpty ? nil : decoded
            if user != nil && pass == nil { throw bad("the password: a username needs a password") }
        }
        if rest.contains("?") { throw bad("the query is not supported in a redis:// URL (only unix:// takes ?db=)") }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let path = rest[rest.index(after: slash)...]
            rest = rest[..<slash]
            if !path.isEmpty { database = try parseDatabase(path, bad) }
        }
        var host = String(rest)
        var port = 6379
        if rest.hasPrefix("[") {
            guard let close = rest.firstIndex(of: "]") else {
                throw bad("the host: an IPv6 address misses its closing \"]\"")
            }
            host = String(rest[rest.index(after: rest.startIndex)..<close])
            guard !host.isEmpty else { throw bad("the host: the brackets are empty") }
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") {
                port = try parsePort(after.dropFirst(), bad)
            } else if !after.isEmpty {
                throw bad("the host: only \":port\" may follow \"]\"")
            }
        } else if let colon = rest.firstIndex(of: ":") {
            host = String(rest[..<colon])
            let portText = rest[rest.index(after: colon)...]
            if portText.contains(":") {
                throw bad("the host: an IPv6 address needs brackets, as in redis://[::1]:6379")
            }
            port = try parsePort(portText, bad)
        }
        if host.contains("[") || host.contains("]") { throw bad("the host: stray \"[\" or \"]\"") }
        if host.isEmpty { host = "127.0.0.1" }
        var configuration = RedisConfiguration(host: host, port: port)
        configuration.username = user
        configuration.password = pass
        configuration.database = database
        return configuration
    }

    private static func parseUnix(_ url: Substring, _ bad: (String) -> RedisError) throws -> RedisConfiguration {
        var rest = url
        var database = 0
        if let question = rest.firstIndex(of: "?") {
            let query = rest[rest.index(after: question)...]
            rest = rest[..<question]
            for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
                let name = pair.prefix { $0 != "=" }
                guard name == "db" else {
                    let shown = name.utf8.allSatisfy { (0x61...0x7A).contains($0 | 0x20) || $0 == 0x5F || $0 == 0x2D }
                        ? " \"\(name)\"" : ""
                    throw bad("the query parameter\(shown) is not known (only db=N is)")
                }
                database = try parseDatabase(pair.dropFirst(name.count + 1), bad)
            }
        }
        guard !rest.isEmpty else { throw bad("the socket path is missing, as in unix:///var/run/redis.sock") }
        guard rest.hasPrefix("/") else {
            throw bad("the socket path must be absolute (no host or credentials), as in unix:///var/run/redis.sock")
        }
        guard let path = percentDecoded(rest) else { throw bad(invalidEncoding("the socket path")) }
        var configuration = RedisConfiguration(unixSocketPath: path)
        configuration.database = database
        return configuration
    }

    private static func parsePort(_ text: Substring, _ bad: (String) -> RedisError) throws -> Int {
        guard let port = Int(text), (1...65535).contains(port), text.allSatisfy(\.isASCII) else {
            throw bad(text.isEmpty ? "the port is empty" : "the port must be a number in 1...65535")
        }
        return port
    }

    private static func parseDatabase(_ text: Substring, _ bad: (String) -> RedisError) throws -> Int {
        guard let database = Int(text), database >= 0, text.first != "+" else {
            throw bad("the database must be a non-negative number")
        }
        return database
    }

    private static func invalidEncoding(_ part: String) -> String {
        "\(part) has an invalid percent-encoding (each % must start %XX, and the bytes must be UTF-8)"
    }

    /// `text` with each `%XX` replaced by its byte; `nil` for a `%` not followed by two hex
    /// digits, or bytes that are not UTF-8.
    static func percentDecoded(_ text: Substring) -> String? {
        guard text.contains("%") else { return String(text) }
        func hex(_ byte: UInt8) -> UInt8? {
            switch byte {
            case 0x30...0x39: return byte - 0x30
            case 0x41...0x46: return byte - 0x41 + 10
            case 0x61...0x66: return byte - 0x61 + 10
            default: return nil
            }
        }
        let utf8 = Array(text.utf8)
        var bytes: [UInt8] = []
        bytes.reserveCapacity(utf8.count)
        var index = 0
        while index < utf8.count {
            if utf8[index] == 0x25 {  // %
                guard index + 2 < utf8.count, let high = hex(utf8[index + 1]), let low = hex(utf8[index + 2]) else { return nil }
                bytes.append(high << 4 | low)
                index += 3
            } else {
                bytes.append(utf8[index])
                index += 1
            }
        }
        return String(validating: bytes, as: UTF8.self)
    }

    /// `url` as errors may quote it: the password (the whole userinfo when it has no
    /// username) as `(redacted)`, and the value of every query parameter but `db`.
    ///
    /// The userinfo is what ``init(url:)`` reads as such: everything after `://` up to the
    /// last `@` (a `unix:///path` has none).
    static func redactedURL(_ url: String) -> String {
        guard let separator = url.range(of: "://") else { return url.contains("@") ? redactedMark : url }
        var result = String(url[..<separator.upperBound])
        var rest = url[separator.upperBound...]
        let isUnixPath = url[..<separator.lowerBound].lowercased() == "unix" && rest.hasPrefix("/")
        if !isUnixPath, let at = rest.lastIndex(of: "@") {
            let credentials = rest[..<at]
            if let colon = credentials.firstIndex(of: ":") {
                result += credentials[..<colon] + ":" + redactedMark
            } else {
                result += redactedMark
            }
            rest = rest[at...]
        }
        guard let question = rest.firstIndex(of: "?") else { return result + rest }
        result += rest[...question]
        let pairs = rest[rest.index(after: question)...].split(separator: "&", omittingEmptySubsequences: false)
        result += pairs.map { pair in
            guard let equals = pair.firstIndex(of: "="), pair[..<equals] != "db" else { return String(pair) }
            return pair[...equals] + redactedMark
        }.joined(separator: "&")
        return result
    }
}
