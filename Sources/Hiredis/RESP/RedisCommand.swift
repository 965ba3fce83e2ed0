import struct Foundation.Data

/// A value that can be sent as one argument of a command. Arguments are binary-safe:
/// their length is sent before their bytes, which are never interpreted.
public protocol RedisArgument: Sendable {
    /// Appends this argument's bytes to `buffer`.
    func appendRedisBytes(to buffer: inout [UInt8])
    /// How many bytes ``appendRedisBytes(to:)`` appends, when that is known without
    /// appending them (the command then writes the length first and moves nothing);
    /// `nil` by default.
    var redisByteCount: Int? { get }
}

extension RedisArgument {
    @inlinable public var redisByteCount: Int? { nil }
}

extension String: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
    @inlinable public var redisByteCount: Int? { utf8.count }
}
extension Substring: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: utf8) }
    @inlinable public var redisByteCount: Int? { utf8.count }
}
extension Array: RedisArgument where Element == UInt8 {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
    @inlinable public var redisByteCount: Int? { count }
}
extension ArraySlice: RedisArgument where Element == UInt8 {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
    @inlinable public var redisByteCount: Int? { count }
}
extension Data: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: self) }
    @inlinable public var redisByteCount: Int? { count }
}
extension Int: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { appendDecimal(Int64(self), to: &buffer) }
    @inlinable public var redisByteCount: Int? { decimalCount(Int64(self)) }
}
extension Int64: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { appendDecimal(self, to: &buffer) }
    @inlinable public var redisByteCount: Int? { decimalCount(self) }
}
extension Int32: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { appendDecimal(Int64(self), to: &buffer) }
    @inlinable public var redisByteCount: Int? { decimalCount(Int64(self)) }
}
extension UInt64: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { appendDecimal(magnitude: self, negative: false, to: &buffer) }
    @inlinable public var redisByteCount: Int? { RedisCommand.digits(self) }
}
extension UInt32: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { appendDecimal(Int64(self), to: &buffer) }
    @inlinable public var redisByteCount: Int? { decimalCount(Int64(self)) }
}
extension Double: RedisArgument {
    @inlinable public func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: "\(self)".utf8) }
}

/// Appends `value` in decimal ASCII, as Redis reads integers.
@inlinable
func appendDecimal(_ value: Int64, to buffer: inout [UInt8]) {
    appendDecimal(magnitude: value.magnitude, negative: value < 0, to: &buffer)
}

@inlinable
func appendDecimal(magnitude: UInt64, negative: Bool, to buffer: inout [UInt8]) {
    if negative { buffer.append(0x2D) }  // -
    let start = buffer.count
    let count = RedisCommand.digits(magnitude)
    buffer.append(contentsOf: repeatElement(0x30, count: count))
    var rest = magnitude
    var index = start + count - 1
    while rest > 0 {
        buffer[index] = UInt8(truncatingIfNeeded: 0x30 &+ rest % 10)
        rest /= 10
        index -= 1
    }
}

@inlinable
func decimalCount(_ value: Int64) -> Int {
    RedisCommand.digits(value.magnitude) + (value < 0 ? 1 : 0)
}

/// One command: its name and arguments, encoded once, when built, into the bytes Redis
/// receives (RESP: `*N`, then `$len` and the bytes of each word; every length explicit).
///
/// ```swift
/// let set = RedisCommand("SET", "greeting", "hello", "PX", 5000)
/// var mset = RedisCommand("MSET")
/// for (key, value) in pairs { mset.append(key); mset.append(value) }
/// ```
public struct RedisCommand: Sendable, Hashable {
    /// The largest argument Redis accepts (its default `proto-max-bulk-len`).
    public static let maximumArgumentSize = 512 * 1024 * 1024

    /// The RESP encoding, then a NUL that is not part of it (hiredis scans a formatted
    /// command with `strchr`).
    @usableFromInline var resp: [UInt8]
    /// The number of words, the command name included.
    public var count: Int { wordCount }
    @usableFromInline var wordCount: Int
    /// The size of the largest word, for `validate`.
    @usableFromInline var largestWord: Int

    /// A command named `name` with the given arguments.
    @inlinable
    public init<each Argument: RedisArgument>(_ name: String, _ arguments: repeat each Argument) {
        resp = []
        resp.reserveCapacity(64)
        resp.append(contentsOf: [0x2A, 0x30, 0x0D, 0x0A, 0])  // "*0\r\n", NUL
        wordCount = 0
        largestWord = 0
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
        appendWord(length: argument.redisByteCount) { argument.appendRedisBytes(to: &$0) }
    }

    /// Appends several arguments.
    public mutating func append(contentsOf arguments: some Sequence<some RedisArgument>) {
        for argument in arguments { append(argument) }
    }

    /// Appends one word, which `write` appends to the buffer, with its `$len` before it.
    /// `length` is what the argument says it will write, if it knows.
    @usableFromInline
    mutating func appendWord(length expected: Int?, _ write: (inout [UInt8]) -> Void) {
        resp.removeLast()  // the NUL
        let prefixStart = resp.count
        if let expected { appendLengthPrefix(expected) }
        let start = resp.count
        write(&resp)
        let length = resp.count - start
        if length != expected {
            // Measured after the fact (or the argument miscounted): the short "$len\r\n"
            // goes in front of the bytes, which moves them once.
            resp.removeSubrange(prefixStart..<start)
            resp.insert(contentsOf: [0x24] + Array(String(length).utf8) + [0x0D, 0x0A], at: prefixStart)
        }
        resp.append(0x0D)
        resp.append(0x0A)
        resp.append(0)
        largestWord = Swift.max(largestWord, length)
        setCount(wordCount + 1)
    }

    /// Appends `$length\r\n`.
    @usableFromInline
    mutating func appendLengthPrefix(_ length: Int) {
        resp.append(0x24)  // $
        appendDecimal(Int64(length), to: &resp)
        resp.append(0x0D)
        resp.append(0x0A)
    }

    /// Rewrites the `*N` header for `newCount` words.
    @usableFromInline
    mutating func setCount(_ newCount: Int) {
        let oldDigits = Self.digits(wordCount)
        let newDigits = Self.digits(newCount)
        if newDigits > oldDigits {
            resp.insert(contentsOf: repeatElement(0x30, count: newDigits - oldDigits), at: 1)
        }
        wordCount = newCount
        resp.withUnsafeMutableBufferPointer { _ = Self.putDecimal(newCount, into: $0, at: 1) }
    }

    /// Writes `number` in decimal at `position`; returns the position after it.
    @usableFromInline
    static func putDecimal(_ number: Int, into buffer: UnsafeMutableBufferPointer<UInt8>, at position: Int) -> Int {
        let end = position + digits(number)
        var rest = number
        var index = end - 1
        repeat {
            buffer[index] = UInt8(truncatingIfNeeded: 0x30 + rest % 10)
            rest /= 10
            index -= 1
        } while index >= position
        return end
    }

    @usableFromInline
    static func digits(_ number: Int) -> Int {
        digits(UInt64(number))
    }

    /// Decimal digits of `number` (1 for 0).
    @inlinable
    static func digits(_ number: UInt64) -> Int {
        var count = 1
        var rest = number
        while rest >= 10 {
            rest /= 10
            count += 1
        }
        return count
    }

    /// The command name as sent (first word).
    public var name: String {
        String(decoding: resp[firstWord], as: UTF8.self)
    }

    /// The words of the command: name first, then the arguments.
    public var words: [[UInt8]] {
        wordRanges.map { Array(resp[$0]) }
    }

    /// The word whose `$len` prefix starts at `position` ("$" digits "\r\n" bytes "\r\n"):
    /// where its bytes are in `resp`, and where the next word starts.
    private func word(at position: Int) -> (bytes: Range<Int>, next: Int) {
        var position = position + 1  // after "$"
        var length = 0
        while resp[position] != 0x0D {
            length = length * 10 + Int(resp[position] &- 0x30)
            position += 1
        }
        let start = position + 2
        return (start..<(start + length), start + length + 2)
    }

    /// Where the name's bytes are in `resp`.
    private var firstWord: Range<Int> {
        count > 0 ? word(at: Self.headerLength(count)).bytes : 0..<0
    }

    /// Where every word's bytes are in `resp`, in one walk.
    private var wordRanges: [Range<Int>] {
        var ranges: [Range<Int>] = []
        ranges.reserveCapacity(count)
        var position = Self.headerLength(count)
        for _ in 0..<count {
            let word = word(at: position)
            ranges.append(word.bytes)
            position = word.next
        }
        return ranges
    }

    private static func headerLength(_ count: Int) -> Int { 3 + digits(count) }

    /// Calls `body` with each word's bytes in order (the name first) until it returns
    /// `false`; copies nothing (for routing a command by its keys).
    func forEachWord(_ body: (Int, UnsafeRawBufferPointer) throws -> Bool) rethrows {
        var position = Self.headerLength(count)
        try resp.withUnsafeBytes { bytes in
            for index in 0..<count {
                let word = word(at: position)
                guard try body(index, UnsafeRawBufferPointer(rebasing: bytes[word.bytes])) else { return }
                position = word.next
            }
        }
    }

    /// Calls `body` with the command encoded in RESP: the exact bytes Redis receives. A NUL
    /// follows the buffer (not counted in it): hiredis scans a formatted command with
    /// `strchr` to find its words.
    func withRESP<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        resp.withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0.dropLast())) }
    }

    /// `true` when the name (case-insensitively) equals `other`, an upper-case ASCII name.
    func nameEquals(_ upper: StaticString) -> Bool {
        nameEquals(upper, firstWord)
    }

    private func nameEquals(_ upper: StaticString, _ name: Range<Int>) -> Bool {
        guard name.count == upper.utf8CodeUnitCount else { return false }
        return resp.withUnsafeBufferPointer { bytes in
            upper.withUTF8Buffer { expected in
                for i in 0..<name.count where bytes[name.lowerBound + i] & 0xDF != expected[i] { return false }
                return true
            }
        }
    }

    /// Commands that take a connection out of request/reply mode (built once, not per send).
    private static let modeChangingCommands: [StaticString] = [
        "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "UNSUBSCRIBE", "PUNSUBSCRIBE", "MONITOR",
    ]

    /// Checks what can be checked before anything is sent. (`limit` is there for tests.)
    func validate(forSubscriber: Bool = false, limit: Int = RedisCommand.maximumArgumentSize) throws {
        let first = firstWord
        guard !first.isEmpty else {
            throw RedisError.invalidArgument("the command name is empty")
        }
        if largestWord > limit {
            let ranges = wordRanges
            let index = ranges.firstIndex { $0.count > limit } ?? 0
            throw RedisError.invalidArgument(
                "argument \(index) of \(name) is \(ranges[index].count) bytes, more than Redis accepts (\(limit))")
        }
        if !forSubscriber {
            for pubsub in Self.modeChangingCommands where nameEquals(pubsub, first) {
                throw RedisError.invalidArgument(
                    "\(name) changes the connection's mode; use RedisSubscriber for pub/sub")
            }
        }
    }
}
