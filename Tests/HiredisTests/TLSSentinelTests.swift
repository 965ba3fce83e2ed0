import Foundation
import Hiredis
import RedisTestSupport
import Testing

/// Sentinel over TLS against real processes: a TLS-only master (`port 0`, `tls-port`) and a
/// TLS-only `redis-sentinel` that monitors it over TLS (`tls-replication yes`). The client's
/// configuration gives the sentinels and the master each their own TLS settings.
@Suite(.enabled(if: TLSRedis.isAvailable, "needs hiredis >= 1.0 with libhiredis_ssl, and openssl (make test-tls)"))
struct TLSSentinelTests {
    /// A command sent through the sentinel lands on the master: written through the
    /// discovered master, read back on a direct TLS connection to it.
    @Test func commandsReachTheMasterNamedByATLSSentinel() async throws {
        let topology = try await TLSSentinelTopology.start()
        let connection = try await RedisConnection.connect(topology.configuration())
        let key = uniqueKey()
        try await connection.send("SET", key, "through the sentinel")
        #expect(try await connection.send("GET", key).decode(String.self) == "through the sentinel")
        let direct = try await topology.master.connect()
        #expect(try await direct.send("GET", key).decode(String.self) == "through the sentinel")
        await connection.close()
        await direct.close()
    }

    /// A subscriber found through the sentinel listens on the master (a sentinel takes
    /// `SUBSCRIBE` too, but only the master hears what is published on the master).
    @Test func aSubscriberFoundThroughATLSSentinelHearsTheMaster() async throws {
        let topology = try await TLSSentinelTopology.start()
        let subscriber = try await RedisSubscriber.connect(topology.configuration())
        let channel = uniqueKey("channel")
        let messages = try await subscriber.subscribe([channel])
        let publisher = try await topology.master.connect()
        #expect(try await publisher.send("PUBLISH", channel, "via sentinel over tls").decode(Int.self) == 1)
        var iterator = messages.makeAsyncIterator()
        let event = try await iterator.next()
        #expect(event == .message(RedisPubSubMessage(channel: channel, payload: Array("via sentinel over tls".utf8))))
        await subscriber.close()
        await publisher.close()
    }

    /// The sentinels' TLS is their own: an authority that did not sign the sentinel's
    /// certificate fails discovery. Discovery reports every sentinel's failure in one
    /// `noSentinelReachable` error, whose message carries the TLS verification error.
    @Test func aWrongAuthorityForTheTLSSentinelsIsNoSentinelReachable() async throws {
        let topology = try await TLSSentinelTopology.start()
        let wrong = RedisTLSConfiguration(caCertificateFile: topology.certificates.otherCACertificate)
        let error = await #expect(throws: RedisError.self) {
            _ = try await RedisConnection.connect(topology.configuration(sentinelTLS: wrong))
        }
        #expect(error?.code == .noSentinelReachable, "\(String(describing: error))")
        #expect(error?.message.contains("\(RedisError.Code.tlsVerificationFailed)") == true, "\(String(describing: error))")
        #expect(error?.message.contains("certificate") == true, "\(String(describing: error))")
    }

    /// The master's TLS is its own too: with the sentinels trusted and the master not, the
    /// sentinel names the master and the connection to it is refused with the master's
    /// verification error, unwrapped.
    @Test func aWrongAuthorityForTheTLSMasterIsAVerificationError() async throws {
        let topology = try await TLSSentinelTopology.start()
        let wrong = RedisTLSConfiguration(caCertificateFile: topology.certificates.otherCACertificate)
        let error = await #expect(throws: RedisError.self) {
            _ = try await RedisConnection.connect(topology.configuration(masterTLS: wrong))
        }
        #expect(error?.code == .tlsVerificationFailed, "\(String(describing: error))")
    }
}
