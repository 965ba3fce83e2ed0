import struct Foundation.Data

/// A reply from the server, copied out of hiredis before its callback returned.
///
/// Convert it with ``decode(_:)``:
/// ```swift
/// let name = try await connection.send("GET", "user:1:name").decode(String?.self)
/// let count = try await connection.send("INCR", "hits").decode(Int.self)
/// ```
public enum RedisReply: Sendable, Hashable {
    /// A status reply (`+OK`, `+QUEUED`, `+PONG`).
    case status(String)
    /// An error reply nested inside an array (for example a failed command inside
    /// `EXEC`). A top-level error reply is thrown by `send` (and is a `.failure` in a
    /// pipeline's results) as ``RedisError`` with code ``RedisError/Code/server``.
    case error(String)
    /// An integer reply.
    case integer(Int64)
    /// A bulk string: arbitrary bytes, possibly empty, possibly containing NUL.
    case bulk([UInt8])
    /// The null bulk string or null array.
    case null
    /// An array of replies.
    case array([RedisReply])

    /// `true` for ``null``.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// Converts the reply to `T`, or throws ``RedisError/Code/wrongReplyType``.
    public func decode<T: RedisReplyDecodable>(_ type: T.Type = T.self) throws -> T {
        try T(redisReply: self)
    }

    /// A short description of the reply's kind, used in error messages.
    var kindDescription: String {
        switch self {
        case .status(let s): return "status \"\(s.prefix(40))\""
        case .error(let s): return "error \"\(s.prefix(40))\""
        case .integer(let i): return "integer \(i)"
        case .bulk(let b): return "bulk string of \(b.count) bytes"
        case .null: return "null"
        case .array(let a): return "array of \(a.count) elements"
        }
    }
}

/// A type that can be made from a ``RedisReply``.
///
/// `String`, `Int`, `Int64`, `Double`, `Bool`, `Data`, ``RedisBytes``, `RedisReply`, and
/// optionals and arrays of these conform. For raw bytes use ``RedisReply/bytes()``.
public protocol RedisReplyDecodable: Sendable {
    /// Makes the value, or throws ``RedisError/Code/wrongReplyType``.
    init(redisReply: RedisReply) throws
}

@inline(__always)
func wrongType<T>(_ reply: RedisReply, _ type: T.Type) -> RedisError {
    if case .error(let message) = reply {
        return RedisError(.server, message)
    }
    return RedisError(.wrongReplyType, "cannot convert \(reply.kindDescription) to \(T.self)")
}

extension RedisReply: RedisReplyDecodable {
    public init(redisReply: RedisReply) { self = redisReply }
}

extension String: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        switch redisReply {
        case .bulk(let bytes): self = String(decoding: bytes, as: UTF8.self)
        case .status(let status): self = status
        case .integer(let value): self = String(value)
        default: throw wrongType(redisReply, String.self)
        }
    }
}

extension Array: RedisReplyDecodable where Element: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        switch redisReply {
        case .array(let elements): self = try elements.map { try Element(redisReply: $0) }
        default:
            throw wrongType(redisReply, Self.self)
        }
    }
}

extension Optional: RedisReplyDecodable where Wrapped: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        if case .null = redisReply { self = .none } else { self = .some(try Wrapped(redisReply: redisReply)) }
    }
}

extension Int64: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        switch redisReply {
        case .integer(let value): self = value
        case .bulk(let bytes):
            guard let value = Int64(String(decoding: bytes, as: UTF8.self)) else { throw wrongType(redisReply, Int64.self) }
            self = value
        case .status(let status):
            guard let value = Int64(status) else { throw wrongType(redisReply, Int64.self) }
            self = value
        default: throw wrongType(redisReply, Int64.self)
        }
    }
}

extension Int: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        self = Int(try Int64(redisReply: redisReply))
    }
}

extension Double: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        switch redisReply {
        case .integer(let value): self = Double(value)
        case .bulk(let bytes):
            guard let value = Double(String(decoding: bytes, as: UTF8.self)) else { throw wrongType(redisReply, Double.self) }
            self = value
        default: throw wrongType(redisReply, Double.self)
        }
    }
}

extension Bool: RedisReplyDecodable {
    /// Integer 1/0 (`EXISTS`, `SISMEMBER`, `SETNX`…), or the status `OK`.
    public init(redisReply: RedisReply) throws {
        switch redisReply {
        case .integer(let value): self = value != 0
        case .status(let status) where status == "OK": self = true
        case .null: self = false
        default: throw wrongType(redisReply, Bool.self)
        }
    }
}

extension Data: RedisReplyDecodable {
    public init(redisReply: RedisReply) throws {
        guard case .bulk(let bytes) = redisReply else { throw wrongType(redisReply, Data.self) }
        self = Data(bytes)
    }
}

/// The raw bytes of a bulk string (`[UInt8]` itself is not decodable, so that it is never
/// mistaken for an array reply).
public struct RedisBytes: RedisReplyDecodable, Hashable {
    /// The bulk string's bytes, as sent.
    public var bytes: [UInt8]
    public init(redisReply: RedisReply) throws {
        guard case .bulk(let bytes) = redisReply else { throw wrongType(redisReply, [UInt8].self) }
        self.bytes = bytes
    }
}

extension RedisReply {
    /// The bytes of a bulk string, or throws ``RedisError/Code/wrongReplyType``.
    public func bytes() throws -> [UInt8] { try RedisBytes(redisReply: self).bytes }
}
