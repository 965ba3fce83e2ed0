import struct Foundation.Data

/// A value that can be sent as one argument of a command. Arguments are binary-safe:
/// they are passed to hiredis as (pointer, length) pairs, never through a format string.
public protocol RedisArgument: Sendable {
    /// Appends this argument's bytes to `buffer`.
    func appendRedisBytes(to buffer: inout [UInt8])
}

extension String: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}
extension Substring: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
}
extension Array: RedisArgument where Element == UInt8 {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}
extension ArraySlice: RedisArgument where Element == UInt8 {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}
extension Data: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
}
extension Int: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension Int64: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension Int32: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension UInt64: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension UInt32: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: String(self).utf8) }
}
extension Double: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: "\(self)".utf8) }
}

/// One command: its name and arguments, encoded once into a single byte buffer.
///
/// ```swift
/// let set = RedisCommand("SET", "greeting", "hello", "PX", 5000)
/// var mset = RedisCommand("MSET")
/// for (key, value) in pairs { mset.append(key); mset.append(value) }
/// ```
public struct RedisCommand: Sendable, Hashable {
    /// The largest argument Redis accepts (its default `proto-max-bulk-len`).
    public static let maximumArgumentSize = 512 * 1024 * 1024

    @usableFromInline var bytes: [UInt8]
    /// End offset of each argument in `bytes`.
    @usableFromInline var ends: [Int]

    /// A command named `name` with the given arguments.
    @inlinable
    public init<each Argument: RedisArgument>(_ name: String, _ arguments: repeat each Argument) {
        bytes = []
        ends = []
        bytes.reserveCapacity(64)
        append(name)
        for argument in repeat each arguments {
            append(argument)
        }
    }

    /// A command made of a name and an array of arguments of one type.
    public init(_ name: String, arguments: some Sequence<some RedisArgument>) {
        self.init(name)
        for argument in arguments { append(argument) }
    }

    /// Appends one argument.
    @inlinable
    public mutating func append(_ argument: some RedisArgument) {
        argument.appendRedisBytes(to: &bytes)
        ends.append(bytes.count)
    }

    /// Appends several arguments.
    public mutating func append(contentsOf arguments: some Sequence<some RedisArgument>) {
        for argument in arguments { append(argument) }
    }

    /// The number of words, the command name included.
    public var count: Int { ends.count }

    /// The command name as sent (first word).
    public var name: String {
        String(decoding: bytes[0..<(ends.first ?? 0)], as: UTF8.self)
    }

    /// The words of the command: name first, then the arguments.
    public var words: [[UInt8]] {
        var start = 0
        return ends.map { end in
            defer { start = end }
            return Array(bytes[start..<end])
        }
    }

    /// Calls `body` with the command encoded in RESP (`*N` then `$len` and the bytes of each
    /// word): the exact bytes Redis receives. Every length is explicit, so the bytes of a
    /// word are never interpreted. A NUL follows the buffer (not counted in it): hiredis
    /// scans a formatted command with `strchr` to find its words.
    func withRESP<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        var size = 3 + Self.digits(ends.count)
        var start = 0
        for end in ends {
            size += 5 + Self.digits(end - start) + (end - start)
            start = end
        }
        return bytes.withUnsafeBytes { words in
            withUnsafeTemporaryAllocation(byteCount: size + 1, alignment: 1) { buffer in
                var position = 0
                func put(_ byte: UInt8) {
                    buffer[position] = byte
                    position += 1
                }
                func put(_ prefix: UInt8, _ number: Int) {
                    put(prefix)
                    let count = Self.digits(number)
                    var rest = number
                    for index in stride(from: position + count - 1, through: position, by: -1) {
                        buffer[index] = UInt8(truncatingIfNeeded: 0x30 + rest % 10)
                        rest /= 10
                    }
                    position += count
                    put(0x0D)
                    put(0x0A)
                }
                put(0x2A, ends.count)  // *
                var start = 0
                for end in ends {
                    put(0x24, end - start)  // $
                    if end > start {
                        UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + end - start)])
                            .copyMemory(from: UnsafeRawBufferPointer(rebasing: words[start..<end]))
                        position += end - start
                    }
                    put(0x0D)
                    put(0x0A)
                    start = end
                }
                buffer[size] = 0
                return body(UnsafeRawBufferPointer(rebasing: buffer[0..<size]))
            }
        }
    }

    private static func digits(_ number: Int) -> Int {
        var count = 1
        var rest = number
        while rest >= 10 {
            rest /= 10
            count += 1
        }
        return count
    }

    /// `true` when the name (case-insensitively) equals `other`, an upper-case ASCII name.
    func nameEquals(_ upper: StaticString) -> Bool {
        let end = ends.first ?? 0
        guard end == upper.utf8CodeUnitCount else { return false }
        return upper.withUTF8Buffer { expected in
            for i in 0..<end where bytes[i] & 0xDF != expected[i] { return false }
            return true
        }
    }

    /// Commands that take a connection out of request/reply mode (built once, not per send).
    private static let modeChangingCommands: [StaticString] = [
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "MONITOR",
    ]

    /// Checks what can be checked before anything is sent. (`limit` is there for tests.)
    func validate(forSubscriber: Bool = false, limit: Int = RedisCommand.maximumArgumentSize) throws {
        guard let first = ends.first, first > 0 else {
            throw RedisError.invalidArgument("the command name is empty")
        }
        var start = 0
        for (index, end) in ends.enumerated() {
            if end - start > limit {
                throw RedisError.invalidArgument(
                    "argument \(index) of \(name) is \(end - start) bytes, more than Redis accepts (\(limit))")
            }
            start = end
        }
        if !forSubscriber {
            for pubsub in Self.modeChangingCommands where nameEquals(pubsub) {
                throw RedisError.invalidArgument(
                    "\(name) changes the connection's mode; use RedisSubscriber for pub/sub")
            }
        }
    }
}
