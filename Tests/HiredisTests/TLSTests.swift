import Foundation
import Hiredis
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// MARK: - TLS

/// A loopback listener that records every connection made to it and what was sent, without
/// ever answering (nothing but 127.0.0.1 is involved).
final class RecordingListener: Sendable {
    let port: Int
    private let descriptor: Int32

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, size) }
        }
        guard fd >= 0, bound == 0, listen(fd, 16) == 0 else {
            if fd >= 0 { close(fd) }
            throw TestSupportError("listen: \(String(cString: strerror(errno)))")
        }
        var length = size
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        descriptor = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    deinit { close(descriptor) }

    /// Accepts every connection made so far (the kernel completed their handshakes without
    /// us) and reads what each sent within `grace`.
    func received(grace: Duration = .milliseconds(200)) async throws -> (connections: Int, bytes: [UInt8]) {
        try await Task.sleep(for: grace)
        var connections = 0
        var bytes: [UInt8] = []
        while true {
            let client = accept(descriptor, nil, nil)
            guard client >= 0 else { break }
            connections += 1
            _ = fcntl(client, F_SETFL, fcntl(client, F_GETFL) | O_NONBLOCK)
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let count = read(client, &buffer, buffer.count)
                guard count > 0 else { break }
                bytes += buffer[0..<count]
            }
            close(client)
        }
        return (connections, bytes)
    }
}

@Suite struct TLSTests {
    private func expectTLSUnavailable(_ body: () async throws -> Void, sourceLocation: SourceLocation = #_sourceLocation) async {
        let error = await #expect(throws: RedisError.self, sourceLocation: sourceLocation) { try await body() }
        #expect(error?.code == .tlsUnavailable, "\(String(describing: error))", sourceLocation: sourceLocation)
        #expect(error?.message.contains("hiredis") == true, sourceLocation: sourceLocation)
    }

    /// The listener does record a plaintext client: the control for the tests below.
    @Test func theRecordingListenerSeesAPlaintextClient() async throws {
        let listener = try RecordingListener()
        var configuration = RedisConfiguration(host: "127.0.0.1", port: listener.port)
        configuration.reconnect = .never
        configuration.commandTimeout = .milliseconds(500)
        let connection = try await RedisConnection.connect(configuration)
        await #expect(throws: RedisError.self) { try await connection.send(RedisCommand("PING"), timeout: .milliseconds(200)) }
        let seen = try await listener.received()
        #expect(seen.connections == 1)
        #expect(String(decoding: seen.bytes, as: UTF8.self).contains("PING"))
        await connection.close()
    }

    /// `rediss://` with a password: a typed error, and not even a TCP connection is made,
    /// so nothing (no AUTH) is ever sent in plaintext. Every way to connect checks it.
    @Test(.enabled(if: !RedisTLSConfiguration.isAvailable, "this build has TLS"))
    func tlsIsATypedErrorBeforeAnySocketIsOpened() async throws {
        let listener = try RecordingListener()
        let password = makeSecret("password")
        let configuration = try RedisConfiguration(url: "rediss://:\(password)@127.0.0.1:\(listener.port)")
        #expect(configuration.tls?.verifyPeer == true)
        await expectTLSUnavailable { _ = try await RedisConnection.connect(configuration) }
        await expectTLSUnavailable { _ = try await RedisSubscriber.connect(configuration) }
        await expectTLSUnavailable {
            _ = try await RedisCluster.connect(RedisClusterConfiguration(seeds: [configuration.endpoint], node: {
                var node = configuration
                node.endpoint = .tcp(host: "127.0.0.1", port: 1)
                return node
            }()))
        }
        var sentinel = RedisConfiguration.sentinel(sentinels: [("127.0.0.1", listener.port)], masterName: "m", password: password)
        sentinel.sentinel?.tls = RedisTLSConfiguration()
        await expectTLSUnavailable { _ = try await RedisConnection.connect(sentinel) }
        sentinel.sentinel?.tls = nil
        sentinel.tls = .insecureNoVerification()
        sentinel.connectTimeout = .milliseconds(300)
        await expectTLSUnavailable { _ = try await RedisConnection.connect(sentinel) }
        let error = await #expect(throws: RedisError.self) { try await RedisConnection.connect(configuration) }
        #expect(error?.message.contains("1.0") == true, "says which hiredis to install: \(String(describing: error))")
        #expect(!(error.map { "\($0)" } ?? "").contains(password))

        let seen = try await listener.received()
        #expect(seen.connections == 0, "a TLS configuration opened a plaintext connection")
        #expect(seen.bytes.isEmpty)
    }

    @Test func badTLSFilesAreInvalidArguments() async {
        var configuration = RedisConfiguration()
        configuration.tls = RedisTLSConfiguration(certificateFile: "/c.pem")
        await #expect { _ = try await RedisConnection.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        configuration.tls = RedisTLSConfiguration(privateKeyPassphrase: "x")
        await #expect { _ = try await RedisConnection.connect(configuration) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
    }
}
