import Foundation
import Hiredis
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A throwaway `redis-server` for tests: a free loopback port, its own temporary
/// directory, no persistence unless asked, killed when stopped or released.
///
/// Every server writes its pid to `$TMPDIR/hiredis-kit-test-pids/` while it runs, so that
/// `make test` can kill what a crashed test process left behind.
public final class RedisServer: Sendable {
    public let host = "127.0.0.1"
    public let port: Int
    public let directory: URL
    private let arguments: [String]
    private let process: Mutex<ChildProcess?>
    /// A `redis-sentinel` rather than a data server.
    public let isSentinel: Bool
    /// For a TLS-only server (`port 0`, `tls-port` ``port``): the client side of its TLS,
    /// which ``configuration`` (so ``connect(_:)``) uses. `nil` for a plaintext server.
    public let tls: RedisTLSConfiguration?

    /// The path of the `redis-server` binary (from `PATH`).
    public static let executable: String = findExecutable("redis-server")

    /// Starts a server. `arguments` are extra `redis-server` options, e.g.
    /// `["--requirepass", "secret"]` or `["--appendonly", "yes"]`.
    public static func start(_ arguments: [String] = []) async throws -> RedisServer {
        try await start(arguments, sentinelConfiguration: nil)
    }

    /// Starts a server that speaks only TLS, on ``port`` (`--port 0 --tls-port port`);
    /// `arguments` carry its certificate options (``TestCertificates/serverArguments(cluster:)``).
    /// Clients, ``connect(_:)`` among them, reach it with `tls`.
    public static func startTLSOnly(tls: RedisTLSConfiguration, _ arguments: [String]) async throws -> RedisServer {
        try await start(arguments, sentinelConfiguration: nil, tls: tls)
    }

    /// Starts a `redis-sentinel` (redis-server in sentinel mode) that monitors the master
    /// on `masterPort` under `masterName`, with short timings so that a failover takes a
    /// few seconds. With `tls` the sentinel is TLS-only, as ``startTLSOnly(tls:_:)`` makes a
    /// server; `arguments` are extra options (its certificates, and `tls-replication yes`
    /// to monitor a TLS master: ``TestCertificates/serverArguments(cluster:)``).
    public static func startSentinel(
        monitoring masterPort: Int, masterName: String, quorum: Int = 2,
        downAfterMilliseconds: Int = 1000, failoverTimeoutMilliseconds: Int = 3000,
        tls: RedisTLSConfiguration? = nil, _ arguments: [String] = []
    ) async throws -> RedisServer {
        try await start(arguments, sentinelConfiguration: """
            sentinel monitor \(masterName) 127.0.0.1 \(masterPort) \(quorum)
            sentinel down-after-milliseconds \(masterName) \(downAfterMilliseconds)
            sentinel failover-timeout \(masterName) \(failoverTimeoutMilliseconds)
            sentinel parallel-syncs \(masterName) 1

            """, tls: tls)
    }

    /// Starts a Redis Cluster node (`--cluster-enabled yes`) on a port whose cluster bus
    /// port (port + 10000) is free too, with a short node timeout so failovers take about
    /// a second. With `tls`, TLS-only, as ``startTLSOnly(tls:_:)`` makes a server (its bus
    /// port is then the TLS port + 10000).
    public static func startClusterNode(nodeTimeoutMilliseconds: Int = 1000, _ arguments: [String] = [],
                                        tls: RedisTLSConfiguration? = nil) async throws -> RedisServer {
        try await start(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                         "--cluster-node-timeout", "\(nodeTimeoutMilliseconds)", "--repl-diskless-sync-delay", "0"] + arguments,
                        sentinelConfiguration: nil, tls: tls, choosePort: freeClusterPort)
    }

    /// `tls`: the server is TLS-only (see ``startTLSOnly(tls:_:)``).
    private static func start(_ arguments: [String], sentinelConfiguration: String?, tls: RedisTLSConfiguration? = nil,
                              choosePort: () throws -> Int = freeLoopbackPort) async throws -> RedisServer {
        var lastError: (any Error)?
        for _ in 0..<5 {
            let port = try choosePort()
            let directory = FileManager.default.temporaryDirectory
                .appendingPathComponent("hiredis-kit-redis-\(port)-\(UUID().uuidString.prefix(8))")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            if let sentinelConfiguration {
                try sentinelConfiguration.write(to: directory.appendingPathComponent("sentinel.conf"), atomically: true, encoding: .utf8)
            }
            let server = RedisServer(port: port, directory: directory, arguments: arguments, sentinel: sentinelConfiguration != nil,
                                     tls: tls)
            do {
                try await server.launch()
                return server
            } catch {
                lastError = error
                try? FileManager.default.removeItem(at: directory)
            }
        }
        throw lastError ?? TestSupportError("could not start redis-server")
    }

    private init(port: Int, directory: URL, arguments: [String], sentinel: Bool, tls: RedisTLSConfiguration?) {
        self.port = port
        self.directory = directory
        self.arguments = arguments
        self.isSentinel = sentinel
        self.tls = tls
        self.process = Mutex(nil)
    }

    deinit {
        if let process = process.withLock({ $0 }), process.isRunning {
            signalProcess(process.processIdentifier, SIGCONT)
            signalProcess(process.processIdentifier, SIGKILL)
        }
        try? FileManager.default.removeItem(at: directory)
        try? FileManager.default.removeItem(at: Self.pidDirectory.appendingPathComponent("\(port)"))
    }

    /// A configuration that reaches this server.
    public var configuration: RedisConfiguration {
        var configuration = RedisConfiguration(host: host, port: port)
        configuration.tls = tls
        return configuration
    }

    /// The server's process id while it runs.
    public var pid: Int32? { process.withLock { $0.map { $0.processIdentifier } } }

    /// Connects a new `RedisConnection` with optional changes to the configuration.
    public func connect(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisConnection {
        var configuration = self.configuration
        configure(&configuration)
        return try await RedisConnection.connect(configuration)
    }

    /// Kills the server with SIGKILL and waits until it has exited.
    public func kill() async {
        guard let process = process.withLock({ p -> ChildProcess? in defer { p = nil }; return p }) else { return }
        signalProcess(process.processIdentifier, SIGCONT)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = Mutex(false)
            let finish: @Sendable () -> Void = {
                if done.withLock({ d in defer { d = true }; return !d }) { continuation.resume() }
            }
            process.terminationHandler = { _ in finish() }
            if !process.isRunning { finish() } else { signalProcess(process.processIdentifier, SIGKILL) }
        }
        try? FileManager.default.removeItem(at: Self.pidDirectory.appendingPathComponent("\(port)"))
    }

    /// Kills the server and starts it again on the same port and directory (an AOF, if
    /// enabled, is replayed).
    public func restart() async throws {
        await kill()
        try await launch()
    }

    /// SIGSTOP: the server stops answering but keeps its connections open.
    public func pause() {
        if let pid { signalProcess(pid, SIGSTOP) }
    }

    /// SIGCONT after ``pause()``.
    public func resume() {
        if let pid { signalProcess(pid, SIGCONT) }
    }

    private func launch() async throws {
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: Self.executable)
        // A TLS-only server listens for TLS on `port` and nowhere in plaintext (but its
        // unix socket).
        let listen = tls == nil ? ["--port", "\(port)"] : ["--port", "0", "--tls-port", "\(port)"]
        if isSentinel {
            process.arguments = [
                directory.appendingPathComponent("sentinel.conf").path, "--sentinel",
            ] + listen + [
                "--bind", host, "--dir", directory.path, "--daemonize", "no", "--logfile", "",
            ] + arguments
        } else {
            process.arguments = listen + [
                "--bind", host, "--dir", directory.path,
                "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
                "--unixsocket", directory.appendingPathComponent("redis.sock").path, "--unixsocketperm", "700",
                "--enable-debug-command", "local",
            ] + arguments
        }
        let readyLine = isSentinel ? "Sentinel ID is" : "Ready to accept connections"
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.standardInput = FileHandle.nullDevice
        let ready = Mutex<(CheckedContinuation<Void, any Error>?, String, Bool)>((nil, "", false))
        // Resolves the launch once: on the ready line, or on end of output.
        let settle: @Sendable ((any Error)?) -> Void = { error in
            let continuation = ready.withLock { state -> CheckedContinuation<Void, any Error>? in
                guard !state.2 else { return nil }
                state.2 = true
                return state.0
            }
            if let error { continuation?.resume(throwing: error) } else { continuation?.resume() }
        }
        // Drain the server's output on a plain thread with blocking read(2): no Dispatch
        // read source (FileHandle.readabilityHandler teardown trips a libdispatch epoll bug
        // on Linux, swift-corelibs-libdispatch#949). The thread ends at EOF, when the
        // server exits.
        let readFD = output.fileHandleForReading.fileDescriptor
        let keepAlive = output
        let reader = Thread {
            withExtendedLifetime(keepAlive) {
                var buffer = [UInt8](repeating: 0, count: 8192)
                while true {
                    let count = read(readFD, &buffer, buffer.count)
                    if count < 0 && errno == EINTR { continue }
                    if count <= 0 { break }
                    let text = String(decoding: buffer[0..<count], as: UTF8.self)
                    let isReady = ready.withLock { state -> Bool in
                        if !state.2 { state.1 += text }
                        return state.1.contains(readyLine)
                    }
                    if isReady { settle(nil) }
                }
                let log = ready.withLock { $0.1 }
                settle(TestSupportError("redis-server exited before it was ready:\n\(log.suffix(2000))"))
            }
        }
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            ready.withLock { $0.0 = continuation }
            do {
                try process.run()
                // Recorded before waiting for readiness, so that `make test` can kill the
                // server even if this process dies right now.
                try? FileManager.default.createDirectory(at: Self.pidDirectory, withIntermediateDirectories: true)
                try? "\(process.processIdentifier)\n\(directory.path)\n".write(
                    to: Self.pidDirectory.appendingPathComponent("\(port)"), atomically: true, encoding: .utf8)
                reader.start()
            } catch {
                settle(error)
            }
        }
        self.process.withLock { $0 = process }
    }

    /// The unix socket the server also listens on.
    public var unixSocketPath: String { directory.appendingPathComponent("redis.sock").path }

    static let pidDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("hiredis-kit-test-pids")
}

/// The Redis a test runs against: a throwaway ``RedisServer``, or the external server named
/// by `REDIS_URL` (then tests that stop, pause or restart the server are skipped).
public struct TestRedis: Sendable {
    public let configuration: RedisConfiguration
    /// `nil` when running against `REDIS_URL`.
    public let server: RedisServer?

    public init(configuration: RedisConfiguration, server: RedisServer?) {
        self.configuration = configuration
        self.server = server
    }

    /// A test Redis backed by `server`.
    public init(_ server: RedisServer) {
        self.init(configuration: server.configuration, server: server)
    }

    /// A `redis://` URL for helper processes: `REDIS_URL`, or the throwaway server's.
    public var url: String {
        if let server { return "redis://127.0.0.1:\(server.port)" }
        return ProcessInfo.processInfo.environment["REDIS_URL"] ?? ""
    }

    /// `true` when tests start their own servers (no `REDIS_URL`).
    public static let ownsServers: Bool = ProcessInfo.processInfo.environment["REDIS_URL"].map(\.isEmpty) ?? true

    public static func start(_ arguments: [String] = []) async throws -> TestRedis {
        if let url = ProcessInfo.processInfo.environment["REDIS_URL"], !url.isEmpty {
            return TestRedis(configuration: try RedisConfiguration(url: url), server: nil)
        }
        let server = try await RedisServer.start(arguments)
        return TestRedis(configuration: server.configuration, server: server)
    }

    public func connect(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisConnection {
        var configuration = self.configuration
        configure(&configuration)
        return try await RedisConnection.connect(configuration)
    }

    public func subscriber(_ configure: (inout RedisConfiguration) -> Void = { _ in }) async throws -> RedisSubscriber {
        var configuration = self.configuration
        configure(&configuration)
        return try await RedisSubscriber.connect(configuration)
    }
}

/// A key unique to one test, so tests can share an external server.
public func uniqueKey(_ name: String = #function) -> String {
    "test:\(name.prefix(while: { $0 != "(" })):\(UUID().uuidString)"
}

public struct TestSupportError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// Asks the kernel for a free TCP port on 127.0.0.1.
public func freeLoopbackPort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestSupportError("socket: \(String(cString: strerror(errno)))") }
    defer { close(fd) }
    var address = loopbackAddress(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw TestSupportError("bind: \(String(cString: strerror(errno)))") }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A free loopback port of at most 55535 whose cluster bus port (+10000) is free as well.
public func freeClusterPort() throws -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20000...55535)
        if portIsFree(port), portIsFree(port + 10000) { return port }
    }
    throw TestSupportError("no free port pair for a cluster node")
}

/// Whether a TCP port on 127.0.0.1 can be bound right now.
func portIsFree(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    var address = loopbackAddress(port: UInt16(port))
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    } == 0
}

func loopbackAddress(port: UInt16) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    return address
}

/// A loopback listener whose accept queue is already full, so that a new connection's
/// handshake never completes: the way to test a connect timeout without sending traffic
/// anywhere but 127.0.0.1.
public final class FullBacklogListener: Sendable {
    public let port: Int
    private let descriptors: [Int32]

    public init() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = loopbackAddress(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard listener >= 0, bound == 0, listen(listener, 0) == 0 else {
            throw TestSupportError("listen: \(String(cString: strerror(errno)))")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        port = Int(UInt16(bigEndian: address.sin_port))
        var fds = [listener]
        // Fill the accept queue (backlog 0 admits one); the listener never accepts.
        for _ in 0..<2 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var target = loopbackAddress(port: UInt16(port))
            _ = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            fds.append(filler)
        }
        descriptors = fds
    }

    deinit {
        for fd in descriptors { close(fd) }
    }
}

/// The path of `name` on PATH (or the usual system directories), else `name` itself.
public func findExecutable(_ name: String) -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/local/bin:/usr/bin:/bin"
    for directory in path.split(separator: ":") + ["/usr/bin", "/usr/local/bin", "/usr/sbin"] {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return name
}

/// `kill(2)`, named apart from `RedisServer.kill()`.
public func signalProcess(_ pid: Int32, _ signal: Int32) {
    // 0 and negative pids name process groups (0: our own; -1: every process we may
    // signal): a ChildProcess that never started reports 0.
    guard pid > 0 else { return }
    _ = kill(pid, signal)
}

/// Waits until `condition` holds, checking every few milliseconds, for state that has no
/// event to await (a server-side counter, a client list). Throws after `timeout`.
public func eventually(
    timeout: Duration = .seconds(10), _ what: String = "condition",
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while clock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(5))
    }
    throw TestSupportError("timed out waiting for \(what)")
}

extension RedisClient {
    /// A field of `INFO` (e.g. `blocked_clients`, `connected_clients`).
    public func info(_ field: String) async throws -> String? {
        let text = try await send("INFO").decode(String.self)
        for line in text.split(whereSeparator: \.isNewline) where line.hasPrefix(field + ":") {
            return String(line.dropFirst(field.count + 1))
        }
        return nil
    }
}

/// `Result(catching:)` for async code.
public func catching<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do { return .success(try await body()) } catch { return .failure(error) }
}

/// A real Sentinel topology on loopback: 1 master, 1 replica, 3 sentinels (quorum 2), with
/// a 1 s down-after (unless given) and a 3 s failover timeout.
public struct SentinelTopology: Sendable {
    public let masterName: String
    public let master: RedisServer
    public let replica: RedisServer
    public let sentinels: [RedisServer]

    /// - Parameter downAfter: how long the master may be silent before the sentinels fail
    ///   it over. Tests that do not kill it give a roomy one: a loaded machine can stall
    ///   the master for a second, and a failover nobody asked for moves the master.
    public static func start(masterName: String = "mymaster", downAfter: Duration = .seconds(1)) async throws -> SentinelTopology {
        // No 5 s wait for more replicas before a diskless full sync.
        let master = try await RedisServer.start(["--repl-diskless-sync-delay", "0"])
        let replica = try await RedisServer.start(["--replicaof", master.host, "\(master.port)"])
        let probe = try await replica.connect()
        try await eventually(timeout: .seconds(15), "the replica to sync") {
            try await probe.info("master_link_status") == "up"
        }
        await probe.close()
        var sentinels: [RedisServer] = []
        for _ in 0..<3 {
            sentinels.append(try await RedisServer.startSentinel(
                monitoring: master.port, masterName: masterName,
                downAfterMilliseconds: Int(downAfter.redisMilliseconds)))
        }
        let topology = SentinelTopology(masterName: masterName, master: master, replica: replica, sentinels: sentinels)
        // Wait until the sentinels know the replica and each other (a failover needs both).
        for sentinel in sentinels {
            let connection = try await sentinel.connect()
            try await eventually(timeout: .seconds(15), "sentinel \(sentinel.port) to see the replica and its peers") {
                let replicas = try await connection.send("SENTINEL", "replicas", masterName)
                let peers = try await connection.send("SENTINEL", "sentinels", masterName)
                guard case .array(let r) = replicas, case .array(let p) = peers else { return false }
                return r.count == 1 && p.count == 2
            }
            await connection.close()
        }
        return topology
    }

    /// The sentinels' addresses, for ``RedisConfiguration/sentinel(sentinels:masterName:username:password:sentinelUsername:sentinelPassword:)``.
    public var addresses: [(host: String, port: Int)] { sentinels.map { ($0.host, $0.port) } }

    public var configuration: RedisConfiguration {
        RedisConfiguration.sentinel(sentinels: addresses, masterName: masterName)
    }
}
