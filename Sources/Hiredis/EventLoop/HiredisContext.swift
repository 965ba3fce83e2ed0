import CHiredis
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a ``HiredisContext`` reports to its connection, in the order hiredis reported it.
enum HiredisEvent {
    /// The non-blocking connect finished (`nil`) or failed.
    case connected(RedisError?)
    /// The reply to the oldest outstanding command; `nil` when the connection went away
    /// before it arrived (hiredis calls every pending callback with NULL on teardown).
    case reply(RedisReply?)
    /// A pub/sub reply (subscribe confirmation or message) on a subscribed connection.
    case push(RedisReply)
    /// An established connection closed: `nil` after a graceful disconnect.
    case disconnected(RedisError?)
}

/// One `redisAsyncContext` and the Dispatch sources that drive it: the hiredis event-loop
/// adapter. This file holds all of the package's unsafe pointer code.
///
/// Like hiredis's own adapters (`adapters/libuv.h`, `adapters/ae.h`) it installs five
/// idempotent hooks (`addRead`, `delRead`, `addWrite`, `delWrite`, `cleanup`) in `ev`,
/// backed by a `DispatchSourceRead` and a `DispatchSourceWrite` on the connection's queue.
///
/// - The sources watch `dup()`s of hiredis's socket and close them in their cancel
///   handlers: hiredis closes its own fd in `redisFree` while Dispatch may still hold it,
///   and libdispatch on Linux misbehaves when a watched fd number is reused.
/// - The sources are created once, then `resume()`d/`suspend()`ed; a suspended source is
///   resumed before it is cancelled.
/// - Writes are coalesced: while connected, `addWrite` only notes that something is to be
///   written, and the owner says when with ``flush(now:)``: at once, or on a later turn of
///   the queue (so concurrent commands share one `write(2)`). The write source is armed
///   only when the kernel buffer is full.
/// - A caller alone on the connection reads its reply on its own thread, with the read
///   source parked (``readInline(budget:idle:until:)``).
/// - What hiredis reports is queued as ``HiredisEvent``s and handed to the connection in
///   order, all the replies of one read under one isolation check (see `deliver()`).
/// - A context is used for one connection attempt. It is never freed inside a hiredis
///   callback: ``freeSoon(reason:)`` defers to the queue.
///
/// `@unchecked Sendable` is safe because every stored property (and every hiredis call)
/// is touched only on `queue`: the owner calls in from jobs on that queue (it is the
/// owning actor's executor), and the Dispatch sources and deferred blocks run on it.
final class HiredisContext: @unchecked Sendable {
    let queue: DispatchQueue
    /// Weak: the connection owns its context, and a context being freed on its queue
    /// after the connection was dropped must find nobody to call.
    weak var delegate: RedisConnection?
    /// Reported by hiredis and not yet handed to the delegate (see `deliver()`).
    private var events: [HiredisEvent] = []
    /// `deliver()` is running: events reported meanwhile join its loop.
    private var delivering = false
    /// Inside `redisAsyncHandleRead`: its replies are delivered once it returns.
    private var inRead = false

    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    /// hiredis wants to read (`addRead`/`delRead`).
    private var reading = false
    /// The read source is parked: a caller reads inline (see ``readInline(budget:idle:until:)``).
    private var parked = false
    /// The read source's real state (resumed), which is `reading && !parked`.
    private var readSourceActive = false
    private var parkTimer: DispatchWorkItem?
    /// Inline reads so far: the park timer compares it with what it saw last time.
    private var inlineReads: UInt64 = 0
    private var writing = false
    private var connected = false
    /// Commands were appended and not written yet (see ``flush(now:)``).
    private var writePending = false
    private var flushScheduled = false
    private var inHandleWrite = false
    private var isTCP = false
    /// Why we freed the context ourselves: hiredis reports `REDIS_OK` after `redisAsyncFree`.
    private var abortReason: RedisError?
    /// Inside ``append(_:subscription:)``: hiredis's `addWrite` then means "a command was
    /// appended" (the owner flushes); at other times it means the socket must be watched.
    private var appending = false
    /// The connection's `SSL` object when it uses TLS. hiredis owns it and frees it with
    /// the context: it is forgotten when the context goes (see `forgetTLS()`).
    private var ssl: OpaquePointer?
    private var tls: TLSLibrary?
    /// The server's certificate is verified (a failure is a verification error).
    private var tlsVerifying = false
    /// A reply arrived over this TLS connection (see ``TLSLibrary/failure(of:verifying:answered:endpoint:hiredisMessage:)``).
    private var tlsAnswered = false
    private var endpointName = ""

    /// Where the reader takes its reply objects from (see `shim.h`). Freed in `deinit`,
    /// after hiredis freed the reader: hiredis calls into this object only while its
    /// context lives (its hooks and callbacks find it unretained through `ac->data`).
    private let replyCache = hiredis_kit_reply_cache_create()

    init(queue: DispatchQueue) {
        self.queue = queue
        _ = Self.sigpipeIgnored
    }

    deinit {
        hiredis_kit_reply_cache_destroy(replyCache)
    }

    /// hiredis writes with `write(2)`, which raises SIGPIPE when the server has gone away
    /// (a killed primary, a restart), and SIGPIPE's default action ends the process. So the
    /// first connection sets SIGPIPE to be ignored, unless the application installed a
    /// handler of its own; the write then fails with EPIPE, and the connection is lost as it
    /// should be. (Server frameworks, SwiftNIO among them, do the same.)
    private static let sigpipeIgnored: Void = {
        var current = sigaction()
        guard sigaction(SIGPIPE, nil, &current) == 0 else { return }
        // SIG_DFL is the null handler.
        #if canImport(Darwin)
        let isDefault = current.__sigaction_u.__sa_handler == nil
        #else
        let isDefault = current.__sigaction_handler.sa_handler == nil
        #endif
        if isDefault { _ = signal(SIGPIPE, SIG_IGN) }
    }()

    /// `true` while the hiredis context exists.
    var isOpen: Bool { context != nil }

    // MARK: Connecting

    /// Starts a non-blocking connect; the outcome arrives through the delegate. Returns an
    /// error (and the delegate hears nothing) when the attempt failed at once.
    func connect(to endpoint: RedisConfiguration.Endpoint, tls configuration: RedisTLSConfiguration? = nil) -> RedisError? {
        dispatchPrecondition(condition: .onQueue(queue))
        precondition(context == nil, "a HiredisContext is used for one connection only")
        let made: UnsafeMutablePointer<redisAsyncContext>?
        switch endpoint {
        case .tcp(let host, let port): made = redisAsyncConnect(host, Int32(port))
        case .unixSocket(let path): made = redisAsyncConnectUnix(path)
        }
        guard let ac = made else { return RedisError(.connectionFailed, "\(endpoint): out of memory") }
        if ac.pointee.err != 0 {
            let message = ac.pointee.errstr.map { String(cString: $0) } ?? "error \(ac.pointee.err)"
            redisAsyncFree(ac)  // not connected and no hooks attached: frees at once, calls nothing
            return RedisError(.connectionFailed, "\(endpoint): \(message)")
        }
        // Replies are built from this context's cache of `redisReply` nodes (see shim.h):
        // no malloc and free per reply.
        if let replyCache { hiredis_kit_reader_use_cache(ac.pointee.c.reader, replyCache) }
        if let configuration, let error = startTLS(on: ac, configuration, endpoint: endpoint) {
            redisAsyncFree(ac)
            return error
        }
        let readFD = dup(ac.pointee.c.fd)
        let writeFD = dup(ac.pointee.c.fd)
        guard readFD >= 0, writeFD >= 0 else {
            let message = String(cString: strerror(errno))
            if readFD >= 0 { close(readFD) }
            redisAsyncFree(ac)
            return RedisError(.connectionFailed, "\(endpoint): dup: \(message)")
        }
        context = ac
        if case .tcp = endpoint { isTCP = true }

        let read = DispatchSource.makeReadSource(fileDescriptor: readFD, queue: queue)
        read.setEventHandler { [self] in
            guard let ac = context else { return }
            handleRead(ac)
        }
        read.setCancelHandler { close(readFD) }
        let write = DispatchSource.makeWriteSource(fileDescriptor: writeFD, queue: queue)
        write.setEventHandler { [self] in handleWrite() }
        write.setCancelHandler { close(writeFD) }
        readSource = read
        writeSource = write

        let me = Unmanaged.passUnretained(self).toOpaque()
        ac.pointee.data = me
        ac.pointee.ev.data = me
        ac.pointee.ev.addRead = { HiredisContext.with($0) { $0.addRead() } }
        ac.pointee.ev.delRead = { HiredisContext.with($0) { $0.delRead() } }
        ac.pointee.ev.addWrite = { HiredisContext.with($0) { $0.addWrite() } }
        ac.pointee.ev.delWrite = { HiredisContext.with($0) { $0.delWrite() } }
        ac.pointee.ev.cleanup = { HiredisContext.with($0) { $0.cleanup() } }
        // Setting the connect callback arms the write hook: the first writable event
        // completes the non-blocking connect.
        redisAsyncSetConnectCallback(ac, hiredisConnectCallback)
        redisAsyncSetDisconnectCallback(ac, hiredisDisconnectCallback)
        return nil
    }

    /// Hands hiredis a configured `SSL` object right after the connect started (before any
    /// byte is written): the handshake then runs within hiredis's reads and writes.
    private func startTLS(on ac: UnsafeMutablePointer<redisAsyncContext>, _ configuration: RedisTLSConfiguration,
                          endpoint: RedisConfiguration.Endpoint) -> RedisError? {
        endpointName = "\(endpoint)"  // for TLS errors only
        let library: TLSLibrary
        switch TLSLibrary.shared {
        case .success(let found): library = found
        case .failure(let error): return error
        }
        let host: String?
        switch endpoint {
        case .tcp(let name, _): host = name
        case .unixSocket: host = nil
        }
        do {
            let made = try library.makeSSL(configuration, host: host)
            // `c` is the first member of redisAsyncContext.
            let context = UnsafeMutableRawPointer(ac).assumingMemoryBound(to: redisContext.self)
            if let error = library.initiate(made, on: context, verifying: configuration.verifyPeer, endpoint: endpointName) {
                return error
            }
            ssl = made
            tls = library
            tlsVerifying = configuration.verifyPeer
            return nil
        } catch {
            return error
        }
    }

    /// Called when hiredis frees (or has freed) the context, and `ssl` with it.
    private func forgetTLS() {
        ssl = nil
    }

    /// A TLS connection whose handshake has not completed yet.
    var tlsHandshakePending: Bool {
        guard context != nil, let ssl, let tls else { return false }
        return !tls.handshakeFinished(ssl)
    }

    /// The TLS reason for a failure hiredis reported as `message`, if TLS is the reason.
    private func tlsFailure(_ message: String) -> RedisError? {
        guard let ssl, let tls else { return nil }
        return tls.failure(of: ssl, verifying: tlsVerifying, answered: tlsAnswered, endpoint: endpointName, hiredisMessage: message)
    }

    // MARK: Commands

    /// Appends one command; its reply (or NULL) reaches the delegate in FIFO order.
    /// Returns `false` when the context is closing or gone (nothing was registered).
    func send(_ command: RedisCommand) -> Bool {
        append(command, subscription: false)
    }

    /// Appends a (P)SUBSCRIBE or (P)UNSUBSCRIBE; its confirmations and the messages that
    /// follow reach the delegate as pushes.
    func sendSubscription(_ command: RedisCommand) -> Bool {
        append(command, subscription: true)
    }

    private func append(_ command: RedisCommand, subscription: Bool) -> Bool {
        guard let ac = context else { return false }
        appending = true
        defer { appending = false }
        // The command is encoded in RESP by `RedisCommand`, with explicit lengths (never
        // a format string); hiredis copies the bytes into its output buffer.
        return command.withRESP { resp -> Bool in
            let bytes = resp.baseAddress!.assumingMemoryBound(to: CChar.self)
            let status = subscription
                ? redisAsyncFormattedCommand(ac, hiredisPushCallback, nil, bytes, resp.count)
                : redisAsyncFormattedCommand(ac, hiredisReplyCallback, nil, bytes, resp.count)
            return status == REDIS_OK
        }
    }

    // MARK: Closing

    /// Graceful: hiredis stops accepting commands, waits for the pending replies, then
    /// closes; the delegate hears `hiredisContextDidDisconnect(error: nil)`.
    func disconnect() {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let ac = context else { return }
        redisAsyncDisconnect(ac)
    }

    /// Aborts at once, outside any hiredis callback: pending replies get NULL, and the
    /// delegate hears `hiredisContextDidDisconnect(error: reason)` if it was connected.
    func free(reason: RedisError) {
        dispatchPrecondition(condition: .onQueue(queue))
        guard let ac = context else { return }
        abortReason = reason
        redisAsyncFree(ac)
        forgetTLS()
    }

    /// ``free(reason:)`` on a later turn of the queue: safe from inside a callback.
    func freeSoon(reason: RedisError) {
        queue.async { [self] in free(reason: reason) }
    }

    // MARK: Event-loop hooks (called by hiredis on the queue)

    /// Runs `body` on the context that `pointer` (`ac->data` or `ac->ev.data`) names,
    /// without retaining it: hiredis calls only while the context is alive, since
    /// `cleanup()` runs before hiredis frees its context.
    private static func with<R>(_ pointer: UnsafeRawPointer?, _ body: (HiredisContext) -> R) -> R {
        Unmanaged<HiredisContext>.fromOpaque(pointer!)._withUnsafeGuaranteedRef(body)
    }

    private func addRead() {
        reading = true
        updateReadSource()
    }

    private func delRead() {
        reading = false
        updateReadSource()
    }

    private func updateReadSource() {
        let active = reading && !parked
        guard active != readSourceActive, let readSource else { return }
        readSourceActive = active
        if active { readSource.resume() } else { readSource.suspend() }
    }

    private func addWrite() {
        if connected && !inHandleWrite && appending {
            // A command was appended: the owner says when to write (`flush(now:)`).
            writePending = true
        } else {
            // Waiting for the connect to finish, the socket buffer is full, or TLS has to
            // write after a read: wait for the kernel to say the socket is writable.
            armWriteSource()
        }
    }

    private func delWrite() {
        guard writing, let writeSource else { return }
        writing = false
        writeSource.suspend()
    }

    private func armWriteSource() {
        guard !writing, let writeSource else { return }
        writing = true
        writeSource.resume()
    }

    /// Writes the commands appended so far: `now` on this thread, or on a later turn of
    /// the queue, so that commands submitted meanwhile share one `write(2)`. Inside a
    /// hiredis callback (hiredis 1.x asserts on a write there, and 0.14 is not reentrant
    /// either) it is always later; while the kernel buffer is full the write source does it.
    func flush(now: Bool) {
        guard writePending, !inHandleWrite, !writing, let ac = context else { return }
        if now && Int(ac.pointee.c.flags) & Int(REDIS_IN_CALLBACK) == 0 {
            flushScheduled = false
            handleWrite()
        } else {
            scheduleFlush()
        }
    }

    private func scheduleFlush() {
        guard !flushScheduled, !writing else { return }
        flushScheduled = true
        queue.async { [self] in
            guard flushScheduled else { return }  // flushed already by flush(now: true)
            flushScheduled = false
            guard !writing, writePending else { return }  // the write source took over
            handleWrite()
        }
    }

    // MARK: Reading on the caller's thread

    /// Reads replies on the calling thread, which is running the queue (through `sync`),
    /// until `satisfied()` or `budget` nanoseconds have passed: the socket is waited on
    /// with `ppoll(2)`, so the kernel wakes this very thread when the reply arrives.
    ///
    /// The read source is parked meanwhile, and stays parked while such reads follow one
    /// another; otherwise every reply would also wake Dispatch's event thread and then a
    /// worker for the queue, only to find nothing left to read. It is unparked when the
    /// budget runs out (the reply is then read the usual way), when ``unpark()`` is
    /// called, and after `idle` to 2 × `idle` nanoseconds without an inline read, so that a
    /// connection closed by the server while idle is still noticed. Returns `false` when
    /// the budget ran out first. Not from inside a hiredis callback.
    func readInline(budget: UInt64, idle: UInt64, until satisfied: () -> Bool) -> Bool {
        // Not while a write is left to the write source or the queue: the reply cannot
        // come before it is written, and neither can run while this holds the queue.
        guard connected, reading, !writing, !writePending, let ac = context,
              Int(ac.pointee.c.flags) & Int(REDIS_IN_CALLBACK) == 0 else {
            unpark()  // the reply is read the usual way
            return false
        }
        if !parked {
            parked = true
            updateReadSource()
            armParkTimer(after: idle)
        }
        let start = DispatchTime.now().uptimeNanoseconds
        var elapsed: UInt64 = 0  // the clock is read again only if the first wait is not enough
        while true {
            guard let ac = context else { return satisfied() }
            guard elapsed < budget else {
                unpark()
                return false
            }
            let ready = hiredis_kit_wait_readable(ac.pointee.c.fd, Int64(budget - elapsed))
            if ready < 0 && errno == EINTR {
                elapsed = DispatchTime.now().uptimeNanoseconds &- start
                continue
            }
            guard ready > 0 else {
                unpark()
                return false
            }
            handleRead(ac)
            if satisfied() {
                inlineReads &+= 1
                return true
            }
            elapsed = DispatchTime.now().uptimeNanoseconds &- start
        }
    }

    /// Reads what the socket has now, before a caller on its own thread appends a command:
    /// a close by the server while the connection was idle is noticed before the command
    /// is written (the command then waits for the reconnection instead of being written
    /// to a dead socket). The read source would notice it too, but it is parked, or
    /// cannot run before this caller lets go of the queue.
    func readPending() {
        guard connected, let ac = context, Int(ac.pointee.c.flags) & Int(REDIS_IN_CALLBACK) == 0 else { return }
        if hiredis_kit_wait_readable(ac.pointee.c.fd, 0) > 0 {
            handleRead(ac)
        }
    }

    /// Hands reading back to the read source (a command is about to be read the usual way).
    func unpark() {
        guard parked else { return }
        parked = false
        parkTimer?.cancel()
        parkTimer = nil
        updateReadSource()
    }

    private func armParkTimer(after idle: UInt64) {
        // A strong capture: a weak reference would move this object's reference counts
        // to a side table, which costs on every callback. The item is cancelled and
        // dropped by `unpark()` or `cleanup()`, or runs within `idle`.
        let seen = inlineReads
        let item = DispatchWorkItem { [self] in
            guard parked else { return }
            if inlineReads == seen { unpark() } else { armParkTimer(after: idle) }
        }
        parkTimer = item
        queue.asyncAfter(deadline: .now() + .nanoseconds(Int(clamping: idle)), execute: item)
    }

    private func handleRead(_ ac: UnsafeMutablePointer<redisAsyncContext>) {
        inRead = true
        if ssl != nil, let tls { tls.clearErrors() }  // what OpenSSL reports next is this read's
        redisAsyncHandleRead(ac)  // may free `ac` (the server closed): not touched after
        inRead = false
        deliver()
    }

    /// Queues what hiredis reported; delivers it at once unless a read is under way (its
    /// replies go together when it returns) or a delivery is (the event joins its loop).
    private func report(_ event: HiredisEvent) {
        events.append(event)
        if !inRead { deliver() }
    }

    /// Hands the queued events to the delegate, oldest first, under one isolation check.
    /// The delegate may call back into this context meanwhile (to write, or to free it,
    /// which reports more events): those join the loop, so the order is always hiredis's.
    private func deliver() {
        guard !delivering, !events.isEmpty else { return }
        guard let delegate else {
            events.removeAll()
            return
        }
        delivering = true
        delegate.assumeIsolated { connection in
            var index = 0
            while index < events.count {
                let event = events[index]
                index += 1
                connection.handle(event, from: self)
            }
        }
        events.removeAll(keepingCapacity: events.capacity <= 1024)
        delivering = false
    }

    private func handleWrite() {
        guard let ac = context else { return }
        writePending = false
        inHandleWrite = true
        if ssl != nil, let tls { tls.clearErrors() }
        redisAsyncHandleWrite(ac)
        inHandleWrite = false
    }

    private func cleanup() {
        // hiredis is about to free the context (it closes its own fd in redisFree).
        parkTimer?.cancel()
        parkTimer = nil
        if let readSource {
            if !readSourceActive { readSource.resume() }
            readSource.cancel()
        }
        if let writeSource {
            if !writing { writeSource.resume() }
            writeSource.cancel()
        }
        readSource = nil
        writeSource = nil
        reading = false
        parked = false
        readSourceActive = false
        writePending = false
        writing = false
        context = nil
        // `ssl` stays: hiredis 1.x runs this hook before the disconnect callback, which
        // still reads it (hiredis frees it after both); that callback forgets it.
    }

    // MARK: Callbacks from hiredis (C function pointers cannot capture: they find the
    // context through `ac->data`)

    fileprivate static func didConnect(_ ac: UnsafePointer<redisAsyncContext>, status: Int32) {
        with(ac.pointee.data) { $0.didConnect(ac, status: status) }
    }

    private func didConnect(_ ac: UnsafePointer<redisAsyncContext>, status: Int32) {
        if status == REDIS_OK {
            connected = true
            if isTCP {
                // Notices a peer that vanished without a FIN (hiredis: 15 s idle). Not for
                // unix sockets: setting TCP options there fails and poisons the context.
                // `c` is the first member of redisAsyncContext.
                redisEnableKeepAlive(UnsafeMutableRawPointer(mutating: ac).assumingMemoryBound(to: redisContext.self))
            }
            report(.connected(nil))
        } else {
            let message = ac.pointee.errstr.map { String(cString: $0) } ?? "connect failed"
            // Once the TLS handshake began (on loopback hiredis's first `SSL_connect` writes
            // the hello before it has seen the connect complete), TLS explains the failure,
            // as on any later one: a server that requires client certificates can reset a
            // client that gave none that early.
            let error = tlsFailure(message) ?? RedisError(.connectionFailed, message)
            forgetTLS()  // hiredis frees the context once this returns
            report(.connected(error))
        }
    }

    fileprivate static func didDisconnect(_ ac: UnsafePointer<redisAsyncContext>, status: Int32) {
        with(ac.pointee.data) { me in
            me.connected = false
            var error = me.abortReason
            if status != REDIS_OK {
                let message = ac.pointee.errstr.map { String(cString: $0) } ?? "connection lost"
                // REDIS_ERR_PROTOCOL: the server sent bytes hiredis could not parse.
                error = me.tlsFailure(message)
                    ?? RedisError(ac.pointee.err == REDIS_ERR_PROTOCOL ? .protocolError : .connectionClosed, message)
            }
            me.forgetTLS()  // hiredis frees the context, and `ssl`, once this returns
            me.report(.disconnected(error))
        }
    }

    fileprivate static func didReply(_ ac: UnsafeMutablePointer<redisAsyncContext>, reply: UnsafeMutableRawPointer?) {
        let value = reply.map { RedisReply(copying: $0.assumingMemoryBound(to: redisReply.self)) }
        with(ac.pointee.data) { me in
            if value != nil, me.ssl != nil { me.tlsAnswered = true }
            me.report(.reply(value))
        }
    }

    fileprivate static func didPush(_ ac: UnsafeMutablePointer<redisAsyncContext>, reply: UnsafeMutableRawPointer?) {
        // NULL: the context is being freed; the disconnect callback follows.
        guard let reply else { return }
        let value = RedisReply(copying: reply.assumingMemoryBound(to: redisReply.self))
        with(ac.pointee.data) { $0.report(.push(value)) }
    }
}

private func hiredisConnectCallback(_ ac: UnsafePointer<redisAsyncContext>?, _ status: Int32) {
    HiredisContext.didConnect(ac!, status: status)
}

private func hiredisDisconnectCallback(_ ac: UnsafePointer<redisAsyncContext>?, _ status: Int32) {
    HiredisContext.didDisconnect(ac!, status: status)
}

private func hiredisReplyCallback(_ ac: UnsafeMutablePointer<redisAsyncContext>?, _ reply: UnsafeMutableRawPointer?, _: UnsafeMutableRawPointer?) {
    HiredisContext.didReply(ac!, reply: reply)
}

private func hiredisPushCallback(_ ac: UnsafeMutablePointer<redisAsyncContext>?, _ reply: UnsafeMutableRawPointer?, _: UnsafeMutableRawPointer?) {
    HiredisContext.didPush(ac!, reply: reply)
}

extension RedisReply {
    /// Copies a hiredis reply tree into Swift values (hiredis frees it after the callback).
    /// Types 7…14 only exist in hiredis 1.x with RESP3, which we never request; they are
    /// mapped to their RESP2 shapes anyway.
    init(copying reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case 1, 14:  // STRING, VERB
            self = .bulk(r.str.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(r.len))) } ?? [])
        case 2, 10, 12:  // ARRAY, SET, PUSH
            self = .array((0..<Int(r.elements)).map { RedisReply(copying: r.element[$0]!) })
        case 9:  // MAP: flattened key, value, key, value…
            self = .array((0..<Int(r.elements)).map { RedisReply(copying: r.element[$0]!) })
        case 3:  // INTEGER
            self = .integer(Int64(r.integer))
        case 4:  // NIL
            self = .null
        case 5:  // STATUS
            if r.len == 2, let str = r.str, str[0] == 0x4F, str[1] == 0x4B {
                self = .status("OK")  // the usual one: no bytes to copy or validate
            } else {
                self = .status(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.len)), as: UTF8.self) } ?? "")
            }
        case 6:  // ERROR
            self = .error(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.len)), as: UTF8.self) } ?? "")
        case 8:  // BOOL
            self = .integer(Int64(r.integer))
        case 7, 13:  // DOUBLE, BIGNUM: the textual form is in str
            self = .bulk(r.str.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(r.len))) } ?? [])
        default:
            self = .error("hiredis reply type \(r.type) is not supported")
        }
    }
}
