import Dispatch
import DequeModule
import Logging
import Synchronization

/// A connection to one Redis server, over a hiredis asynchronous context.
///
/// ```swift
/// let connection = try await RedisConnection.connect(RedisConfiguration(host: "127.0.0.1", port: 6379))
/// try await connection.send("SET", "greeting", "hello")
/// let greeting = try await connection.send("GET", "greeting").decode(String.self)
/// await connection.close()
/// ```
///
/// - **Concurrency is pipelining.** Any number of tasks may call ``send(_:_:)`` at once:
///   their commands are written back to back and their replies matched in order; there
///   is no lock around a round trip. ``pipeline(_:timeout:)`` sends a batch with one
///   suspension.
/// - **Timeouts and cancellation** resume the caller at once (``RedisError/Code/timeout``,
///   `CancellationError`); the reply that arrives later is discarded.
/// - **Reconnects.** After a lost connection, commands in flight fail with
///   ``RedisError/Code/connectionClosed`` (never retried: they may have run), and the
///   connection is re-established in the background per ``RedisConfiguration/reconnect``,
///   replaying AUTH, SELECT and CLIENT SETNAME. Commands sent meanwhile wait up to
///   ``RedisConfiguration/connectTimeout`` for it.
/// - The actor's executor is the connection's own serial `DispatchQueue`, which also runs
///   hiredis's I/O callbacks.
public final actor RedisConnection {
    /// The configuration this connection was made with.
    public nonisolated let configuration: RedisConfiguration
    nonisolated let executor: DispatchQueueExecutor
    nonisolated let logger: Logger
    private nonisolated let nextID = Atomic<UInt64>(0)
    /// Calls of `send`/`pipeline` between their start and their resumption: 0 means a
    /// caller is alone, and its command is enqueued on its own thread (see `submit`).
    private nonisolated let callsInFlight = Atomic<Int>(0)
    /// Calls that returned without suspending (see `awaitReply`).
    private nonisolated let inlineStreak = Atomic<UInt32>(0)

    public nonisolated var unownedExecutor: UnownedSerialExecutor {
        executor.asUnownedSerialExecutor()
    }

    enum Role { case commands, subscriber }
    let role: Role

    private var machine: ConnectionStateMachine
    private var context: HiredisContext?
    /// One entry per hiredis callback outstanding on `context`, oldest first.
    private var pending = Deque<PendingReply>()
    /// Made once; `inFlight` follows every reply slot appended to and taken from `pending`.
    private let metrics: ConnectionMetrics
    /// Commands waiting for the connection to be (re-)established.
    private var queued = Deque<QueuedCommand>()
    private var firstConnect: CheckedContinuation<Void, any Error>?
    private var closeWaiters: [CheckedContinuation<Void, Never>] = []
    private var connectTimer: DispatchWorkItem?
    private var reconnectTimer: DispatchWorkItem?
    private var closeTimer: DispatchWorkItem?
    private var tickerArmed = false
    private let tickInterval: Duration
    /// Commands cancelled before their enqueue job ran (see `cancel(id:)`).
    private var earlyCancels: Set<UInt64> = []
    private var highestEnqueuedID: UInt64 = 0
    private var reconnectAttemptsLogged = 0
    /// The address connected to: ``RedisConfiguration/endpoint``, or the master the
    /// sentinels named last.
    private(set) var currentEndpoint: RedisConfiguration.Endpoint
    private var discoveries = 0
    /// Which of the endpoint and its fallbacks the next connect tries; it moves on after an
    /// attempt that did not become ready.
    private var endpointIndex = 0
    private var lastAttemptReady = true
    /// ``RedisConfiguration/inlineReplyWait`` in nanoseconds; 0 = off.
    private let inlineBudget: UInt64
    /// Alone commands left that suspend at once after an inline wait ran out.
    private var inlineSkips = 0
    /// Inline waits in a row that ran out.
    private var inlineMisses = 0

    // Subscriber role: where pushes and lifecycle news go.
    var pushHandler: ((RedisReply) -> Void)?
    var readyHandler: ((_ reconnected: Bool) -> Void)?
    var closedHandler: ((RedisError) -> Void)?

    // MARK: Opening

    /// Connects, runs the AUTH/SELECT/CLIENT SETNAME handshake, and returns a ready
    /// connection.
    ///
    /// - Throws: ``RedisError`` — ``RedisError/Code/invalidArgument`` for a bad
    ///   configuration (nothing is attempted), ``RedisError/Code/connectionFailed`` (with
    ///   the system's reason), ``RedisError/Code/timeout`` after
    ///   ``RedisConfiguration/connectTimeout``, ``RedisError/Code/authenticationFailed``,
    ///   or ``RedisError/Code/server`` when SELECT or CLIENT SETNAME is refused.
    public static func connect(_ configuration: RedisConfiguration) async throws -> RedisConnection {
        try configuration.validate()
        let connection = RedisConnection(configuration: configuration, role: .commands)
        try await connection.start()
        return connection
    }

    init(configuration: RedisConfiguration, role: Role) {
        self.configuration = configuration
        self.currentEndpoint = configuration.endpoint
        self.role = role
        self.logger = configuration.logger
        self.metrics = ConnectionMetrics(configuration)
        self.executor = DispatchQueueExecutor(label: "hiredis.connection")
        self.machine = ConnectionStateMachine(policy: configuration.reconnect)
        let watched = configuration.commandTimeout.map { min($0, configuration.connectTimeout) } ?? configuration.connectTimeout
        self.tickInterval = min(max(watched / 10, .milliseconds(2)), .milliseconds(250))
        // validate() keeps it within 0...maximumInlineReplyWait.
        let (seconds, attoseconds) = configuration.inlineReplyWait.components
        self.inlineBudget = UInt64(clamping: max(seconds, 0) * 1_000_000_000 + max(attoseconds, 0) / 1_000_000_000)
    }

    deinit {
        // Pending timers hold only weak references and find nothing to do.
        // Dropped without close(): free the hiredis context on its queue. The context's
        // delegate reference is weak and already nil, so no callback reaches this actor.
        if let context {
            context.queue.async { context.free(reason: .closed()) }
        }
    }

    func start() async throws {
        try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                firstConnect = continuation
                perform(machine.start())
            }
        } onCancel: {
            executor.queue.async {
                self.assumeIsolated { connection in
                    guard let waiter = connection.firstConnect else { return }
                    connection.firstConnect = nil
                    waiter.resume(throwing: CancellationError())
                    connection.perform(connection.machine.closeRequested())
                }
            }
        }
    }

    // MARK: Sending

    /// Sends one command and returns its reply.
    ///
    /// Arguments are binary-safe: `String`, `[UInt8]`, `Data`, integers, `Double`.
    ///
    /// - Throws: ``RedisError`` with ``RedisError/Code/server`` for an error reply
    ///   (``RedisError/Code/noPermission`` for `-NOPERM`: the ACL user may not run it),
    ///   ``RedisError/Code/timeout``, ``RedisError/Code/connectionClosed``,
    ///   ``RedisError/Code/invalidArgument`` (nothing sent); `CancellationError` when the
    ///   calling task is cancelled.
    @discardableResult
    public nonisolated(nonsending) func send<each Argument: RedisArgument>(
        _ name: String, _ arguments: repeat each Argument
    ) async throws -> RedisReply {
        try await send(RedisCommand(name, repeat each arguments))
    }

    /// Sends one prepared command; `timeout` overrides ``RedisConfiguration/commandTimeout``.
    @discardableResult
    public nonisolated(nonsending) func send(_ command: RedisCommand, timeout: Duration? = nil) async throws -> RedisReply {
        try command.validate()
        try Self.validate(timeout)
        let id = nextID.add(1, ordering: .relaxed).newValue
        let alone = callsInFlight.add(1, ordering: .relaxed).oldValue == 0
        let inline = alone && !executor.isCurrent
        defer { callsInFlight.subtract(1, ordering: .relaxed) }
        do {
            if inline {
                // Alone: enqueue and wait for the reply on this thread; when it came within
                // the inline wait, return it without suspending (no hop to resume on).
                try Task.checkCancellation()
                let box = ReplyBox<RedisReply>()
                executor.runNow {
                    self.assumeIsolated {
                        $0.context?.readPending()
                        $0.enqueue(id: id, commands: CollectionOfOne(command), timeout: timeout, waiter: .box(box), inline: true)
                        $0.waitInline(for: id)
                    }
                }
                return try await awaitReply(box, id: id)
            }
            return try await withTaskCancellationHandler {
                try Task.checkCancellation()
                return try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<RedisReply, any Error>) in
                    submit(alone: alone) {
                        $0.enqueue(id: id, commands: CollectionOfOne(command), timeout: timeout, waiter: .command(continuation), inline: false)
                    }
                }
            } onCancel: {
                executor.queue.async { self.assumeIsolated { $0.cancel(id: id) } }
            }
        } catch let error as RedisError where error.code == .server {
            throw error.naming(command)   // NOPERM: name the command and its keys
        }
    }

    /// Sends several commands with one suspension and returns one result per command, in
    /// order. A server error in one command is that command's `.failure` (a `-NOPERM` one
    /// ``RedisError/Code/noPermission``); the others still run. A timeout, cancellation or
    /// lost connection fails the whole call.
    public nonisolated(nonsending) func pipeline(
        _ commands: [RedisCommand], timeout: Duration? = nil
    ) async throws -> [Result<RedisReply, RedisError>] {
        for command in commands { try command.validate() }
        try Self.validate(timeout)
        if commands.isEmpty { return [] }
        let id = nextID.add(1, ordering: .relaxed).newValue
        let alone = callsInFlight.add(1, ordering: .relaxed).oldValue == 0
        let inline = alone && !executor.isCurrent
        defer { callsInFlight.subtract(1, ordering: .relaxed) }
        try Task.checkCancellation()
        let box = ReplyBox<[Result<RedisReply, RedisError>]>()
        if inline {
            // As in `send`: when every reply came within the inline wait, no suspension.
            executor.runNow {
                self.assumeIsolated {
                    $0.context?.readPending()
                    $0.enqueue(id: id, commands: commands, timeout: timeout,
                               waiter: .pipeline(PipelineBatch(commands: commands, box: box)), inline: true)
                    $0.waitInline(for: id)
                }
            }
        } else {
            submit(alone: alone) {
                $0.enqueue(id: id, commands: commands, timeout: timeout,
                           waiter: .pipeline(PipelineBatch(commands: commands, box: box)), inline: false)
            }
        }
        return try await awaitReply(box, id: id)
    }

    /// The result in `box`: at once when it is there, else after a suspension that a
    /// cancellation ends (the command `id` is then abandoned).
    private nonisolated(nonsending) func awaitReply<Value: Sendable>(_ box: ReplyBox<Value>, id: UInt64) async throws -> Value {
        if let result = box.take() {
            // Returning without suspending keeps the thread: a loop of such calls would never
            // let other tasks run on it (the cooperative pool has one thread per core). So
            // every 8th such call yields, which costs what a suspension cost on every call.
            if inlineStreak.add(1, ordering: .relaxed).newValue & 7 == 0 { await Task.yield() }
            return try result.get()
        }
        return try await withTaskCancellationHandler {
            try await withUnsafeThrowingContinuation { box.attach($0) }
        } onCancel: {
            executor.queue.async { self.assumeIsolated { $0.cancel(id: id) } }
        }
    }

    /// Runs `body` on the connection's queue. A caller alone on the connection (the
    /// sequential case) enqueues on its own thread, through `sync`, which libdispatch runs
    /// on the calling thread when the queue is idle: no thread hop before the write. It
    /// then also waits for its reply there, for up to ``RedisConfiguration/inlineReplyWait``
    /// (holding its thread and the queue meanwhile; see `waitInline`). With others in
    /// flight it goes through `async`, so the queue batches their writes and no
    /// cooperative thread ever waits for a busy queue.
    private nonisolated func submit(alone: Bool, _ body: @escaping @Sendable (isolated RedisConnection) -> Void) {
        if alone || executor.isCurrent {
            executor.runNow { self.assumeIsolated(body) }   // non-escaping: no block to allocate
        } else {
            executor.queue.async { self.assumeIsolated(body) }
        }
    }

    /// A caller alone on the connection waits for its reply on its own thread (see
    /// ``RedisConfiguration/inlineReplyWait``). When that wait runs out (the server is far,
    /// or the command blocks), the next 8 commands suspend at once; 16 after the next
    /// miss, and so on up to 1,024, until a wait succeeds again.
    private func waitInline(for id: UInt64) {
        guard inlineBudget > 0, role == .commands, let context, pending.last?.id == id else { return }
        if inlineSkips > 0 {
            inlineSkips -= 1
            return
        }
        if context.readInline(budget: inlineBudget, idle: Self.parkedIdle, until: { pending.last?.id != id }) {
            inlineMisses = 0
        } else {
            inlineMisses = min(inlineMisses + 1, 8)
            inlineSkips = 4 << inlineMisses
        }
    }

    /// How long the read source stays parked without inline reads (see
    /// `HiredisContext.readInline`): a connection closed by the server while idle is
    /// noticed within this time.
    private static let parkedIdle: UInt64 = 20_000_000

    private static func validate(_ timeout: Duration?) throws {
        if let timeout, timeout <= .zero {
            throw RedisError.invalidArgument("the command timeout must be positive")
        }
    }

    // MARK: Closing

    /// Closes gracefully: stops accepting commands, waits for the replies already due
    /// (up to the command timeout), then disconnects. Queued commands fail with
    /// ``RedisError/Code/connectionClosed``. Calling it again waits for the same close.
    public func close() async {
        if case .closed = machine.state, context == nil { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            closeWaiters.append(continuation)
            perform(machine.closeRequested())
        }
    }

    /// `true` until ``close()`` was called or reconnecting gave up.
    public var isOpen: Bool { !machine.isClosed }

    /// `true` while connected and past the handshake (commands are sent at once);
    /// `false` while (re)connecting or closed.
    public var isConnected: Bool { machine.isReady }

    // MARK: The state machine's actions

    private func perform(_ action: ConnectionStateMachine.Action) {
        switch action {
        case .none:
            break
        case .connect:
            openContext()
        case .sendHandshake:
            sendHandshake()
        case .becomeReady(let reconnected):
            connectTimer?.cancel()
            connectTimer = nil
            if reconnected {
                metrics.reconnects.increment()
                logger.info("reconnected", metadata: ["redis.endpoint": "\(currentEndpoint)"])
            } else {
                logger.debug("connected", metadata: ["redis.endpoint": "\(currentEndpoint)"])
            }
            reconnectAttemptsLogged = 0
            lastAttemptReady = true
            if let waiter = firstConnect {
                firstConnect = nil
                waiter.resume()
            }
            flushQueued()
            readyHandler?(reconnected)
        case .failFirstConnect(let error):
            connectTimer?.cancel()
            connectTimer = nil
            logger.debug("connect failed", metadata: ["redis.endpoint": "\(currentEndpoint)", "error": "\(error)"])
            firstConnect?.resume(throwing: error)
            firstConnect = nil
            finishClosing(error)
        case .failInFlightAndScheduleReconnect(let error, let attempt):
            logger.warning("connection lost", metadata: ["redis.endpoint": "\(currentEndpoint)", "error": "\(error)"])
            failPending(RedisError(.connectionClosed, "connection lost: \(error.message)"))
            scheduleReconnect(attempt: attempt)
        case .scheduleReconnect(let attempt):
            scheduleReconnect(attempt: attempt)
        case .failAllAndClose(let error):
            logger.error("connection closed for good", metadata: ["redis.endpoint": "\(currentEndpoint)", "error": "\(error)"])
            failPending(RedisError(.connectionClosed, "connection lost: \(error.message)"))
            finishClosing(RedisError(.connectionClosed, "connection lost and not re-established: \(error.message)"))
            closedHandler?(error)
        case .disconnectGracefully:
            context?.disconnect()
            let item = DispatchWorkItem { [weak self] in
                self?.assumeIsolated { connection in
                    connection.context?.free(reason: .closed("closed before all replies arrived"))
                }
            }
            closeTimer = item
            executor.queue.asyncAfter(deadline: .now() + (configuration.commandTimeout ?? configuration.connectTimeout).dispatch, execute: item)
        case .abortAndClose:
            let reason = RedisError.closed("the connection was closed while connecting")
            if let context {
                self.context = nil
                context.free(reason: reason)
            }
            finishClosing(reason)
        case .finishClose:
            finishClosing(.closed())
        }
    }

    private func openContext() {
        guard let sentinel = configuration.sentinel else {
            if configuration.fallbackEndpoints.isEmpty {
                openContext(to: configuration.endpoint)
                return
            }
            if !lastAttemptReady { endpointIndex += 1 }
            lastAttemptReady = false
            let all = [configuration.endpoint] + configuration.fallbackEndpoints
            currentEndpoint = all[endpointIndex % all.count]
            openContext(to: currentEndpoint)
            return
        }
        discoveries += 1
        let discovery = discoveries
        let timeout = configuration.connectTimeout
        let logger = logger
        Task { [weak self] in
            let address = await SentinelDiscovery.masterAddress(sentinel, connectTimeout: timeout, logger: logger)
            await self?.discovered(address, discovery)
        }
    }

    /// The sentinels answered; connect to the master they named (unless this attempt was
    /// overtaken by a close or another attempt meanwhile).
    private func discovered(_ address: Result<RedisConfiguration.Endpoint, RedisError>, _ discovery: Int) {
        guard discovery == discoveries, context == nil, case .connecting = machine.state else { return }
        switch address {
        case .success(let endpoint):
            if endpoint != currentEndpoint {
                logger.info("sentinels named the master", metadata: ["redis.endpoint": "\(endpoint)"])
            }
            currentEndpoint = endpoint
            openContext(to: endpoint)
        case .failure(let error):
            logger.warning("sentinel discovery failed", metadata: ["error": "\(error)"])
            perform(machine.connectFailed(error))
        }
    }

    private func openContext(to endpoint: RedisConfiguration.Endpoint) {
        // `validate()` refused it already; never fall back to plaintext.
        if configuration.tls != nil, !TLSSupport.isAvailable {
            perform(machine.connectFailed(TLSSupport.unavailable))
            return
        }
        let context = HiredisContext(queue: executor.queue)
        context.delegate = self
        if var error = context.connect(to: endpoint, tls: configuration.tls) {
            // Refused at once (e.g. ECONNREFUSED on loopback, unresolvable host), or TLS
            // could not be set up (a missing CA file, no libhiredis_ssl).
            if configuration.sentinel != nil, error.code == .connectionFailed {
                error = RedisError(.noMasterAvailable, "the master named by the sentinels refused: \(error.message)")
            }
            perform(machine.connectFailed(error))
            return
        }
        self.context = context
        let item = DispatchWorkItem { [weak self] in
            self?.assumeIsolated { $0.connectTimedOut(context) }
        }
        connectTimer?.cancel()
        connectTimer = item
        executor.queue.asyncAfter(deadline: .now() + configuration.connectTimeout.dispatch, execute: item)
    }

    private func connectTimedOut(_ timedOut: HiredisContext) {
        guard timedOut === context else { return }
        metrics.connectTimeouts.increment()
        var error = RedisError(.timeout, "connecting to \(configuration.endpoint) took longer than \(configuration.connectTimeout)")
        if timedOut.tlsHandshakePending {
            // A plaintext server waits for a command line that a TLS hello never ends.
            error = RedisError(.tlsHandshakeFailed, """
                the TLS handshake with \(currentEndpoint) did not finish within \(configuration.connectTimeout) \
                (is it a plaintext port? TLS needs the server's tls-port)
                """)
        }
        context = nil
        timedOut.free(reason: error)
        perform(machine.connectFailed(error))
    }

    /// The command of one handshake step.
    private func command(for step: HandshakeStep) -> RedisCommand {
        switch step {
        case .auth:
            var auth = RedisCommand("AUTH")
            if let username = configuration.username { auth.append(username) }
            auth.append(configuration.password ?? "")
            return auth
        case .select: return RedisCommand("SELECT", configuration.database)
        case .setName: return RedisCommand("CLIENT", "SETNAME", configuration.clientName ?? "")
        case .role: return RedisCommand("ROLE")
        case .ping: return RedisCommand("PING")
        }
    }

    private func sendHandshake() {
        guard let context else { return }
        var steps: [HandshakeStep] = []
        if configuration.password != nil { steps.append(.auth) }
        if configuration.database != 0 { steps.append(.select) }
        if configuration.clientName != nil { steps.append(.setName) }
        if configuration.sentinel != nil { steps.append(.role) }
        // Over TLS, one round trip at least: the handshake completes (or fails, typed)
        // within the connect, not on the first command.
        if steps.isEmpty, configuration.tls != nil { steps.append(.ping) }
        guard !steps.isEmpty else {
            perform(machine.handshakeSucceeded())
            return
        }
        let tracing = logger.logLevel <= .trace
        for (index, step) in steps.enumerated() {
            let command = command(for: step)
            guard context.send(command) else {
                contextFailed(context, RedisError(.connectionClosed, "the connection closed during the handshake"))
                return
            }
            if tracing {
                logger.trace("send", metadata: ["redis.command": "\(command.loggableDescription)", "redis.handshake": "true"])
            }
            pending.append(PendingReply(id: 0, deadline: 0, waiter: .handshake(step, last: index == steps.count - 1), remaining: 1))
            metrics.inFlight.increment()
        }
        context.flush(now: true)
    }

    private func scheduleReconnect(attempt: Int) {
        let delay = configuration.reconnect.delay(beforeAttempt: attempt, random: Double.random(in: 0..<1))
        if attempt <= 3 || attempt.nonzeroBitCount == 1 {
            logger.info("reconnecting", metadata: ["redis.endpoint": "\(currentEndpoint)", "attempt": "\(attempt)", "delay": "\(delay)"])
        }
        let item = DispatchWorkItem { [weak self] in
            self?.assumeIsolated { $0.perform($0.machine.reconnectTimerFired()) }
        }
        reconnectTimer = item
        executor.queue.asyncAfter(deadline: .now() + delay.dispatch, execute: item)
        armTicker()  // queued commands time out while we wait
    }

    /// Ends a connection attempt or an established connection that failed, once.
    private func contextFailed(_ failed: HiredisContext, _ error: RedisError) {
        guard failed === context else { return }
        context = nil
        connectTimer?.cancel()
        connectTimer = nil
        if failed.isOpen { failed.freeSoon(reason: error) }
        perform(machine.connectionLost(error))
    }

    private func finishClosing(_ error: RedisError) {
        connectTimer?.cancel()
        reconnectTimer?.cancel()
        closeTimer?.cancel()
        connectTimer = nil
        reconnectTimer = nil
        closeTimer = nil
        failPending(error)
        while let command = queued.popFirst() {
            command.waiter.fail(error.neverSent())
        }
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Commands and replies

    private func enqueue(id: UInt64, commands: some Collection<RedisCommand>, timeout: Duration?, waiter: Waiter, inline: Bool) {
        highestEnqueuedID = max(highestEnqueuedID, id)
        if !earlyCancels.isEmpty, earlyCancels.remove(id) != nil {
            waiter.fail(CancellationError())
            return
        }
        switch machine.state {
        case .ready:
            write(id: id, commands: commands, timeout: timeout, waiter: waiter, inline: inline)
        case .closing, .closed:
            waiter.fail(RedisError.closed().neverSent())
        case .idle, .connecting, .handshaking, .waitingToReconnect:
            queued.append(QueuedCommand(
                id: id, deadline: deadline(after: configuration.connectTimeout),
                commands: Array(commands), timeout: timeout, waiter: waiter))
            armTicker()
        }
    }

    /// Appends the commands and writes them. Unless the caller will read the replies
    /// inline, the read source must watch for them.
    private func write(id: UInt64, commands: some Collection<RedisCommand>, timeout: Duration?, waiter: Waiter, inline: Bool = false) {
        guard let context else {
            waiter.fail(RedisError.closed().neverSent())
            return
        }
        if !inline { context.unpark() }
        let deadline = (timeout ?? configuration.commandTimeout).map { self.deadline(after: $0) } ?? 0
        let tracing = logger.logLevel <= .trace
        var appended = 0
        for command in commands {
            guard context.send(command) else { break }  // the context is going away
            if tracing {
                logger.trace("send", metadata: ["redis.command": "\(command.loggableDescription)"])
            }
            appended += 1
        }
        guard appended > 0 else {
            waiter.fail(RedisError(.connectionClosed, "the connection is closing").neverSent())
            return
        }
        // One entry for the whole call (what was appended fails with the context when it
        // could not all be).
        let alone = pending.isEmpty
        pending.append(PendingReply(id: id, deadline: deadline, waiter: waiter, remaining: appended))
        metrics.inFlight.increment(by: Double(appended))
        // Nothing else in flight, or a whole batch: write now instead of on the next turn
        // of the queue (which lets concurrent single commands share one write).
        // An inline caller must write now: its wait holds the queue, so a write scheduled
        // on the queue would only run after it.
        context.flush(now: inline || alone || appended > 1)
        if deadline != 0 { armTicker() }
    }

    private func flushQueued() {
        while machine.isReady, let command = queued.popFirst() {
            write(id: command.id, commands: command.commands, timeout: command.timeout, waiter: command.waiter)
        }
    }

    private func received(_ reply: RedisReply?) {
        guard !pending.isEmpty else {
            logger.warning("reply without a command", metadata: ["reply": "\(reply.map { $0.kindDescription } ?? "NULL")"])
            return
        }
        let first = pending.startIndex
        metrics.inFlight.decrement()
        if pending[first].remaining > 1, let batch = pending[first].batch, let reply, !reply.isError {
            // The usual reply inside a pipeline: its batch is reached without a retain (the
            // entry's waiter holds it), and the entry stays in place.
            pending[first].remaining -= 1
            batch._withUnsafeGuaranteedRef { $0.append(.success(reply)) }
            return
        }
        pending[first].remaining -= 1
        let entry = pending[first].remaining == 0 ? pending.removeFirst() : pending[first]
        defer {
            // A demoted master answers writes with READONLY: find the new one.
            // (Before Redis 7 a write inside a script reports it as "ERR Error running script … -READONLY …".)
            // The reply's kind first: reading `configuration.sentinel` copies the struct,
            // which is not worth doing for every reply.
            if case .error(let message)? = reply, configuration.sentinel != nil, message.contains("READONLY You can't write"),
               let context {
                contextFailed(context, RedisError(.connectionClosed, "\(currentEndpoint) is no longer the master (READONLY)"))
            }
        }
        switch entry.waiter {
        case .command(let continuation):
            switch reply {
            case .error(let message)?: continuation.resume(throwing: RedisError(.server, message))
            case let reply?: continuation.resume(returning: reply)
            case nil: continuation.resume(throwing: RedisError(.connectionClosed, "the connection was lost before the reply arrived"))
            }
        case .box(let box):
            switch reply {
            case .error(let message)?: box.complete(.failure(RedisError(.server, message)))
            case let reply?: box.complete(.success(reply))
            case nil: box.complete(.failure(RedisError(.connectionClosed, "the connection was lost before the reply arrived")))
            }
        case .pipeline(let batch):
            switch reply {
            case .error(let message)?: batch.appendError(message)
            case let reply?: batch.append(.success(reply))
            case nil: batch.fail(RedisError(.connectionClosed, "the connection was lost before the reply arrived"))
            }
        case .handshake(let step, let last):
            guard let reply else { return }  // the disconnect callback reports the loss
            if case .error(let message) = reply, step != .ping {  // PING only proves the round trip
                let error: RedisError
                switch step {
                case _ where step != .auth && RedisError.isPermissionDenial(message):
                    error = RedisError.noPermission(message, command: command(for: step), context: "during the connection handshake")
                case .auth: error = RedisError(.authenticationFailed, message)
                case .select: error = RedisError(.server, "SELECT \(configuration.database) failed: \(message)")
                case .setName: error = RedisError(.server, "CLIENT SETNAME failed: \(message)")
                case .role: error = RedisError(.noMasterAvailable, "ROLE failed on \(currentEndpoint): \(message)")
                case .ping: error = RedisError(.server, message)
                }
                if let context { contextFailed(context, error) }
            } else if step == .role, (try? reply.decode([RedisReply].self).first?.decode(String.self)) != "master" {
                // The sentinels named a server that is (no longer) the master: ask again.
                if let context {
                    contextFailed(context, RedisError(.noMasterAvailable, "\(currentEndpoint), named by the sentinels, is not a master"))
                }
            } else if last {
                perform(machine.handshakeSucceeded())
            }
        case .discarded:
            break
        }
    }

    private func failPending(_ error: RedisError) {
        while let entry = pending.popFirst() {
            metrics.inFlight.decrement(by: Double(entry.remaining))
            entry.waiter.fail(error)
        }
    }

    /// Marks the command (or pipeline) `id` as abandoned and resumes its caller.
    private func abandon(id: UInt64, with error: any Error) -> Bool {
        var found = false
        for i in pending.indices where pending[i].id == id {
            if !found { pending[i].waiter.fail(error) }
            pending[i].waiter = .discarded
            pending[i].batch = nil
            found = true
        }
        if found { return true }
        if let i = queued.firstIndex(where: { $0.id == id }) {
            queued.remove(at: i).waiter.fail(error)
            return true
        }
        return false
    }

    private func cancel(id: UInt64) {
        if abandon(id: id, with: CancellationError()) { return }
        // Either it already completed, or its enqueue job has not run yet (cancellation
        // raced with the hop to this queue): remember it so `enqueue` cancels it.
        if id > highestEnqueuedID || earlyCancels.count < 64 {
            earlyCancels.insert(id)
        }
        if earlyCancels.count > 1024 {
            let horizon = highestEnqueuedID &- 100_000
            earlyCancels = earlyCancels.filter { $0 > horizon }
        }
    }

    // MARK: Timeouts

    private func deadline(after duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        let nanoseconds = UInt64(max(seconds, 0)) &* 1_000_000_000 &+ UInt64(max(attoseconds, 0) / 1_000_000_000)
        return DispatchTime.now().uptimeNanoseconds &+ max(nanoseconds, 1)
    }

    /// One coarse ticker per connection (instead of a timer per command) fails the
    /// commands whose deadline passed; it stops when nothing is left to watch.
    private func armTicker() {
        guard !tickerArmed else { return }
        tickerArmed = true
        executor.queue.asyncAfter(deadline: .now() + tickInterval.dispatch) { [weak self] in
            self?.assumeIsolated { $0.tick() }
        }
    }

    private func tick() {
        tickerArmed = false
        let now = DispatchTime.now().uptimeNanoseconds
        var watching = false
        var expired: [UInt64] = []
        for entry in pending where entry.deadline != 0 && !entry.waiter.isDiscarded {
            if entry.deadline <= now { expired.append(entry.id) } else { watching = true }
        }
        for id in expired {
            metrics.commandTimeouts.increment()
            _ = abandon(id: id, with: RedisError(.timeout, "no reply within the command timeout"))
        }
        var index = queued.startIndex
        while index < queued.endIndex {
            if queued[index].deadline <= now {
                let command = queued.remove(at: index)
                command.waiter.fail(RedisError(.timeout, "not connected to \(configuration.endpoint) within \(configuration.connectTimeout)").neverSent())
            } else {
                watching = true
                index += 1
            }
        }
        if watching { armTicker() }
    }

    // MARK: Subscriber role

    /// Sends a (P)SUBSCRIBE/(P)UNSUBSCRIBE; returns `false` when not connected (the
    /// subscriber re-subscribes everything once `readyHandler` reports a reconnect).
    func sendSubscription(_ command: RedisCommand) -> Bool {
        guard machine.isReady, let context, context.sendSubscription(command) else { return false }
        context.flush(now: true)
        return true
    }
}

// MARK: - hiredis events

extension RedisConnection {
    /// What `context` reported, in hiredis's order (see `HiredisContext.deliver()`).
    func handle(_ event: HiredisEvent, from context: HiredisContext) {
        switch event {
        case .reply(let reply):
            // A context already given up (freed after a failure, a timeout or a close)
            // answers its commands with NULL: those commands were failed with it.
            guard context === self.context else { return }
            received(reply)
        case .push(let reply):
            pushHandler?(reply)
        case .connected(let error):
            guard context === self.context else { return }
            if let error {
                // hiredis frees a context whose connect failed by itself.
                self.context = nil
                connectTimer?.cancel()
                connectTimer = nil
                // A TLS error names its endpoint already and keeps its code.
                let failure = error.code == .connectionFailed
                    ? RedisError(.connectionFailed, "\(configuration.endpoint): \(error.message)") : error
                perform(machine.connectFailed(failure))
            } else {
                perform(machine.connected())
            }
        case .disconnected(let error):
            guard context === self.context else { return }
            self.context = nil
            connectTimer?.cancel()
            connectTimer = nil
            if let error {
                perform(machine.connectionLost(error))
            } else {
                perform(machine.disconnected())
            }
        }
    }
}

// MARK: - Bookkeeping types

enum HandshakeStep: Sendable { case auth, select, setName, role, ping }

/// Who waits for the replies of one call.
enum Waiter {
    case command(UnsafeContinuation<RedisReply, any Error>)
    /// A caller that waited inline and may not have suspended (see `send`).
    case box(ReplyBox<RedisReply>)
    case pipeline(PipelineBatch)
    case handshake(HandshakeStep, last: Bool)
    /// Timed out or cancelled: the reply is read and dropped.
    case discarded

    var isDiscarded: Bool {
        if case .discarded = self { return true }
        if case .pipeline(let batch) = self { return batch.isFinished }
        if case .box(let box) = self { return box.isFinished }
        return false
    }

    func fail(_ error: any Error) {
        switch self {
        case .command(let continuation): continuation.resume(throwing: error)
        case .box(let box): box.complete(.failure(error))
        case .pipeline(let batch): batch.fail(error)
        case .handshake, .discarded: break
        }
    }
}

/// The replies still due to one call (one `send`, one `pipeline`, one handshake step).
struct PendingReply {
    var id: UInt64
    /// `DispatchTime` uptime in nanoseconds; 0 = no timeout.
    var deadline: UInt64
    var waiter: Waiter
    /// Replies still to come: hiredis has one callback outstanding for each.
    var remaining: Int
    /// The waiter's pipeline batch, unretained (`waiter` holds it) and `nil` once the
    /// waiter was discarded: reached without retain and release for each reply.
    var batch: Unmanaged<PipelineBatch>?

    init(id: UInt64, deadline: UInt64, waiter: Waiter, remaining: Int) {
        self.id = id
        self.deadline = deadline
        self.waiter = waiter
        self.remaining = remaining
        if case .pipeline(let batch) = waiter { self.batch = Unmanaged.passUnretained(batch) }
    }
}

struct QueuedCommand {
    var id: UInt64
    var deadline: UInt64
    var commands: [RedisCommand]
    var timeout: Duration?
    var waiter: Waiter
}

/// Collects the replies of one `pipeline` call, which arrive in order; lives on the
/// connection's queue, and hands the whole result to its box.
final class PipelineBatch {
    /// The commands, to name the one a `-NOPERM` reply refused.
    private let commands: [RedisCommand]
    private var results: [Result<RedisReply, RedisError>] = []
    private let box: ReplyBox<[Result<RedisReply, RedisError>]>

    init(commands: [RedisCommand], box: ReplyBox<[Result<RedisReply, RedisError>]>) {
        self.commands = commands
        self.box = box
        results.reserveCapacity(commands.count)
    }

    /// The next command's error reply.
    func appendError(_ message: String) {
        let error = RedisError(.server, message)
        append(.failure(results.count < commands.count ? error.naming(commands[results.count]) : error))
    }

    /// Completed or failed (the box is completed through this batch only).
    private(set) var isFinished = false

    func append(_ result: Result<RedisReply, RedisError>) {
        guard !isFinished else { return }
        results.append(result)
        if results.count == commands.count {
            isFinished = true
            box.complete(.success(results))
            results = []
        }
    }

    func fail(_ error: any Error) {
        guard !isFinished else { return }
        isFinished = true
        box.complete(.failure(error))
    }
}

/// Where the result of one call goes: completed once on the connection's queue, taken by
/// its caller either at once (the caller waited inline, and never suspended) or through
/// the continuation it attaches when it has to suspend.
final class ReplyBox<Value: Sendable>: Sendable {
    private enum State {
        case waiting
        case done(Result<Value, any Error>)
        case attached(UnsafeContinuation<Value, any Error>)
        case delivered
    }

    private let state = Mutex(State.waiting)

    /// Sets the result (the first one counts) and resumes an attached caller.
    func complete(_ result: Result<Value, any Error>) {
        let continuation: UnsafeContinuation<Value, any Error>? = state.withLock { state in
            switch state {
            case .waiting:
                state = .done(result)
                return nil
            case .attached(let continuation):
                state = .delivered
                return continuation
            case .done, .delivered:
                return nil
            }
        }
        continuation?.resume(with: result)
    }

    /// The result, once, if it has arrived.
    func take() -> Result<Value, any Error>? {
        state.withLock { state in
            guard case .done(let result) = state else { return nil }
            state = .delivered
            return result
        }
    }

    /// Resumes `continuation` with the result, now or when it arrives.
    func attach(_ continuation: UnsafeContinuation<Value, any Error>) {
        let result: Result<Value, any Error>? = state.withLock { state in
            if case .done(let result) = state {
                state = .delivered
                return result
            }
            state = .attached(continuation)
            return nil
        }
        if let result { continuation.resume(with: result) }
    }

    /// A result was set (whether or not its caller has it yet).
    var isFinished: Bool {
        state.withLock { state in
            switch state {
            case .done, .delivered: return true
            case .waiting, .attached: return false
            }
        }
    }
}

extension Duration {
    /// Whole milliseconds as Redis takes them (`PX`, `PEXPIRE`, `WAIT`): rounded up, so a
    /// lease is never shorter than asked, and at least 1 (`WAIT` reads 0 as "for ever").
    package var redisMilliseconds: Int64 {
        let (seconds, attoseconds) = components
        return max(1, seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }

    var dispatch: DispatchTimeInterval {
        let (seconds, attoseconds) = components
        let nanoseconds = seconds * 1_000_000_000 + attoseconds / 1_000_000_000
        return .nanoseconds(Int(clamping: max(nanoseconds, 0)))
    }
}

extension RedisReply {
    /// An error reply (`-ERR …`).
    var isError: Bool {
        if case .error = self { return true }
        return false
    }
}
