// libFuzzer target: reply conversion. Arbitrary bytes go to hiredis's reader, fed in
// chunks (the first byte chooses their size, as replies arrive split across reads), and
// every reply it yields is converted with the package's own conversion, the one a
// connection uses (`ReplyReader` calls `RedisReply(copying:)`). Checked: no crash, no leak
// (ASan), the nesting stays within hiredis's limit, a converted reply written back as RESP
// reads back the same, and every typed decode returns or throws `RedisError`.
// Built by Fuzz/build.sh; one entry point per binary, no `main`.
import Hiredis
import struct Foundation.Data

/// hiredis 0.14 allocates an array's element pointers as soon as it reads `*N`: 12 bytes
/// (`*999999999\r\n`) ask for 8 GB, which libFuzzer would report as out-of-memory although
/// no code of ours is at fault. ASan makes allocations over 64 MB fail instead, so that
/// hiredis's out-of-memory path (a reader error, which closes a connection) is what runs.
@_cdecl("__asan_default_options")
public func asanDefaultOptions() -> UnsafePointer<CChar> {
    UnsafeRawPointer(("allocator_may_return_null=1:max_allocation_size_mb=64" as StaticString).utf8Start)
        .assumingMemoryBound(to: CChar.self)
}

/// hiredis 0.14 reads 9 levels (its `rstack` has 9 tasks): arrays nested 8 deep, and their
/// elements; deeper is a protocol error. (hiredis 1.x grows its stack instead.)
private let maximumDepth = 9

private func depth(_ reply: RedisReply) -> Int {
    guard case .array(let elements) = reply else { return 1 }
    return 1 + (elements.map(depth).max() ?? 0)
}

/// `reply` in RESP2, as a server would send it.
private func encode(_ reply: RedisReply, into out: inout [UInt8]) {
    switch reply {
    case .status(let text): out += Array("+\(text)\r\n".utf8)
    case .error(let text): out += Array("-\(text)\r\n".utf8)
    case .integer(let value): out += Array(":\(value)\r\n".utf8)
    case .bulk(let bytes): out += Array("$\(bytes.count)\r\n".utf8) + bytes + [0x0D, 0x0A]
    case .null: out += Array("$-1\r\n".utf8)
    case .array(let elements):
        out += Array("*\(elements.count)\r\n".utf8)
        for element in elements { encode(element, into: &out) }
    }
}

private func decodes<T: RedisReplyDecodable>(_ reply: RedisReply, as type: T.Type) {
    do {
        _ = try reply.decode(T.self)
    } catch let error as RedisError {
        guard error.code == .wrongReplyType || error.code == .server else {
            fatalError("decode(\(T.self)) threw \(error.code)")
        }
    } catch {
        fatalError("decode(\(T.self)) threw a non-RedisError")
    }
}

private func check(_ reply: RedisReply) {
    guard depth(reply) <= maximumDepth else { fatalError("a reply nested \(depth(reply)) deep") }
    // Written back, it reads back the same. (Status and error text cannot hold "\r\n":
    // it ends the line; invalid UTF-8 in them was already replaced, and stays so.)
    var resp: [UInt8] = []
    encode(reply, into: &resp)
    let reader = ReplyReader()
    let again: RedisReply?
    do {
        try resp.withUnsafeBytes { try reader.feed($0) }
        again = try reader.next()
    } catch {
        fatalError("a converted reply does not read back: \(error)")
    }
    guard again == reply, reader.unreadByteCount == 0 else { fatalError("a converted reply reads back differently") }
    _ = reply.isNull
    _ = reply.hashValue
    decodes(reply, as: String.self)
    decodes(reply, as: String?.self)
    decodes(reply, as: Int.self)
    decodes(reply, as: Int64.self)
    decodes(reply, as: Double.self)
    decodes(reply, as: Bool.self)
    decodes(reply, as: Data.self)
    decodes(reply, as: RedisBytes.self)
    decodes(reply, as: [String?].self)
    decodes(reply, as: [[RedisBytes?]].self)
    decodes(reply, as: [Int].self)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzReply(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: data, count: size)
    guard let first = input.first else { return 0 }
    let bytes = UnsafeRawBufferPointer(rebasing: input.dropFirst())
    let chunk = first == 0 ? max(bytes.count, 1) : Int(first)
    let reader = ReplyReader()
    var offset = 0
    repeat {
        let end = min(offset + chunk, bytes.count)
        do {
            try reader.feed(UnsafeRawBufferPointer(rebasing: bytes[offset..<end]))
            while let reply = try reader.next() { check(reply) }
        } catch let error as RedisError {
            guard error.code == .protocolError else { fatalError("the reader threw \(error.code)") }
            return 0  // not RESP: a connection reports it and closes
        } catch {
            fatalError("the reader threw a non-RedisError")
        }
        offset = end
    } while offset < bytes.count
    return 0
}
