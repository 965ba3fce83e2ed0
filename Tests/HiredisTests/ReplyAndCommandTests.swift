import CHiredis
import Foundation
@testable import Hiredis
import Testing

/// Parses RESP bytes with hiredis's own reader (no server) and copies the tree.
private func parse(_ resp: String) throws -> RedisReply {
    let reader = redisReaderCreate()!
    defer { redisReaderFree(reader) }
    let bytes = Array(resp.utf8)
    _ = bytes.withUnsafeBufferPointer { buffer in
        buffer.withMemoryRebound(to: CChar.self) { redisReaderFeed(reader, $0.baseAddress, buffer.count) }
    }
    var raw: UnsafeMutableRawPointer?
    guard redisReaderGetReply(reader, &raw) == REDIS_OK, let raw else { throw TestFailure("no reply parsed") }
    defer { freeReplyObject(raw) }
    return RedisReply(copying: raw.assumingMemoryBound(to: redisReply.self))
}

struct TestFailure: Error { let message: String; init(_ m: String) { message = m } }

@Suite struct ReplyParsingTests {
    @Test func statusErrorIntegerNull() throws {
        #expect(try parse("+OK\r\n") == .status("OK"))
        #expect(try parse("-ERR bad\r\n") == .error("ERR bad"))
        #expect(try parse(":-42\r\n") == .integer(-42))
        #expect(try parse("$-1\r\n") == .null)
        #expect(try parse("*-1\r\n") == .null)
    }

    @Test func bulkStringsAreBinarySafe() throws {
        #expect(try parse("$5\r\na\0b\r\n\r\n") == .bulk([97, 0, 98, 13, 10]))
        #expect(try parse("$0\r\n\r\n") == .bulk([]))
    }

    @Test func nestedArrays() throws {
        let reply = try parse("*3\r\n:1\r\n*2\r\n$1\r\nx\r\n$-1\r\n*0\r\n\r\n")
        #expect(reply == .array([.integer(1), .array([.bulk([120]), .null]), .array([])]))
    }
}

@Suite struct ReplyDecodingTests {
    @Test func typedConversions() throws {
        #expect(try RedisReply.bulk(Array("hi".utf8)).decode(String.self) == "hi")
        #expect(try RedisReply.status("OK").decode(String.self) == "OK")
        #expect(try RedisReply.integer(7).decode(Int.self) == 7)
        #expect(try RedisReply.bulk(Array("12".utf8)).decode(Int.self) == 12)
        #expect(try RedisReply.bulk(Array("1.5".utf8)).decode(Double.self) == 1.5)
        #expect(try RedisReply.integer(1).decode(Bool.self))
        #expect(try RedisReply.null.decode(String?.self) == nil)
        #expect(try RedisReply.bulk([0, 1]).decode(Data.self) == Data([0, 1]))
        #expect(try RedisReply.bulk([0, 1]).bytes() == [0, 1])
        #expect(try RedisReply.array([.integer(1), .integer(2)]).decode([Int].self) == [1, 2])
        #expect(try RedisReply.array([.bulk([97]), .null]).decode([String?].self) == ["a", nil])
    }

    @Test func wrongTypeThrowsAClearError() {
        #expect {
            try RedisReply.array([]).decode(Int.self)
        } throws: { error in
            let error = error as? RedisError
            return error?.code == .wrongReplyType && error!.message.contains("array of 0 elements") && error!.message.contains("Int")
        }
        #expect(throws: RedisError.self) { try RedisReply.null.decode(String.self) }
        #expect(throws: RedisError.self) { try RedisReply.bulk(Array("x".utf8)).decode(Int.self) }
    }

    @Test func nestedErrorDecodesAsServerError() {
        #expect {
            try RedisReply.error("WRONGTYPE nope").decode(String.self)
        } throws: { ($0 as? RedisError)?.serverErrorPrefix == "WRONGTYPE" }
    }
}

@Suite struct CommandTests {
    @Test func argumentsAreEncodedAsSeparateWords() {
        let command = RedisCommand("SET", "key", [UInt8]([0, 1, 2]), 42, Data([9]))
        #expect(command.words == [Array("SET".utf8), Array("key".utf8), [0, 1, 2], Array("42".utf8), [9]])
        #expect(command.name == "SET")
        #expect(command.count == 5)
    }

    /// The bytes Redis receives: RESP with explicit lengths, so CR, LF, NUL, `%` and empty
    /// words pass through untouched; a count of two digits is written whole.
    @Test func encodesRESPWithExplicitLengths() {
        let command = RedisCommand("SET", "%s%n", [UInt8]([0, 0x0D, 0x0A]), "")
        #expect(command.withRESP { Array($0) } == Array("*4\r\n$3\r\nSET\r\n$4\r\n%s%n\r\n$3\r\n\0\r\n\r\n$0\r\n\r\n".utf8))
        let twelve = RedisCommand("DEL", arguments: (0..<11).map { "k\($0)" })
        let resp = twelve.withRESP { String(decoding: $0, as: UTF8.self) }
        #expect(resp.hasPrefix("*12\r\n$3\r\nDEL\r\n$2\r\nk0\r\n"))
        #expect(resp.hasSuffix("$3\r\nk10\r\n"))
        let big = RedisCommand("SET", "k", [UInt8](repeating: 7, count: 123_456))
        #expect(big.withRESP { Array($0.prefix(29)) } == Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$123456\r\n".utf8))
        #expect(big.withRESP { $0.count } == 29 + 123_456 + 2)
        // The count grows a digit at 10 and at 100 words: the header is rewritten whole.
        let many = RedisCommand("DEL", arguments: (0..<150).map { "k\($0)" })
        #expect(many.withRESP { String(decoding: $0, as: UTF8.self) }.hasPrefix("*151\r\n$3\r\nDEL\r\n$2\r\nk0\r\n"))
        #expect(many.count == 151 && many.words.last == Array("k149".utf8) && many.name == "DEL")
        // hiredis reads a formatted command up to a NUL.
        #expect(RedisCommand("PING").withRESP { $0.baseAddress!.load(fromByteOffset: $0.count, as: UInt8.self) } == 0)
    }

    /// Integers are written as Redis reads them; an argument that does not know its size
    /// (or miscounts it) is measured after its bytes are written.
    @Test func lengthsAreRightWhateverTheArgumentSays() {
        struct Miscounted: RedisArgument {
            func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: "abc".utf8) }
            var redisByteCount: Int? { 7 }
        }
        let command = RedisCommand("X", -42, Int64.min, UInt64.max, 0, 1.5, Miscounted(), "é")
        #expect(command.words.map { String(decoding: $0, as: UTF8.self) }
                == ["X", "-42", "-9223372036854775808", "18446744073709551615", "0", "1.5", "abc", "é"])
        #expect(command.withRESP { String(decoding: $0, as: UTF8.self) }
                == "*8\r\n$1\r\nX\r\n$3\r\n-42\r\n$20\r\n-9223372036854775808\r\n$20\r\n18446744073709551615\r\n"
                + "$1\r\n0\r\n$3\r\n1.5\r\n$3\r\nabc\r\n$2\r\né\r\n")
    }

    @Test func emptyNameIsRejected() {
        #expect { try RedisCommand("").validate() } throws: { ($0 as? RedisError)?.code == .invalidArgument }
    }

    @Test func pubSubCommandsAreRejectedOnACommandConnection() {
        for name in ["SUBSCRIBE", "psubscribe", "Monitor", "UNSUBSCRIBE"] {
            #expect { try RedisCommand(name, "x").validate() } throws: { ($0 as? RedisError)?.code == .invalidArgument }
        }
        #expect(throws: Never.self) { try RedisCommand("SUBSTR", "k", 0, 1).validate() }
    }

    /// The same check as for 512 MiB (Redis's proto-max-bulk-len), with a small limit so
    /// the test does not copy half a gigabyte on a shared test thread.
    @Test func oversizedArgumentIsRejected() {
        #expect(RedisCommand.maximumArgumentSize == 512 * 1024 * 1024)
        let big = [UInt8](repeating: 0, count: 1025)
        #expect { try RedisCommand("SET", "k", big).validate(limit: 1024) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument && ($0 as? RedisError)!.message.contains("argument 2")
        }
        #expect(throws: Never.self) { try RedisCommand("SET", "k", [UInt8](repeating: 0, count: 1024)).validate(limit: 1024) }
    }
}

@Suite struct ConfigurationTests {
    @Test func parsesURLs() throws {
        let full = try RedisConfiguration(url: "redis://alice:s3cret@127.0.0.1:6380/2")
        #expect(full.endpoint == .tcp(host: "127.0.0.1", port: 6380))
        #expect(full.username == "alice")
        #expect(full.password == "s3cret")
        #expect(full.database == 2)
        let passwordOnly = try RedisConfiguration(url: "redis://:pw@localhost")
        #expect(passwordOnly.username == nil && passwordOnly.password == "pw")
        #expect(passwordOnly.endpoint == .tcp(host: "localhost", port: 6379))
        let ipv6 = try RedisConfiguration(url: "redis://[::1]:7000")
        #expect(ipv6.endpoint == .tcp(host: "::1", port: 7000))
        let unix = try RedisConfiguration(url: "unix:///tmp/redis.sock?db=3")
        #expect(unix.endpoint == .unixSocket(path: "/tmp/redis.sock"))
        #expect(unix.database == 3)
    }

    @Test func rejectsBadURLs() {
        for url in ["http://x", "redis://host:port", "redis://h/notanumber", "unix://", "redis://::1:6379"] {
            #expect(throws: RedisError.self) { try RedisConfiguration(url: url) }
        }
    }

    @Test func rejectsBadValuesBeforeConnecting() async {
        var configurations: [RedisConfiguration] = []
        configurations.append(RedisConfiguration(host: "127.0.0.1", port: 0))
        var negativeDatabase = RedisConfiguration(); negativeDatabase.database = -1; configurations.append(negativeDatabase)
        var spacedName = RedisConfiguration(); spacedName.clientName = "a b"; configurations.append(spacedName)
        var zeroTimeout = RedisConfiguration(); zeroTimeout.connectTimeout = .zero; configurations.append(zeroTimeout)
        var userWithoutPassword = RedisConfiguration(); userWithoutPassword.username = "u"; configurations.append(userWithoutPassword)
        var negativeWait = RedisConfiguration(); negativeWait.inlineReplyWait = .microseconds(-1); configurations.append(negativeWait)
        var longWait = RedisConfiguration(); longWait.inlineReplyWait = .milliseconds(11); configurations.append(longWait)
        for configuration in configurations {
            await #expect { _ = try await RedisConnection.connect(configuration) } throws: {
                ($0 as? RedisError)?.code == .invalidArgument
            }
        }
    }
}

@Suite struct OwnerTokenTests {
    /// Tokens name an owner in Redis: no two calls may return the same one, also from
    /// many tasks at once; and two processes differ by their random prefix.
    @Test func tokensAreUniqueAcrossConcurrentCalls() async {
        let tokens = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<8 { group.addTask { (0..<1_000).map { _ in OwnerToken.next() } } }
            return await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(Set(tokens).count == 8_000)
        let prefix = tokens[0].split(separator: "-")[0]
        #expect(prefix.count == 32 && prefix.allSatisfy(\.isHexDigit))
    }
}
