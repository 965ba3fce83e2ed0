import CHiredis

/// How a connection protects itself with TLS (``RedisConfiguration/tls``, a `rediss://` URL).
///
/// The server's certificate is verified by default: its chain against the certificate
/// authorities given (or the system's), its name against ``serverName`` (or the endpoint's
/// host). Turning that off takes the explicitly named ``insecureNoVerification(certificateFile:privateKeyFile:privateKeyPassphrase:serverName:)``.
///
/// ```swift
/// var configuration = try RedisConfiguration(url: "rediss://:s3cret@redis.internal:6380")
/// configuration.tls?.caCertificateFile = "/etc/ssl/redis-ca.pem"
/// ```
///
/// TLS needs hiredis ≥ 1.0 built with `hiredis_ssl`. Where the build has none (Debian 12's
/// and Ubuntu 22.04's hiredis 0.14), a configuration with `tls` fails at connect with
/// ``RedisError/Code/tlsUnavailable`` before any socket is opened: nothing is ever sent in
/// plaintext instead.
///
/// The key passphrase never appears in a description, an error or a log.
public struct RedisTLSConfiguration: Sendable, Hashable {
    /// A PEM file of the certificate authorities to trust. With neither this nor
    /// ``caCertificateDirectory``, the system's default trust store is used.
    public var caCertificateFile: String?
    /// A directory of hashed PEM certificates of the authorities to trust (as made by
    /// `openssl rehash`).
    public var caCertificateDirectory: String?
    /// The client certificate (PEM) for servers that ask for one (`tls-auth-clients`);
    /// needs ``privateKeyFile``.
    public var certificateFile: String?
    /// The client certificate's private key (PEM); needs ``certificateFile``.
    public var privateKeyFile: String?
    /// The passphrase of an encrypted ``privateKeyFile``; never shown.
    public var privateKeyPassphrase: String?
    /// The name sent for SNI and checked against the server's certificate; `nil` for the
    /// endpoint's host.
    public var serverName: String?
    /// Whether the server's certificate is verified: `true`, unless made with
    /// ``insecureNoVerification(certificateFile:privateKeyFile:privateKeyPassphrase:serverName:)``.
    public private(set) var verifyPeer: Bool = true

    /// A verified TLS configuration (the default trust store unless CA files are given).
    public init(
        caCertificateFile: String? = nil, caCertificateDirectory: String? = nil,
        certificateFile: String? = nil, privateKeyFile: String? = nil, privateKeyPassphrase: String? = nil,
        serverName: String? = nil
    ) {
        self.caCertificateFile = caCertificateFile
        self.caCertificateDirectory = caCertificateDirectory
        self.certificateFile = certificateFile
        self.privateKeyFile = privateKeyFile
        self.privateKeyPassphrase = privateKeyPassphrase
        self.serverName = serverName
    }

    /// Encrypts without checking who answers: any certificate is accepted, so a machine in
    /// the middle can read and change everything. For tests against self-signed servers
    /// only.
    public static func insecureNoVerification(
        certificateFile: String? = nil, privateKeyFile: String? = nil, privateKeyPassphrase: String? = nil,
        serverName: String? = nil
    ) -> RedisTLSConfiguration {
        var configuration = RedisTLSConfiguration(
            certificateFile: certificateFile, privateKeyFile: privateKeyFile,
            privateKeyPassphrase: privateKeyPassphrase, serverName: serverName)
        configuration.verifyPeer = false
        return configuration
    }

    /// Whether this build can make TLS connections: it links hiredis ≥ 1.0, and that
    /// hiredis's TLS library (`libhiredis_ssl`, with OpenSSL) was found. Where it is
    /// `false`, connecting with a TLS configuration throws ``unavailableReason``.
    public static var isAvailable: Bool { TLSSupport.isAvailable }

    /// Why TLS connections cannot be made here (``RedisError/Code/tlsUnavailable``, saying
    /// what to install), or `nil` when they can.
    public static var unavailableReason: RedisError? {
        TLSSupport.isAvailable ? nil : TLSSupport.unavailable
    }

    /// Checks the values before anything is attempted.
    func validate() throws {
        for (value, name) in [(caCertificateFile, "caCertificateFile"), (caCertificateDirectory, "caCertificateDirectory"),
                              (certificateFile, "certificateFile"), (privateKeyFile, "privateKeyFile"),
                              (serverName, "serverName")] where value?.isEmpty == true {
            throw RedisError.invalidArgument("the TLS \(name) is empty (nil for none)")
        }
        if (certificateFile == nil) != (privateKeyFile == nil) {
            throw RedisError.invalidArgument("a TLS client certificate needs its private key, and a private key its certificate")
        }
        if privateKeyPassphrase != nil && privateKeyFile == nil {
            throw RedisError.invalidArgument("a TLS private key passphrase needs a privateKeyFile")
        }
    }
}

extension RedisTLSConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The files and names, the passphrase as `(redacted)` when set.
    public var description: String {
        var parts: [String] = [verifyPeer ? "verified" : "NOT verified (insecureNoVerification)"]
        if let caCertificateFile { parts.append("caCertificateFile: \(caCertificateFile)") }
        if let caCertificateDirectory { parts.append("caCertificateDirectory: \(caCertificateDirectory)") }
        if let certificateFile { parts.append("certificateFile: \(certificateFile)") }
        if let privateKeyFile { parts.append("privateKeyFile: \(privateKeyFile)") }
        if privateKeyPassphrase != nil { parts.append("privateKeyPassphrase: \(redactedMark)") }
        if let serverName { parts.append("serverName: \(serverName)") }
        return "RedisTLSConfiguration(\(parts.joined(separator: ", ")))"
    }

    public var debugDescription: String { description }

    /// What `dump` and test failures show: the passphrase redacted.
    public var customMirror: Mirror {
        Mirror(self, children: [
            "caCertificateFile": caCertificateFile as Any, "caCertificateDirectory": caCertificateDirectory as Any,
            "certificateFile": certificateFile as Any, "privateKeyFile": privateKeyFile as Any,
            "privateKeyPassphrase": redactedSecret(privateKeyPassphrase) as Any, "serverName": serverName as Any,
            "verifyPeer": verifyPeer,
        ], displayStyle: .struct)
    }
}

/// What descriptions show instead of a secret.
let redactedMark = "(redacted)"

/// `(redacted)` for a secret that is set, `nil` otherwise.
func redactedSecret(_ secret: String?) -> String? {
    secret.map { _ in redactedMark }
}

/// Whether this build can speak TLS, and what to do about it when not.
enum TLSSupport {
    /// The hiredis version this build was compiled against.
    static let hiredisVersion = "\(HIREDIS_MAJOR).\(HIREDIS_MINOR).\(HIREDIS_PATCH)"
    /// Whether the hiredis built against can have `hiredis_ssl` at all (1.0 and later).
    static let hiredisCanDoTLS: Bool = Int(HIREDIS_MAJOR) >= 1

    /// Whether a TLS connection can be made: hiredis ≥ 1.0 and its `libhiredis_ssl` found
    /// (see ``TLSLibrary``).
    static var isAvailable: Bool {
        if case .success = TLSLibrary.shared { return true }
        return false
    }

    /// The error a configuration with TLS gets at connect when ``isAvailable`` is `false`.
    static var unavailable: RedisError {
        switch TLSLibrary.shared {
        case .success: return RedisError(.tlsUnavailable, "TLS is available")  // not reached
        case .failure(let error): return error
        }
    }

    /// Why a build against hiredis 0.x has no TLS.
    static var noTLSInHiredis: RedisError {
        RedisError(.tlsUnavailable, """
            TLS is not available: this build links hiredis \(hiredisVersion), which has no TLS support. \
            Install hiredis >= 1.0 with hiredis_ssl (libhiredis-dev on Debian 13 or Ubuntu 24.04, \
            `brew install hiredis` on macOS) and rebuild. Nothing was sent.
            """)
    }
}
