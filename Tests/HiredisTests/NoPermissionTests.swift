import Foundation
import Hiredis
import RedisTestSupport
import Testing

// MARK: - NOPERM

@Suite(.enabled(if: TestRedis.ownsServers)) struct NoPermissionTests {
    private func limitedUser() async throws -> (RedisServer, RedisConnection) {
        let server = try await RedisServer.start()
        let admin = try await server.connect()
        try await admin.send("ACL", "SETUSER", "limited", "on", ">pw", "~allowed:*", "+@all", "-flushall")
        await admin.close()
        let limited = try await server.connect {
            $0.username = "limited"
            $0.password = "pw"
        }
        return (server, limited)
    }

    @Test func aForbiddenKeyIsNoPermissionNamingTheCommandAndKey() async throws {
        let (server, limited) = try await limitedUser()
        try await limited.send("SET", "allowed:x", "1")
        let error = try #require(await #expect(throws: RedisError.self) { try await limited.send("GET", "forbidden:x") })
        #expect(error.code == .noPermission)
        #expect(error.serverErrorPrefix == "NOPERM")
        #expect(error.message.hasPrefix("NOPERM"))
        #expect(error.message.contains("GET"))
        #expect(error.message.contains("forbidden:x"))
        #expect(!error.isTransient)
        // Several keys: all named.
        let mset = try #require(await #expect(throws: RedisError.self) {
            try await limited.send("MSET", "allowed:a", "1", "forbidden:b", "2")
        })
        #expect(mset.code == .noPermission)
        #expect(mset.message.contains("MSET") && mset.message.contains("allowed:a, forbidden:b"), "\(mset.message)")
        // A command the user may not run at all.
        let flush = try #require(await #expect(throws: RedisError.self) { try await limited.send("FLUSHALL") })
        #expect(flush.code == .noPermission)
        #expect(flush.message.contains("FLUSHALL"), "\(flush.message)")
        // The connection is still fine.
        #expect(try await limited.send("GET", "allowed:x") == .bulk(Array("1".utf8)))
        await limited.close()
        withExtendedLifetime(server) {}
    }

    @Test func aScriptTouchingAForbiddenKeyIsNoPermission() async throws {
        let (server, limited) = try await limitedUser()
        // A declared key the user may not touch: refused before the script runs.
        let declared = try #require(await #expect(throws: RedisError.self) {
            try await limited.send("EVAL", "return redis.call('GET', KEYS[1])", 1, "forbidden:y")
        })
        #expect(declared.code == .noPermission)
        #expect(declared.message.contains("EVAL") && declared.message.contains("forbidden:y"), "\(declared.message)")
        // A key the script reaches by itself (Redis 7.0 says "ERR The user executing the
        // script can't …", 7.2 and later NOPERM): the same typed error, through EVALSHA.
        let script = RedisScript("return redis.call('GET', 'forbidden:z')")
        let undeclared = try #require(await #expect(throws: RedisError.self) {
            try await limited.run(script, keys: ["allowed:k"])
        })
        #expect(undeclared.code == .noPermission, "\(undeclared)")
        #expect(undeclared.serverErrorPrefix == "NOPERM")
        #expect(undeclared.message.contains("EVALSHA") && undeclared.message.contains("allowed:k"), "\(undeclared.message)")
        #expect(!undeclared.isTransient)
        await limited.close()
        withExtendedLifetime(server) {}
    }

    @Test func aPipelineReportsNoPermissionForTheRefusedCommandOnly() async throws {
        let (server, limited) = try await limitedUser()
        let results = try await limited.pipeline([
            RedisCommand("SET", "allowed:p", "1"), RedisCommand("GET", "forbidden:p"), RedisCommand("GET", "allowed:p"),
        ])
        #expect(try results[0].get() == .status("OK"))
        guard case .failure(let error) = results[1] else { Issue.record("GET forbidden:p succeeded"); return }
        #expect(error.code == .noPermission)
        #expect(error.message.contains("GET") && error.message.contains("forbidden:p"))
        #expect(try results[2].get() == .bulk(Array("1".utf8)))
        await limited.close()
        withExtendedLifetime(server) {}
    }

    @Test func aRefusedSelectAtConnectIsNoPermission() async throws {
        let server = try await RedisServer.start()
        let admin = try await server.connect()
        try await admin.send("ACL", "SETUSER", "noselect", "on", ">pw", "~*", "+@all", "-select")
        await admin.close()
        let error = try #require(await #expect(throws: RedisError.self) {
            try await server.connect {
                $0.username = "noselect"
                $0.password = "pw"
                $0.database = 3
            }
        })
        #expect(error.code == .noPermission)
        #expect(error.serverErrorPrefix == "NOPERM")
        #expect(error.message.contains("SELECT") && error.message.contains("handshake"), "\(error.message)")
    }

    @Test func otherServerErrorsKeepTheirCode() {
        #expect(RedisError(.noPermission, "ERR The user executing the script can't run this command").serverErrorPrefix == "NOPERM")
        #expect(!RedisError(.noPermission, "NOPERM … key: READONLY:x").isTransient)
        #expect(RedisError(.server, "READONLY You can't write against a read only replica.").isTransient)
        #expect(RedisError(.server, "ERR syntax error").serverErrorPrefix == "ERR")
    }
}
