import ArgumentParser
import Foundation
import Hiredis
import HiredisOps

/// How to reach Redis: a URL, sentinels, or cluster seeds.
///
/// The URL gives the credentials, the database and (`rediss://`) TLS of the server that
/// holds the data: the URL's own server, the master the sentinels name, or every cluster
/// node. With `--sentinel` or `--cluster` its host and port are not used.
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

    func validate() throws {
        if !sentinels.isEmpty && masterName == nil { throw ValidationError("--sentinel needs --master-name") }
        if masterName != nil && sentinels.isEmpty { throw ValidationError("--master-name needs --sentinel") }
        if !sentinels.isEmpty && !clusterSeeds.isEmpty { throw ValidationError("--sentinel and --cluster exclude each other") }
        for address in sentinels + clusterSeeds { _ = try Self.hostPort(address) }
        guard workerTimeoutMs > 0 else { throw ValidationError("--worker-timeout-ms must be positive") }
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
    /// Everything the URL gives (credentials, database, `rediss://`) is kept for the server
    /// that holds the data, whichever way it is found.
    /// - Throws: ``RedisError/Code/invalidArgument`` for a malformed URL.
    func target() throws -> Target {
        var base = try RedisConfiguration(url: url)
        base.connectTimeout = .seconds(3)
        base.reconnect = .never
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
            sentinels: addresses.map { .tcp(host: $0.host, port: $0.port) }, masterName: masterName)
        return .server(configuration)
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
