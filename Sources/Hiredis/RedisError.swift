/// An error from a Redis connection, a subscriber, or a reply conversion.
///
/// Every failure in `Hiredis` is reported as a `RedisError` (task cancellation excepted:
/// a cancelled command throws `CancellationError`). Switch on ``code`` to react:
///
/// ```swift
/// do {
///     try await connection.send("GET", key)
/// } catch let error as RedisError where error.code == .timeout {
///     // the server did not answer in time
/// }
/// ```
///
/// Server error replies (`-ERR …`, `-WRONGTYPE …`, `-NOSCRIPT …`) have the code
/// ``Code/server`` and keep the server's message; ``serverErrorPrefix`` gives its first word.
/// `-NOPERM …` (an ACL refusal) has its own code, ``Code/noPermission``.
///
/// No error's message or description ever contains a password or a key passphrase.
public struct RedisError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure happened. New codes may be added in later versions, so a
    /// `switch` over codes should keep a default case.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Hashable, Sendable {
            case connectionFailed, connectionClosed, timeout, server, authenticationFailed
            case invalidArgument, wrongReplyType, protocolError
            case noSentinelReachable, unknownMaster, noMasterAvailable
            case crossSlot, clusterUnreachable, slotNotServed, tooManyRedirections
            case noPermission, tlsUnavailable, tlsHandshakeFailed, tlsVerificationFailed
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The connection could not be established (refused, unresolvable host, …).
        public static let connectionFailed = Code(.connectionFailed)
        /// The connection was closed, or lost while the command was in flight. A command
        /// that fails this way may or may not have run on the server.
        public static let connectionClosed = Code(.connectionClosed)
        /// A connect, a command, or a wait for a reconnect took longer than allowed.
        public static let timeout = Code(.timeout)
        /// The server answered with an error reply.
        public static let server = Code(.server)
        /// The server refused the configured username or password.
        public static let authenticationFailed = Code(.authenticationFailed)
        /// The caller passed something that cannot be sent; nothing was sent.
        public static let invalidArgument = Code(.invalidArgument)
        /// A reply did not have the type the caller asked to convert it to.
        public static let wrongReplyType = Code(.wrongReplyType)
        /// The server sent something hiredis could not parse.
        public static let protocolError = Code(.protocolError)
        /// Sentinel: none of the configured sentinels could be reached.
        public static let noSentinelReachable = Code(.noSentinelReachable)
        /// Sentinel: the sentinels answered, but none knows the master name.
        public static let unknownMaster = Code(.unknownMaster)
        /// Sentinel: the master the sentinels named refused the connection, or is not a
        /// master (`ROLE`), for instance during a failover.
        public static let noMasterAvailable = Code(.noMasterAvailable)
        /// Cluster: the keys of one command, script or transaction are in different slots
        /// (the message names them); nothing was sent.
        public static let crossSlot = Code(.crossSlot)
        /// Cluster: none of the seed or known nodes could be reached to learn the topology.
        public static let clusterUnreachable = Code(.clusterUnreachable)
        /// Cluster: no primary serves the key's slot (the cluster is down or resharding
        /// failed), and it did not recover before the command's timeout.
        public static let slotNotServed = Code(.slotNotServed)
        /// Cluster: a command was redirected (`MOVED`/`ASK`) more often than allowed,
        /// a sign of a topology in flux or a misconfigured cluster.
        public static let tooManyRedirections = Code(.tooManyRedirections)

        /// The server refused a command because the connection's ACL user may not run it
        /// or may not touch one of its keys or channels: a `-NOPERM …` error reply (from a
        /// script on Redis 7.0, `-ERR The user executing the script can't …`). The message
        /// is the server's text, then the command and its keys; ``RedisError/serverErrorPrefix``
        /// is `"NOPERM"`. Not transient: retrying does not help until the user's rules change.
        public static let noPermission = Code(.noPermission)
        /// The configuration asks for TLS (``RedisConfiguration/tls``, a `rediss://` URL),
        /// which this build cannot do. Reported at connect, before any socket is opened:
        /// nothing is ever sent in plaintext instead. The message says what to install.
        public static let tlsUnavailable = Code(.tlsUnavailable)
        /// The TLS handshake failed or was refused: the server does not speak TLS on that
        /// port (a plaintext port), asked for a client certificate that was not given, or
        /// ended the handshake with an alert (the message gives OpenSSL's reason).
        public static let tlsHandshakeFailed = Code(.tlsHandshakeFailed)
        /// The server's TLS certificate was refused: not signed by a trusted authority, expired,
        /// or not issued for the server name checked (``RedisTLSConfiguration/serverName``,
        /// else the host connected to). The message gives OpenSSL's reason.
        public static let tlsVerificationFailed = Code(.tlsVerificationFailed)

        public var description: String { base.rawValue }
    }

    /// What kind of failure this is.
    public var code: Code
    /// A human-readable explanation. For ``Code/server`` it is the server's error text.
    public var message: String

    /// `true` when the command certainly never reached the server: the connection was
    /// closed, closing, or not (re)established in time before the command was written.
    /// Retrying such a command is safe, even a write; one that failed otherwise may have run.
    public internal(set) var wasNeverSent = false

    /// An error of kind `code`, explained by `message` (which must not contain a secret).
    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// This error, marked as one of a command that was never sent.
    func neverSent() -> RedisError {
        var error = self
        error.wasNeverSent = true
        return error
    }

    /// For server errors, the first word of the error reply (`ERR`, `WRONGTYPE`,
    /// `NOSCRIPT`, `READONLY`, `BUSY`, …; `NOPERM` for ``Code/noPermission``); `nil` for
    /// other codes.
    public var serverErrorPrefix: Substring? {
        if code == .noPermission { return "NOPERM" }   // also Redis 7.0's "ERR The user executing the script can't …"
        guard code == .server else { return nil }
        return message.split(separator: " ", maxSplits: 1).first
    }

    /// `true` when the same command may well succeed if tried again in a moment: the
    /// connection was lost or could not be made, no reply came in time, no master could be
    /// found, or the server is loading its data or read-only (a failover in progress).
    /// Whether retrying is *safe* depends on the command: a timed-out write may have run.
    public var isTransient: Bool {
        [.connectionClosed, .connectionFailed, .timeout, .noMasterAvailable, .noSentinelReachable,
         .clusterUnreachable, .slotNotServed, .tooManyRedirections].contains(code)
            || serverErrorPrefix == "LOADING" || serverErrorPrefix == "CLUSTERDOWN" || serverErrorPrefix == "TRYAGAIN"
            || (code == .server && message.contains("READONLY"))
    }

    public var description: String { "RedisError.\(code): \(message)" }
}

extension RedisError {
    /// Bad input, rejected before anything was sent.
    public static func invalidArgument(_ message: String) -> RedisError { RedisError(.invalidArgument, message) }
    static func closed(_ message: String = "the connection is closed") -> RedisError {
        RedisError(.connectionClosed, message)
    }
}

extension RedisError {
    /// `self`, made ``Code/noPermission`` when it is a `-NOPERM` reply to `command`, with the
    /// command and its keys named after the server's text (computed only here, on the
    /// error path).
    func naming(_ command: RedisCommand) -> RedisError {
        guard code == .server, Self.isPermissionDenial(message) else { return self }
        var error = RedisError.noPermission(message, command: command, context: nil)
        error.wasNeverSent = wasNeverSent
        return error
    }

    /// Whether a server error reply is an ACL refusal: `-NOPERM …`, or, from a script on
    /// Redis before 7.2, `-ERR The user executing the script can't …` (possibly inside
    /// `Error running script …`).
    static func isPermissionDenial(_ message: String) -> Bool {
        message.hasPrefix("NOPERM") || (message.hasPrefix("ERR") && message.contains("The user executing the script can't"))
    }

    /// A `-NOPERM` reply to `command`: the server's text first (so that
    /// ``serverErrorPrefix`` is `NOPERM`), then the command's name and its keys.
    static func noPermission(_ serverMessage: String, command: RedisCommand, context: String?) -> RedisError {
        var name = ""
        command.forEachWord { _, bytes in
            RedisCommand.appendLoggable(bytes, to: &name)
            return false
        }
        let keys = CommandKeys.builtInTable.describeKeys(of: command) ?? "keys not known to the client"
        return RedisError(.noPermission, "\(serverMessage) (command \(name), \(keys)\(context.map { ", \($0)" } ?? ""))")
    }
}
