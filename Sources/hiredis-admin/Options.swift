import ArgumentParser
import Foundation
import Hiredis
import HiredisOps

/// How to reach Redis: a URL, sentinels, or cluster seeds, with TLS when asked.
///
/// The URL gives the credentials, the database and (`rediss://`) TLS of the server that
/// holds the data: the URL's own server, the master the sentinels name, or every cluster
/// node. With `--sentinel` or `--cluster` its host and port are not used. The sentinels
/// have their own TLS switch, `--sentinel-tls`; the `--tls-*` files apply to both.
struct ConnectionOptions: ParsableArguments {
    @Option(help: """
        The server's URL (redis://[user:password@]host:port[/db], rediss:// for TLS); with --sentinel or --cluster, \
        its credentials, database and scheme count, its host and port do not.
        """)
    var url = "redis://127.0.0.1:6379"

    @Option(name: .customLong("sentinel"), help: "A sentinel, host:port (repeat for several); needs --master-name.")
    var sentinels: [String] = []

    @Option(help: "The master's name, with --sentinel.")
    var masterName: String?

    @Option(name: .customLong("cluster"), help: "A cluster seed node, host:port (repeat for several).")
    var clusterSeeds: [String] = []

    @Option(name: .customLong("tls-ca-file"), help: "A PEM file of the certificate authorities to trust (default: the system's).")
    var tlsCAFile: String?

    @Option(name: .customLong("tls-ca-directory"), help: "A directory of hashed PEM certificates of the authorities to trust (openssl rehash).")
    var tlsCADirectory: String?

    @Option(name: .customLong("tls-cert"), help: "The client certificate (PEM), for servers that ask for one; needs --tls-key.")
    var tlsCertificateFile: String?

    @Option(name: .customLong("tls-key"), help: "The client certificate's private key (PEM); needs --tls-cert.")
    var tlsKeyFile: String?

    @Option(name: .customLong("tls-key-passphrase-file"),
            help: "A file whose first line is the passphrase of an encrypted --tls-key (never printed).")
    var tlsKeyPassphraseFile: String?

    @Option(name: .customLong("tls-server-name"),
            help: "The name sent for SNI and checked against the server's certificate (default: the host connected to).")
    var tlsServerName: String?

    @Flag(name: .customLong("tls-insecure-no-verification"),
          help: "INSECURE: accept any server certificate, so that anyone in the middle can read and change everything. For self-signed test servers only.")
    var tlsInsecureNoVerification = false

    @Flag(name: .customLong("sentinel-tls"),
          help: "Reach the sentinels over TLS, with the --tls-* files and verification (the master's TLS is the URL's rediss://).")
    var sentinelTLS = false

    @Option(name: .customLong("sentinel-tls-server-name"),
            help: "With --sentinel-tls, the name checked against the sentinels' certificates (default: each sentinel's host).")
    var sentinelTLSServerName: String?

    @Option(name: .customLong("sentinel-user"),
            help: "The ACL user for the sentinels (their own, not the URL's); needs --sentinel-password-file.")
    var sentinelUser: String?

    @Option(name: .customLong("sentinel-password-file"),
            help: "A file whose first line is the sentinels' password (sentinel requirepass; never printed).")
    var sentinelPasswordFile: String?

    @Option(help: "Key prefix of LockKit's locks and semaphores.")
    var lockPrefix = "dlock:"

    @Option(help: "Key prefix of the work queue.")
    var queuePrefix = "worqr"

    @Option(help: "Key prefix of the Redis job store.")
    var jobsPrefix = "jobstore"

    @Option(help: "Read the file job store in this directory instead of the Redis one.")
    var dir: String?

    @Option(help: "The fleet's worker timeout in ms (for heartbeat ages).")
    var workerTimeoutMs = 3000

    /// Whether the URL asks for TLS (`rediss://`), as ``RedisConfiguration/init(url:)`` reads it.
    var urlHasTLS: Bool {
        url.range(of: "://").map { url[..<$0.lowerBound].lowercased() == "rediss" } ?? false
    }

    func validate() throws {
        if !sentinels.isEmpty && masterName == nil { throw ValidationError("--sentinel needs --master-name") }
        if masterName != nil && sentinels.isEmpty { throw ValidationError("--master-name needs --sentinel") }
        if !sentinels.isEmpty && !clusterSeeds.isEmpty { throw ValidationError("--sentinel and --cluster exclude each other") }
        for address in sentinels + clusterSeeds { _ = try Self.hostPort(address) }
        guard workerTimeoutMs > 0 else { throw ValidationError("--worker-timeout-ms must be positive") }
        try validateTLS()
    }

    /// TLS options that would do nothing, or contradict each other, are refused: a CA file
    /// given with a `redis://` URL must not leave the connection in plaintext unnoticed.
    private func validateTLS() throws {
        if sentinelTLS && sentinels.isEmpty { throw ValidationError("--sentinel-tls needs --sentinel") }
        if sentinelTLSServerName != nil && !sentinelTLS { throw ValidationError("--sentinel-tls-server-name needs --sentinel-tls") }
        if (sentinelUser != nil || sentinelPasswordFile != nil) && sentinels.isEmpty {
            throw ValidationError("--sentinel-user and --sentinel-password-file need --sentinel")
        }
        if sentinelUser != nil && sentinelPasswordFile == nil { throw ValidationError("--sentinel-user needs --sentinel-password-file") }
        if tlsServerName != nil && !urlHasTLS {
            throw ValidationError("--tls-server-name needs a rediss:// URL (the sentinels' name is --sentinel-tls-server-name)")
        }
        let given = [("--tls-ca-file", tlsCAFile != nil), ("--tls-ca-directory", tlsCADirectory != nil),
                     ("--tls-cert", tlsCertificateFile != nil), ("--tls-key", tlsKeyFile != nil),
                     ("--tls-key-passphrase-file", tlsKeyPassphraseFile != nil),
                     ("--tls-insecure-no-verification", tlsInsecureNoVerification)].filter { $0.1 }.map { $0.0 }
        if let first = given.first, !urlHasTLS && !sentinelTLS {
            throw ValidationError("\(first) needs TLS: a rediss:// URL, or --sentinel-tls")
        }
        if tlsInsecureNoVerification, tlsCAFile != nil || tlsCADirectory != nil {
            throw ValidationError("--tls-insecure-no-verification checks no certificate: it takes no --tls-ca-file or --tls-ca-directory")
        }
        if (tlsCertificateFile == nil) != (tlsKeyFile == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        if tlsKeyPassphraseFile != nil && tlsKeyFile == nil { throw ValidationError("--tls-key-passphrase-file needs --tls-key") }
    }

    static func hostPort(_ text: String) throws -> (host: String, port: Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
              (1...65535).contains(port), colon > text.startIndex else {
            throw ValidationError("\"\(text)\" is not host:port")
        }
        return (String(text[..<colon]), port)
    }

    /// Where ``open()`` connects.
    enum Target {
        /// One server: the URL's, or the master found through sentinels.
        case server(RedisConfiguration)
        /// A Redis Cluster.
        case cluster(RedisClusterConfiguration)
    }

    /// The configuration the options describe, without connecting.
    ///
    /// Everything the URL gives (credentials, database, `rediss://` with the `--tls-*`
    /// settings) is kept for the server that holds the data, whichever way it is found.
    /// - Throws: ``RedisError/Code/invalidArgument`` for a malformed URL; `ValidationError`
    ///   when the passphrase file cannot be read.
    func target() throws -> Target {
        var base = try RedisConfiguration(url: url)
        base.connectTimeout = .seconds(3)
        base.reconnect = .never
        if base.tls != nil { base.tls = try tls(serverName: tlsServerName) }
        if !clusterSeeds.isEmpty {
            let seeds = try clusterSeeds.map { try Self.hostPort($0) }.map { RedisConfiguration.Endpoint.tcp(host: $0.host, port: $0.port) }
            return .cluster(RedisClusterConfiguration(seeds: seeds, node: base))
        }
        guard let masterName else { return .server(base) }
        // The URL's configuration with sentinels added (not `RedisConfiguration.sentinel`,
        // which would start afresh without its TLS and database).
        let addresses = try sentinels.map { try Self.hostPort($0) }
        var configuration = base
        configuration.endpoint = .tcp(host: addresses[0].host, port: addresses[0].port)
        configuration.sentinel = SentinelConfiguration(
            sentinels: addresses.map { .tcp(host: $0.host, port: $0.port) }, masterName: masterName,
            username: sentinelUser, password: try sentinelPasswordFile.map { try Self.readFirstLine($0, of: "--sentinel-password-file") },
            tls: sentinelTLS ? try tls(serverName: sentinelTLSServerName) : nil)
        return .server(configuration)
    }

    /// The `--tls-*` settings, with `serverName` for SNI and verification.
    private func tls(serverName: String?) throws -> RedisTLSConfiguration {
        let passphrase = try tlsKeyPassphraseFile.map { try Self.readFirstLine($0, of: "--tls-key-passphrase-file") }
        if tlsInsecureNoVerification {
            return .insecureNoVerification(certificateFile: tlsCertificateFile, privateKeyFile: tlsKeyFile,
                                           privateKeyPassphrase: passphrase, serverName: serverName)
        }
        return RedisTLSConfiguration(caCertificateFile: tlsCAFile, caCertificateDirectory: tlsCADirectory,
                                     certificateFile: tlsCertificateFile, privateKeyFile: tlsKeyFile,
                                     privateKeyPassphrase: passphrase, serverName: serverName)
    }

    /// The first line of the file at `path` (a secret: `option` names it in an error, which
    /// gives the path, never the content).
    private static func readFirstLine(_ path: String, of option: String) throws -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ValidationError("cannot read \(option) \(path)")
        }
        let text = String(decoding: data, as: UTF8.self)
        return String(text.prefix { $0 != "\n" && $0 != "\r" })
    }

    /// Connects (a client and a subscriber) and builds the source.
    func open() async throws -> OpsSource {
        let client: any RedisClient
        let subscriber: RedisSubscriber
        switch try target() {
        case .cluster(let configuration):
            let cluster = try await RedisCluster.connect(configuration)
            client = cluster
            subscriber = try await cluster.subscriber()
        case .server(let configuration):
            client = try await RedisConnection.connect(configuration)
            subscriber = try await RedisSubscriber.connect(configuration)
        }
        return try OpsSource(client: client, subscriber: subscriber,
                             prefixes: OpsPrefixes(lock: lockPrefix, queue: queuePrefix, jobs: jobsPrefix),
                             workerTimeout: .milliseconds(workerTimeoutMs), jobsDirectory: dir.map { URL(fileURLWithPath: $0) })
    }
}

struct OutputOptions: ParsableArguments {
    @Flag(help: "Print JSON instead of text.")
    var json = false
}

struct ConfirmOptions: ParsableArguments {
    @Flag(help: "Do not ask for confirmation.")
    var yes = false

    /// Asks on stdin; `true` to go on.
    func confirm(_ question: String) -> Bool {
        if yes { return true }
        FileHandle.standardError.write(Data("\(question) [y/N] ".utf8))
        let answer = readLine() ?? ""
        guard ["y", "yes"].contains(answer.lowercased().trimmingCharacters(in: .whitespaces)) else {
            FileHandle.standardError.write(Data("hiredis-admin: aborted, nothing changed\n".utf8))
            return false
        }
        return true
    }
}

/// Runs `body` against the source; any error becomes one line on stderr and exit code 1.
func withSource<T>(_ connection: ConnectionOptions, _ body: (OpsSource) async throws -> T) async throws -> T {
    do {
        let source = try await connection.open()
        let result = try await body(source)
        await source.client.close()
        return result
    } catch let error as ExitCode {
        throw error
    } catch {
        printError(error)
        throw ExitCode.failure
    }
}

func printError(_ error: any Error) {
    let text: String
    if let error = error as? RedisError {
        text = error.message
    } else {
        text = String(describing: error)
    }
    let line = text.split(whereSeparator: \.isNewline).joined(separator: " ")
    FileHandle.standardError.write(Data("hiredis-admin: error: \(line)\n".utf8))
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0.indices.contains(column) ? $0[column].count : 0 }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { index, cell in
            index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

func milliseconds(_ value: Int64?) -> String {
    guard let value else { return "-" }
    return value >= 10_000 ? "\(value / 1000)s" : "\(value)ms"
}
