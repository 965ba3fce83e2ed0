import CHiredis

/// hiredis's reply reader without a connection: RESP bytes in, ``RedisReply`` values out,
/// each converted by the same `RedisReply(copying:)` that a connection's reply callback
/// uses. For the fuzzers in `Fuzz/` and for tests; `package`, so no C type leaks out.
///
/// Not `Sendable`: one reader is used by one thread.
package final class ReplyReader {
    private let reader: UnsafeMutablePointer<redisReader>
    private let cache: UnsafeMutablePointer<hiredis_kit_reply_cache>

    package init() {
        guard let reader = redisReaderCreate(), let cache = hiredis_kit_reply_cache_create() else {
            fatalError("ReplyReader: out of memory")
        }
        hiredis_kit_reader_use_cache(reader, cache)  // as a connection's reader does
        self.reader = reader
        self.cache = cache
    }

    deinit {
        redisReaderFree(reader)  // frees a reply it was still building, into the cache
        hiredis_kit_reply_cache_destroy(cache)
    }

    /// Appends `bytes` to the reader's buffer. Throws ``RedisError/Code/protocolError``
    /// when the reader has already failed (it stays failed).
    package func feed(_ bytes: UnsafeRawBufferPointer) throws {
        let status = redisReaderFeed(reader, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        if status != REDIS_OK { throw error }
    }

    /// The next complete reply, or `nil` when more bytes are needed. Throws
    /// ``RedisError/Code/protocolError`` with hiredis's message when the bytes are not RESP
    /// (as a connection then reports them); the reader stays failed.
    package func next() throws -> RedisReply? {
        var raw: UnsafeMutableRawPointer?
        guard redisReaderGetReply(reader, &raw) == REDIS_OK else { throw error }
        guard let raw else { return nil }
        defer { hiredis_kit_free_reply(raw) }
        return RedisReply(copying: raw.assumingMemoryBound(to: redisReply.self))
    }

    /// Bytes fed and not yet consumed by a complete reply.
    package var unreadByteCount: Int { reader.pointee.len - reader.pointee.pos }

    private var error: RedisError {
        let message = withUnsafeBytes(of: reader.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return RedisError(.protocolError, message.isEmpty ? "hiredis reader error \(reader.pointee.err)" : message)
    }
}

extension RedisCommand {
    /// Calls `body` with the exact bytes Redis receives for this command (RESP). The byte
    /// after the buffer (not counted in it) is a NUL, for hiredis's `strchr`.
    package func withEncodedBytes<Result>(_ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        withRESP(body)
    }
}
