import CoreMetrics
import Logging

/// Where and how to connect.
///
/// The password never appears in a description, an error or a log (at any level): a
/// description shows it as `(redacted)`.
///
/// ```swift
/// var configuration = RedisConfiguration(host: "127.0.0.1", port: 6379)
/// configuration.password = "s3cret"
/// configuration.database = 2
/// let connection = try await RedisConnection.connect(configuration)
/// ```
public struct RedisConfiguration: Sendable {
    /// The server's address.
    public enum Endpoint: Sendable, Hashable, CustomStringConvertible {
        /// A TCP host name or IP address (IPv4 or IPv6) and port.
        case tcp(host: String, port: Int)
        /// A Unix domain socket path.
        case unixSocket(path: String)

        public var description: String {
            switch self {
            case .tcp(let host, let port): return host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
            case .unixSocket(let path): return "unix:\(path)"
            }
        }
    }

    /// The server's address. With ``sentinel`` set, the master's address comes from the
    /// sentinels instead, at every (re)connect.
    public var endpoint: Endpoint
    /// Other addresses of an equivalent server, tried in turn after ``endpoint`` when a
    /// (re)connect fails: for a subscriber on a cluster, where any node delivers every
    /// message (``RedisCluster/subscriber()``). Empty by default.
    public var fallbackEndpoints: [Endpoint] = []
    /// Find the master through Redis Sentinel (see ``sentinel(sentinels:masterName:username:password:sentinelUsername:sentinelPassword:)``).
    public var sentinel: SentinelConfiguration?
    /// The ACL user for `AUTH username password`; `nil` for the one-argument `AUTH password`.
    public var username: String?
    /// The password; `nil` skips `AUTH`. Never shown: descriptions, errors and logs say
    /// `(redacted)`.
    public var password: String?
    /// Connect over TLS (see ``RedisTLSConfiguration``); `nil`, the default, for plain TCP.
    /// A `rediss://` URL sets the default, verified configuration. With a build that
    /// cannot do TLS, connecting throws ``RedisError/Code/tlsUnavailable`` before any
    /// socket is opened.
    public var tls: RedisTLSConfiguration?
    /// The logical database (`SELECT`), re-selected after every reconnect.
    public var database: Int = 0
    /// A name for `CLIENT SETNAME`, shown by `CLIENT LIST`; no spaces allowed.
    public var clientName: String?
    /// How long a connection attempt (TCP connect plus the AUTH/SELECT/SETNAME handshake)
    /// may take. A command issued while the connection is re-established waits at most
    /// this long for it.
    public var connectTimeout: Duration = .seconds(5)
    /// How long a command may wait for its reply; `nil` waits for ever. A command that
    /// times out throws ``RedisError/Code/timeout``; its late reply is discarded.
    public var commandTimeout: Duration? = .seconds(10)
    /// How long a caller that is alone on the connection (nothing else in flight) waits
    /// for its reply on its own thread, in `ppoll(2)`, before it suspends.
    ///
    /// A suspended caller costs two thread wake-ups per round trip (Dispatch's event
    /// thread hands the socket to the connection's queue, which resumes the task on the
    /// cooperative pool); waiting on its own thread, it is woken by the kernel directly,
    /// as a blocking client is. Worth it when replies come back in microseconds (loopback,
    /// same rack). The thread is blocked meanwhile, so keep it short: at most
    /// ``maximumInlineReplyWait``. After a wait that ran out (a far server, a blocking
    /// command), the next 8 commands suspend at once; twice as many after each further
    /// miss, up to 1,024, until a wait succeeds again. `.zero` turns it off. (On Darwin,
    /// which has no `ppoll`, a wait is rounded up to whole milliseconds.)
    public var inlineReplyWait: Duration = .microseconds(200)
    /// The largest ``inlineReplyWait`` accepted: 10 ms.
    public static let maximumInlineReplyWait: Duration = .milliseconds(10)
    /// What to do after an established connection is lost.
    public var reconnect: ReconnectPolicy = .exponentialBackoff()
    /// Where the connection logs (connects, reconnects, failures at `info`/`warning`,
    /// each command at `trace`). Silent unless the caller passes a logger.
    public var logger: Logger = Logger(label: "hiredis", factory: { _ in SwiftLogNoOpLogHandler() })
    /// Where the connection's metrics go (reconnects, timeouts, commands in flight; see the
    /// README's metrics table); `nil`, the default, is the app's bootstrapped `MetricsSystem`.
    public var metricsFactory: (any MetricsFactory)?
    /// Dimensions added to each of the connection's metrics (e.g. `[("redis", "cache")]`).
    public var metricsDimensions: [(String, String)] = []

    /// A TCP endpoint.
    public init(host: String = "127.0.0.1", port: Int = 6379) {
        endpoint = .tcp(host: host, port: port)
    }

    /// A Unix domain socket endpoint.
    public init(unixSocketPath path: String) {
        endpoint = .unixSocket(path: path)
    }

    /// A master found through Redis Sentinel. Before every connect and reconnect the
    /// connection asks the sentinels in turn (`SENTINEL get-master-addr-by-name`),
    /// connects to the address given, and checks with `ROLE` that it is the master. A
    /// lost connection, or a `-READONLY` reply (the master was demoted), makes it ask
    /// again. `username`/`password` are the master's; `sentinelUsername`/
    /// `sentinelPassword` the sentinels' own.
    public static func sentinel(
        sentinels: [(host: String, port: Int)], masterName: String,
        username: String? = nil, password: String? = nil,
        sentinelUsername: String? = nil, sentinelPassword: String? = nil
    ) -> RedisConfiguration {
        let first = sentinels.first ?? (host: "", port: 0)
        var configuration = RedisConfiguration(host: first.host, port: first.port)
        configuration.username = username
        configuration.password = password
        configuration.sentinel = SentinelConfiguration(
            sentinels: sentinels.map { .tcp(host: $0.host, port: $0.port) }, masterName: masterName,
            username: sentinelUsername, password: sentinelPassword)
        return configuration
    }

    /// Checks the values before anything is sent, then that the transport asked for is
    /// available: ``RedisError/Code/invalidArgument``, then ``RedisError/Code/tlsUnavailable``.
    func validate() throws {
        switch endpoint {
        case .tcp(let host, let port):
            guard !host.isEmpty else { throw RedisError.invalidArgument("the host is empty") }
            guard (1...65535).contains(port) else { throw RedisError.invalidArgument("port \(port) is not in 1...65535") }
        case .unixSocket(let path):
            guard !path.isEmpty else { throw RedisError.invalidArgument("the unix socket path is empty") }
        }
        guard database >= 0 else { throw RedisError.invalidArgument("database \(database) is negative") }
        if let clientName, clientName.isEmpty || clientName.contains(where: { $0 == " " || $0 == "\n" || $0 == "\r" }) {
            throw RedisError.invalidArgument("the client name \"\(clientName)\" must be non-empty and have no spaces")
        }
        guard connectTimeout > .zero else { throw RedisError.invalidArgument("connectTimeout must be positive") }
        if let commandTimeout, commandTimeout <= .zero {
            throw RedisError.invalidArgument("commandTimeout must be positive (or nil for none)")
        }
        guard inlineReplyWait >= .zero, inlineReplyWait <= Self.maximumInlineReplyWait else {
            throw RedisError.invalidArgument("inlineReplyWait must be within 0...\(Self.maximumInlineReplyWait)")
        }
        if username != nil && password == nil {
            throw RedisError.invalidArgument("a username needs a password")
        }
        try reconnect.validate()
        try tls?.validate()
        if let sentinel { try sentinel.validate() }
        if tls != nil || sentinel?.tls != nil, !TLSSupport.isAvailable { throw TLSSupport.unavailable }
    }
}

/// Where the sentinels are and which master to ask them for.
public struct SentinelConfiguration: Sendable, Hashable {
    /// The sentinels, asked in this order.
    public var sentinels: [RedisConfiguration.Endpoint]
    /// The name the sentinels monitor the master under (`sentinel monitor <name> …`).
    public var masterName: String
    /// The sentinels' ACL user, if they require one.
    public var username: String?
    /// The sentinels' password (`requirepass` in sentinel.conf), if any. Never shown.
    public var password: String?
    /// Reach the sentinels over TLS; `nil` for plain TCP. (The master's TLS is
    /// ``RedisConfiguration/tls``.) Without TLS support in the build, connecting throws
    /// ``RedisError/Code/tlsUnavailable`` before any socket is opened.
    public var tls: RedisTLSConfiguration?

    /// Sentinels to ask for the master named `masterName` (its name in `sentinel monitor`),
    /// with the sentinels' own credentials and TLS, if any.
    public init(sentinels: [RedisConfiguration.Endpoint], masterName: String, username: String? = nil, password: String? = nil,
                tls: RedisTLSConfiguration? = nil) {
        self.sentinels = sentinels
        self.masterName = masterName
        self.username = username
        self.password = password
        self.tls = tls
    }

    func validate() throws {
        guard !sentinels.isEmpty else { throw RedisError.invalidArgument("a sentinel configuration needs at least one sentinel") }
        guard !masterName.isEmpty else { throw RedisError.invalidArgument("the sentinel master name is empty") }
        for case .tcp(let host, let port) in sentinels where host.isEmpty || !(1...65535).contains(port) {
            throw RedisError.invalidArgument("sentinel \(host):\(port) is not a valid address")
        }
        if username != nil && password == nil { throw RedisError.invalidArgument("a sentinel username needs a password") }
        try tls?.validate()
    }
}

/// When and how often a lost connection is re-established.
public struct ReconnectPolicy: Sendable, Hashable {
    /// Whether to reconnect at all.
    public var enabled: Bool
    /// The delay before the first attempt.
    public var initialDelay: Duration
    /// The upper bound of the delay; each failed attempt doubles it up to this.
    public var maximumDelay: Duration
    /// The fraction (0...1) of each delay that is randomised, so that many clients that
    /// lost the same server do not reconnect in lock-step.
    public var jitter: Double
    /// Give up after this many failed attempts in a row (`nil`: never give up). After
    /// giving up the connection is closed and every command fails with
    /// ``RedisError/Code/connectionClosed``.
    public var maximumAttempts: Int?

    /// Exponential backoff with jitter: `initialDelay`, doubled per failed attempt up to
    /// `maximumDelay`, each randomised by ±`jitter`/2.
    public static func exponentialBackoff(
        initialDelay: Duration = .milliseconds(50),
        maximumDelay: Duration = .seconds(5),
        jitter: Double = 0.3,
        maximumAttempts: Int? = nil
    ) -> ReconnectPolicy {
        ReconnectPolicy(enabled: true, initialDelay: initialDelay, maximumDelay: maximumDelay,
                        jitter: jitter, maximumAttempts: maximumAttempts)
    }

    /// Never reconnect: a lost connection is closed for good.
    public static let never = ReconnectPolicy(enabled: false, initialDelay: .zero, maximumDelay: .zero,
                                              jitter: 0, maximumAttempts: 0)

    /// The delay before attempt number `attempt` (1-based), given a random number in 0..<1.
    public func delay(beforeAttempt attempt: Int, random: Double) -> Duration {
        let exponent = min(max(attempt - 1, 0), 30)
        let base = min(initialDelay * (1 << exponent), maximumDelay)
        let factor = 1 + jitter * (random - 0.5)
        return base * factor
    }

    func validate() throws {
        guard enabled else { return }
        guard initialDelay >= .zero, maximumDelay >= initialDelay else {
            throw RedisError.invalidArgument("reconnect delays must satisfy 0 <= initialDelay <= maximumDelay")
        }
        guard (0...1).contains(jitter) else { throw RedisError.invalidArgument("reconnect jitter must be in 0...1") }
        if let maximumAttempts, maximumAttempts < 1 {
            throw RedisError.invalidArgument("reconnect maximumAttempts must be at least 1 (or nil)")
        }
    }
}
