// libFuzzer target: `RedisCommand` encoding, with an oracle. The input is split into words;
// each word's first byte chooses which `RedisArgument` conformance carries the rest. The
// command is encoded, and hiredis's own reader must parse the bytes back into exactly one
// array of bulk strings equal to the words the arguments should produce, with nothing left.
// Built by Fuzz/build.sh; one entry point per binary, no `main`.
import Hiredis

#if canImport(Glibc)
import Glibc
#endif
import struct Foundation.Data

/// An argument that announces a wrong length: the command must measure it.
private struct Miscounted: RedisArgument {
    let bytes: [UInt8]
    let claimed: Int
    func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: bytes) }
    var redisByteCount: Int? { claimed }
}

/// An argument that does not know its length.
private struct Unsized: RedisArgument {
    let bytes: [UInt8]
    func appendRedisBytes(to buffer: inout [UInt8]) { buffer.append(contentsOf: bytes) }
}

private func loadInteger<T: FixedWidthInteger>(_ payload: ArraySlice<UInt8>, as type: T.Type) -> T {
    var value = T.zero
    for byte in payload.prefix(MemoryLayout<T>.size) { value = value << 8 | T(truncatingIfNeeded: byte) }
    return value
}

/// Appends the argument that `word` selects, and returns the bytes it must be sent as.
private func append(_ word: ArraySlice<UInt8>, to command: inout RedisCommand) -> [UInt8] {
    guard let tag = word.first else {
        command.append("")
        return []
    }
    let payload = word.dropFirst()
    switch tag % 12 {
    case 0:
        let string = String(decoding: payload, as: UTF8.self)
        command.append(string)
        return Array(string.utf8)
    case 1:
        let string = String(decoding: payload, as: UTF8.self)
        command.append(string.dropFirst())
        return Array(string.dropFirst().utf8)
    case 2:
        command.append(Array(payload))
        return Array(payload)
    case 3:
        command.append(payload)
        return Array(payload)
    case 4:
        command.append(Data(payload))
        return Array(payload)
    case 5:
        let value = Int(truncatingIfNeeded: loadInteger(payload, as: Int64.self))
        command.append(value)
        return Array(String(value).utf8)
    case 6:
        let value = loadInteger(payload, as: Int64.self)
        command.append(value)
        return Array(String(value).utf8)
    case 7:
        let value = loadInteger(payload, as: Int32.self)
        command.append(value)
        return Array(String(value).utf8)
    case 8:
        let value = loadInteger(payload, as: UInt64.self)
        command.append(value)
        return Array(String(value).utf8)
    case 9:
        let value = loadInteger(payload, as: UInt32.self)
        command.append(value)
        return Array(String(value).utf8)
    case 10:
        let value = Double(bitPattern: loadInteger(payload, as: UInt64.self))
        command.append(value)
        return Array("\(value)".utf8)
    default:
        let bytes = Array(payload.dropFirst())
        if let claim = payload.first, claim & 1 == 0 {
            command.append(Unsized(bytes: bytes))
        } else {
            // Any claim, negative ones too: -64…63.
            command.append(Miscounted(bytes: bytes, claimed: Int(Int8(bitPattern: payload.first ?? 0) >> 1)))
        }
        return bytes
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCommand(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = Array(UnsafeBufferPointer(start: data, count: size))
    guard let separator = input.first else { return 0 }
    let parts = input.dropFirst().split(separator: separator, omittingEmptySubsequences: false)
    let name = String(decoding: parts.first ?? [], as: UTF8.self)
    var command = RedisCommand(name)
    var expected = [Array(name.utf8)]
    for word in parts.dropFirst() { expected.append(append(word, to: &command)) }

    guard command.count == expected.count else { fatalError("count \(command.count), expected \(expected.count)") }
    guard command.words == expected else { fatalError("words differ from the arguments") }
    guard command.name == name else { fatalError("name \(command.name), expected \(name)") }

    // What hiredis (and so Redis) reads back from the bytes that would be sent.
    let reader = ReplyReader()
    let terminated = command.withEncodedBytes { bytes -> Bool in
        do { try reader.feed(bytes) } catch { fatalError("feed: \(error)") }
        return bytes.baseAddress.map { $0.load(fromByteOffset: bytes.count, as: UInt8.self) == 0 } ?? false
    }
    guard terminated else { fatalError("the RESP bytes are not followed by a NUL") }
    let reply: RedisReply?
    do { reply = try reader.next() } catch { fatalError("hiredis rejected the encoding: \(error)") }
    guard reply == .array(expected.map { .bulk($0) }) else {
        fatalError("hiredis parsed \(reply.map { "\($0)" } ?? "nothing") from the encoding")
    }
    guard reader.unreadByteCount == 0 else { fatalError("\(reader.unreadByteCount) bytes after the command") }

    // The same words through `init(_:arguments:)` give the same bytes.
    let again = RedisCommand(name, arguments: expected.dropFirst())
    guard again == command else { fatalError("init(_:arguments:) encodes differently") }
    return 0
}
