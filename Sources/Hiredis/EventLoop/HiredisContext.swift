import CHiredis
import Dispatch

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// What a ``HiredisContext`` reports. Every method is called on the context's queue.
protocol HiredisContextDelegate: AnyObject, Sendable {
    /// The non-blocking connect finished (`error == nil`) or failed.
    func hiredisContextDidConnect(_ context: HiredisContext, error: RedisError?)
    /// The reply to the oldest outstanding command; `nil` when the connection went away
    /// before it arrived (hiredis calls every pending callback with NULL on teardown).
    func hiredisContext(_ context: HiredisContext, didReceive reply: RedisReply?)
    /// A pub/sub reply (subscribe confirmation or message) on a subscribed connection.
    func hiredisContext(_ context: HiredisContext, didReceivePush reply: RedisReply)
    /// An established connection closed: `error == nil` after a graceful disconnect.
    func hiredisContextDidDisconnect(_ context: HiredisContext, error: RedisError?)
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
/// - Writes are coalesced: while connected, `addWrite` schedules one flush on the queue
///   (after the jobs already queued, so concurrent commands share one `write(2)`), and the
///   write source is armed only when the kernel buffer is full.
/// - A context is used for one connection attempt. It is never freed inside a hiredis
///   callback: ``freeSoon(reason:)`` defers to the queue.
///
/// `@unchecked Sendable` is safe because every stored property (and every hiredis call)
/// is touched only on `queue`: the owner calls in from jobs on that queue (it is the
/// owning actor's executor), and the Dispatch sources and deferred blocks run on it.
final class HiredisContext: @unchecked Sendable {
    let queue: DispatchQueue
    weak var delegate: (any HiredisContextDelegate)?

    private var context: UnsafeMutablePointer<redisAsyncContext>?
    private var readSource: (any DispatchSourceRead)?
    private var writeSource: (any DispatchSourceWrite)?
    private var reading = false
    private var writing = false
    private var connected = false
    private var flushScheduled = false
    private var inHandleWrite = false
    private var isTCP = false
    /// Why we freed the context ourselves: hiredis reports `REDIS_OK` after `redisAsyncFree`.
    private var abortReason: RedisError?

    init(queue: DispatchQueue) {
        self.queue = queue
    }

    /// `true` while the hiredis context exists.
    var isOpen: Bool { context != nil }

    // MARK: Connecting

    /// Starts a non-blocking connect; the outcome arrives through the delegate. Returns an
    /// error (and the delegate hears nothing) when the attempt failed at once.
    func connect(to endpoint: RedisConfiguration.Endpoint) -> RedisError? {
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
            redisAsyncHandleRead(ac)
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
        ac.pointee.ev.addRead = { HiredisContext.from($0).addRead() }
        ac.pointee.ev.delRead = { HiredisContext.from($0).delRead() }
        ac.pointee.ev.addWrite = { HiredisContext.from($0).addWrite() }
        ac.pointee.ev.delWrite = { HiredisContext.from($0).delWrite() }
        ac.pointee.ev.cleanup = { HiredisContext.from($0).cleanup() }
        // Setting the connect callback arms the write hook: the first writable event
        // completes the non-blocking connect.
        redisAsyncSetConnectCallback(ac, hiredisConnectCallback)
        redisAsyncSetDisconnectCallback(ac, hiredisDisconnectCallback)
        return nil
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
        let ends = command.ends
        let argc = ends.count
        return command.bytes.withUnsafeBufferPointer { bytes -> Bool in
            // A valid command has a non-empty name, so `bytes` has a base address.
            guard let base = bytes.baseAddress else { return false }
            return withUnsafeTemporaryAllocation(of: UnsafePointer<CChar>?.self, capacity: argc) { argv in
                withUnsafeTemporaryAllocation(of: Int.self, capacity: argc) { lengths in
                    var start = 0
                    for i in 0..<argc {
                        let end = ends[i]
                        argv[i] = UnsafeRawPointer(base + start).assumingMemoryBound(to: CChar.self)
                        lengths[i] = end - start
                        start = end
                    }
                    // hiredis copies the arguments into its output buffer before returning.
                    let status = subscription
                        ? redisAsyncCommandArgv(ac, hiredisPushCallback, nil, Int32(argc), argv.baseAddress, lengths.baseAddress)
                        : redisAsyncCommandArgv(ac, hiredisReplyCallback, nil, Int32(argc), argv.baseAddress, lengths.baseAddress)
                    return status == REDIS_OK
                }
            }
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
    }

    /// ``free(reason:)`` on a later turn of the queue: safe from inside a callback.
    func freeSoon(reason: RedisError) {
        queue.async { [self] in free(reason: reason) }
    }

    // MARK: Event-loop hooks (called by hiredis on the queue)

    private static func from(_ pointer: UnsafeMutableRawPointer?) -> HiredisContext {
        Unmanaged<HiredisContext>.fromOpaque(pointer!).takeUnretainedValue()
    }

    private func addRead() {
        guard !reading, let readSource else { return }
        reading = true
        readSource.resume()
    }

    private func delRead() {
        guard reading, let readSource else { return }
        reading = false
        readSource.suspend()
    }

    private func addWrite() {
        if connected && !inHandleWrite {
            scheduleFlush()
        } else {
            // Waiting for the connect to finish, or the socket buffer is full: wait for
            // the kernel to say the socket is writable.
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

    private func scheduleFlush() {
        guard !flushScheduled, !writing else { return }
        flushScheduled = true
        queue.async { [self] in
            guard flushScheduled else { return }  // flushed already by flushNow()
            flushScheduled = false
            guard !writing else { return }  // the write source took over
            handleWrite()
        }
    }

    /// Writes what is buffered now rather than on the scheduled turn of the queue.
    /// Not from inside a hiredis callback (hiredis 1.x asserts on it, and 0.14 is not
    /// reentrant there either): then the scheduled turn writes.
    func flushNow() {
        guard flushScheduled, !writing, let ac = context else { return }
        if Int(ac.pointee.c.flags) & Int(REDIS_IN_CALLBACK) != 0 { return }
        flushScheduled = false
        handleWrite()
    }

    private func handleWrite() {
        guard let ac = context else { return }
        inHandleWrite = true
        redisAsyncHandleWrite(ac)
        inHandleWrite = false
    }

    private func cleanup() {
        // hiredis is about to free the context (it closes its own fd in redisFree).
        if let readSource {
            if !reading { readSource.resume() }
            readSource.cancel()
        }
        if let writeSource {
            if !writing { writeSource.resume() }
            writeSource.cancel()
        }
        readSource = nil
        writeSource = nil
        reading = false
        writing = false
        context = nil
    }

    // MARK: Callbacks from hiredis (C function pointers cannot capture: they find the
    // context through `ac->data`)

    fileprivate static func didConnect(_ ac: UnsafePointer<redisAsyncContext>, status: Int32) {
        let me = from(ac.pointee.data)
        if status == REDIS_OK {
            me.connected = true
            if me.isTCP {
                // Notices a peer that vanished without a FIN (hiredis: 15 s idle). Not for
                // unix sockets: setting TCP options there fails and poisons the context.
                // `c` is the first member of redisAsyncContext.
                redisEnableKeepAlive(UnsafeMutableRawPointer(mutating: ac).assumingMemoryBound(to: redisContext.self))
            }
            me.delegate?.hiredisContextDidConnect(me, error: nil)
        } else {
            let message = ac.pointee.errstr.map { String(cString: $0) } ?? "connect failed"
            me.delegate?.hiredisContextDidConnect(me, error: RedisError(.connectionFailed, message))
        }
    }

    fileprivate static func didDisconnect(_ ac: UnsafePointer<redisAsyncContext>, status: Int32) {
        let me = from(ac.pointee.data)
        me.connected = false
        var error = me.abortReason
        if status != REDIS_OK {
            let message = ac.pointee.errstr.map { String(cString: $0) } ?? "connection lost"
            // REDIS_ERR_PROTOCOL: the server sent bytes hiredis could not parse.
            error = RedisError(ac.pointee.err == REDIS_ERR_PROTOCOL ? .protocolError : .connectionClosed, message)
        }
        me.delegate?.hiredisContextDidDisconnect(me, error: error)
    }

    fileprivate static func didReply(_ ac: UnsafeMutablePointer<redisAsyncContext>, reply: UnsafeMutableRawPointer?) {
        let me = from(ac.pointee.data)
        let value = reply.map { RedisReply(copying: $0.assumingMemoryBound(to: redisReply.self)) }
        me.delegate?.hiredisContext(me, didReceive: value)
    }

    fileprivate static func didPush(_ ac: UnsafeMutablePointer<redisAsyncContext>, reply: UnsafeMutableRawPointer?) {
        // NULL: the context is being freed; the disconnect callback follows.
        guard let reply else { return }
        let me = from(ac.pointee.data)
        me.delegate?.hiredisContext(me, didReceivePush: RedisReply(copying: reply.assumingMemoryBound(to: redisReply.self)))
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
            self = .status(r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.len)), as: UTF8.self) } ?? "")
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
