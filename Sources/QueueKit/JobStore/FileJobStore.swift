import Dispatch
import Foundation
import Hiredis
import Logging
import Metrics
import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The job store in a directory shared by many processes on one host. No daemon and no
/// lock server: every write goes to a temporary file inside the store, then is renamed or
/// hard-linked into place, so a reader sees all of a file or none of it and a crash leaves
/// nothing half-written.
///
/// Layout under `directory`:
/// - `jobs/<id>/v<N>`: the request, version N (`v0` at creation; an update links `v<N+1>`:
///   the first wins, then drops the older versions);
/// - `values/<id>`: the value; its existence means fulfilled (linked: the first fulfil wins);
/// - `pending/<id>`: marker of a job workers may pull;
/// - `waiting/<id>/<name>`: one file per target, its JSON;
/// - `outbox/<id>`: marker of a fulfilled job with waiting targets;
/// - `leases/<work|notify>-<id>/<generation>`: `token expiry-ms`; the highest generation
///   holds the lease; an expired one is taken over by linking the next generation, so two
///   processes racing for a takeover cannot both win;
/// - `done/<end-ms>/<id>`: marker of a fulfilled job with no target waiting since before
///   `end-ms` (a store with a retention writes it); the job is removed once `end-ms` is a
///   retention past;
/// - `tmp/`: temporary files (swept when older than 10 minutes), and `<id>.removed`, the
///   job directory of a job being removed.
///
/// Removing a job: under an exclusive `flock(2)` on `jobs/<id>` (fulfil, queue and update
/// hold a shared one), rename `jobs/<id>` into `tmp/` (from then on the job is unknown),
/// delete the rest of it, and drop its `done` marker last: a crash on the way leaves the
/// marker, and the next removal finishes the work.
///
/// ## Durability
///
/// A call returns only once what it reports is durable: it survives the process being
/// killed *and* the host losing power. A kill alone loses nothing that was written (the
/// kernel keeps it); a power loss loses what was not fsync'ed, but it also restarts every
/// process of the store, so each opens the store again, and opening re-derives the markers
/// (`pending/`, `outbox/`, `done/`) from the durable files. Hence, per kind of file:
/// - a request (`jobs/<id>/v<N>`), a value (`values/<id>`), a target (`waiting/<id>/…`):
///   the content is `fdatasync`ed *before* it is linked or renamed into place (else a power
///   loss could keep the name with a torn content), and the directory holding the new name
///   is fsync'ed *before* the call returns (a new job's own directory before its rename; a
///   new `waiting/<id>` in `waiting/` too);
/// - the removal of targets by ``unqueue(_:target:)``, ``unqueueAll(_:targets:)`` and
///   ``NotificationLease/done(removing:)``: `waiting/<id>` is fsync'ed before they return
///   (the `respond` path does not wait: a target notified again after a power loss is what
///   notification, at least once, allows anyway);
/// - markers: not fsync'ed. A lost `pending/` marker is made again on open (a job with no
///   value), a lost `outbox/` marker too (a value with targets), a lost `done/` marker too (a
///   value with none), and a marker a power loss brings back is dropped by the next pull;
/// - leases (`leases/…`): not fsync'ed. A power loss kills every holder, so a lost lease
///   frees a job as its expiry would; an older generation or a released lease brought back
///   expires within the lease timeout; a lease file left empty or torn reads as expired. A
///   generation may be handed out again after a power loss, its earlier holder being dead;
/// - a job's new directory becomes durable in `jobs/` before its `pending/` marker is
///   made, and a value in `values/` before its job leaves `pending/`, enters `outbox/` or
///   goes to `respond`, so no worker or notifier acts on what a power loss could take back.
///   (A plain read, such as ``state(_:)``, may see a change the moment before it is durable.)
///
/// Directory fsyncs are shared between concurrent calls of one store (group commit: one
/// fsync of `jobs/` serves every create that arrived while the previous one ran), so
/// concurrent callers pay far fewer fsyncs than calls. Other processes' calls have their own.
public struct FileJobStore<Target: Codable & Sendable>: JobStore {
    /// The store's directory.
    public let directory: URL
    /// How long a lease lives without renewal (default 10 s; renewed every third).
    public let leaseTimeout: Duration
    /// How long a fulfilled job is kept once no target waits for it (`nil`: for ever).
    public let retention: Duration?
    let responder: Responder<Target>?
    let metrics: JobStoreMetrics
    let logger: Logger
    let paths: StorePaths
    /// One removal step at a time in this process (another process's steps are told apart
    /// by the job directories' locks).
    private let removing = RemovalGate()
    /// Shares directory fsyncs among the concurrent calls of this store (see the type's
    /// documentation, "Durability").
    let commits = GroupCommit()

    /// Opens the store in `directory`, which must exist and be writable; the store's
    /// subdirectories are created in it. Finishes creations that a crashed process had
    /// written but not listed, and sweeps old temporary files.
    ///
    /// - Parameters:
    ///   - directory: the store's directory, shared by every process of the store.
    ///   - leaseTimeout: how long a lease lives without renewal (default 10 s).
    ///   - retention: how long a fulfilled job stays once no target waits for it and no lease
    ///     is held on it (default 1 hour, counted on this host's clock; `nil`: for ever, as
    ///     fs-job-store). Expired jobs are removed a few at a time by ``pullWork()`` and
    ///     ``pullNotification()``, or by ``removeExpired(limit:)``; a removed job is
    ///     ``JobState/unknown``. Every store on one directory should use the same retention.
    ///   - metricsFactory: where the store's metrics go (see the README's metrics table);
    ///     `nil`, the default, is the app's bootstrapped `MetricsSystem`.
    ///   - metricsDimensions: dimensions added to each of them (besides `backend`).
    ///   - logger: where a failed `respond` is logged (at `error`); nothing is logged by default.
    ///   - respond: notifies a target as soon as its job is fulfilled, or at once when it is
    ///     queued to a fulfilled job (optional); see ``JobResponder``.
    ///   - onResponseFailure: told when `respond` throws; the target stays queued.
    /// - Throws: ``JobStoreError/Code/invalidStore`` when `directory` is missing, not a
    ///   directory, or not writable (nothing is written then); `RedisError`
    ///   `invalidArgument` for a `leaseTimeout` under 30 ms or a retention that is not
    ///   positive, as ``RedisJobStore`` does.
    public init(directory: URL, leaseTimeout: Duration = .seconds(10), retention: Duration? = .seconds(3600),
                metricsFactory: (any MetricsFactory)? = nil, metricsDimensions: [(String, String)] = [],
                logger: Logger = Logger(label: "queuekit.jobstore", factory: { _ in SwiftLogNoOpLogHandler() }),
                respond: JobResponder<Target>? = nil, onResponseFailure: JobResponseFailureHandler<Target>? = nil) throws {
        guard leaseTimeout >= .milliseconds(30) else { throw RedisError.invalidArgument("leaseTimeout must be at least 30 ms") }
        try validateRetention(retention)
        let path = directory.standardizedFileURL.path
        var info = stat()
        guard stat(path, &info) == 0 else { throw JobStoreError(.invalidStore, "\(path) does not exist") }
        guard (info.st_mode & S_IFMT) == S_IFDIR else { throw JobStoreError(.invalidStore, "\(path) is not a directory") }
        guard access(path, W_OK | X_OK) == 0, (info.st_mode & 0o222) != 0 else {
            throw JobStoreError(.invalidStore, "\(path) is not writable")
        }
        self.directory = directory
        self.leaseTimeout = leaseTimeout
        self.retention = retention
        self.responder = Responder(respond, onFailure: onResponseFailure, logger: logger)
        self.metrics = JobStoreMetrics(backend: "file", factory: metricsFactory, dimensions: metricsDimensions)
        self.logger = logger
        self.paths = StorePaths(root: path)
        for sub in StorePaths.subdirectories { try Files.makeDirectory(paths.root + "/" + sub) }
        sweep()
    }

    /// Lists a created job that a crashed creator did not, marks fulfilled jobs whose
    /// markers a crash lost, and drops stale temp files.
    private func sweep() {
        for id in Files.list(paths.jobs) where !Files.exists(paths.pending(id)) && !Files.exists(paths.value(id)) {
            if !Files.list(paths.job(id)).isEmpty { try? mark(paths.pending(id)) }
        }
        // A crash between a fulfil or a queue and its outbox marker: targets still wait.
        // A crash before a done marker (or a store written without a retention): marked now.
        let marked = retention == nil ? [] : Set(Files.list(paths.done).flatMap { Files.list(paths.done + "/" + $0) })
        for id in Files.list(paths.values) where Files.exists(paths.job(id)) {
            if waitingFiles(id).isEmpty {
                if retention != nil && !marked.contains(id) { markDone(id) }
            } else if !Files.exists(paths.outbox(id)) {
                try? mark(paths.outbox(id))
            }
        }
        let cutoff = Date().addingTimeInterval(-600).timeIntervalSince1970
        for name in Files.list(paths.tmp) {
            let path = paths.tmp + "/" + name
            var info = stat()
            if stat(path, &info) == 0, Double(info.st_mtim.tv_sec) < cutoff { Files.removeTree(path) }
        }
    }

    // MARK: Jobs

    public func create(request: [UInt8]) async throws -> JobID {
        try validateTask(request)
        let id = try await blocking { try self.stageJob(request) }
        // Durable before any other process can learn the id (from `pending/`).
        try await commits.sync(paths.jobs)
        Failpoint.hit("create-before-pending")
        try await blocking { try self.mark(self.paths.pending(id.rawValue)) }
        metrics.created.increment()
        return id
    }

    /// Writes the job's directory in `tmp/`, makes it durable (its `v0` and its entry),
    /// then renames it into `jobs/`; the caller makes that rename durable.
    private func stageJob(_ request: [UInt8]) throws -> JobID {
        let id = JobID()
        let staging = paths.tmp + "/" + UUID().uuidString + ".job"
        try Files.makeDirectory(staging)
        try Files.writeNew(staging + "/v0", request, durable: true)
        try Files.syncDirectoryOrThrow(staging)
        Failpoint.hit("create-before-rename")
        try Files.rename(staging, paths.job(id.rawValue))
        return id
    }

    public func pullWork() async throws -> JobLease? {
        let lease = try await blocking { try self.pullWorkNow() }
        if lease != nil { metrics.pulled.increment() }
        return lease
    }

    private func pullWorkNow() throws -> JobLease? {
        removeOnTheWay()
        for name in Files.list(paths.pendingDirectory).shuffled() {
            guard let id = try? JobID(name) else { continue }
            if Files.exists(paths.value(name)) {
                Files.remove(paths.pending(name))   // a fulfil that crashed before this step
                continue
            }
            guard let lease = try tryLease(paths.lease("work", name)) else { continue }
            // Re-checked under the lease; every skipped entry gives its lease back.
            if Files.exists(paths.value(name)) {
                _ = release(lease)
                Files.remove(paths.pending(name))
                continue
            }
            guard let (version, request) = currentVersion(name) else {
                _ = release(lease)
                continue
            }
            return JobLease(id: id, request: request, version: version, fencingToken: Int64(lease.generation),
                            keeper: keeper(lease))
        }
        return nil
    }

    public func fulfill(_ id: JobID, value: [UInt8]) async throws {
        try validateTask(value)
        let linked = try await blocking { try self.linkValue(id, value) }
        // Durable before this returns, and before a notifier may read it from `outbox/`. A
        // caller told "already fulfilled" is told so once the winner's value is durable.
        try await commits.sync(paths.values)
        guard linked else { throw JobStoreError(.alreadyFulfilled, "job \(id) was fulfilled already") }
        let waiting = try await blocking { try self.listFulfilled(id) }
        metrics.fulfilled.increment()
        if waiting && responder != nil { try await notifyNow(id) }
    }

    /// Links the value (durable content); `false` when another fulfil won.
    private func linkValue(_ id: JobID, _ value: [UInt8]) throws -> Bool {
        try requireJob(id)
        let temp = try Files.writeTemp(in: paths.tmp, value, durable: true)
        defer { Files.remove(temp) }
        return try withJob(id) {
            Failpoint.hit("fulfill-before-link")
            return try Files.link(temp, paths.value(id.rawValue))
        }
    }

    /// Drops the pending marker of a job whose value is durable and marks it for
    /// notification or removal (markers are not fsync'ed: opening a store re-derives them);
    /// `true` when targets wait.
    private func listFulfilled(_ id: JobID) throws -> Bool {
        do {
            return try withJob(id) {
                Files.remove(paths.pending(id.rawValue))
                if waitingFiles(id.rawValue).isEmpty {
                    markDone(id.rawValue)
                    return false
                }
                try mark(paths.outbox(id.rawValue))
                return true
            }
        } catch let error as JobStoreError where error.code == .unknownJob {
            return false   // removed after its retention meanwhile: nothing is left to mark
        }
    }

    public func queue(_ id: JobID, target: Target) async throws {
        let encoded = try encodeTarget(target)
        let value = try await blocking { () -> [UInt8]? in
            try self.requireJob(id)
            return self.responder == nil ? nil : Files.read(self.paths.value(id.rawValue))
        }
        if let responder, let value {
            // Another call's value whose fsync may not have run yet: durable before it is told.
            try await commits.sync(paths.values)
            if await responder.notify(target, id, value) {
                metrics.notified.increment()
                return
            }
            try await blocking {
                try self.withJob(id) {
                    try self.addTarget(id.rawValue, encoded)
                    self.unmarkDone(id.rawValue)
                    try self.mark(self.paths.outbox(id.rawValue))
                }
            }
            try await commits.sync(targetDirectories(id.rawValue))
            return
        }
        let fulfilled = try await blocking { try self.addTargetNow(id, encoded) }
        // Always both directories: a target found queued already, or a `waiting/<id>` found
        // made already, may be another call's whose fsync has not run yet. The same for a
        // value found: durable before the job enters `outbox/`.
        try await commits.sync(targetDirectories(id.rawValue) + (fulfilled ? [paths.values] : []))
        guard fulfilled else { return }
        try await blocking {
            try self.withJob(id) {
                self.unmarkDone(id.rawValue)
                try self.mark(self.paths.outbox(id.rawValue))
            }
        }
        if responder != nil { try await notifyNow(id) }
    }

    /// The directories whose entries hold a job's waiting targets.
    private func targetDirectories(_ id: String) -> [String] { [paths.waiting(id), paths.waitingDirectory] }

    /// Adds a target; `true` when the job is fulfilled (the fulfiller may not have seen the
    /// target: the caller marks it for notification).
    private func addTargetNow(_ id: JobID, _ encoded: [UInt8]) throws -> Bool {
        try withJob(id) {
            try addTarget(id.rawValue, encoded)
            return Files.exists(paths.value(id.rawValue))
        }
    }

    public func unqueue(_ id: JobID, target: Target) async throws {
        try await unqueueAll(id, targets: [target])
    }

    public func unqueueAll(_ id: JobID, targets: [Target]) async throws {
        let encoded = try Set(targets.map(encodeTarget))
        try await blocking {
            try self.requireJob(id)
            try self.removeTargets(id.rawValue, encoded)
        }
        try await commits.sync(paths.waiting(id.rawValue))
    }

    public func pullNotification() async throws -> NotificationLease<Target>? {
        try await blocking { try self.pullNotificationNow() }
    }

    private func pullNotificationNow() throws -> NotificationLease<Target>? {
        removeOnTheWay()
        for name in Files.list(paths.outboxDirectory).shuffled() {
            guard let id = try? JobID(name), let lease = try tryLease(paths.lease("notify", name)) else { continue }
            if let notification = try notificationLease(id, lease, durableRemoval: true) { return notification }
        }
        return nil
    }

    @discardableResult
    public func update(_ id: JobID, expectedVersion: Int, request: [UInt8]) async throws -> Int {
        try validateTask(request)
        let version = try await blocking { try self.linkVersion(id, expectedVersion, request) }
        // The older versions go only once the new one is durable: never neither.
        try await commits.sync(paths.job(id.rawValue))
        try await blocking {
            for old in self.versions(id.rawValue) where old < version { Files.remove(self.paths.job(id.rawValue) + "/v\(old)") }
        }
        return version
    }

    /// Links the next version (durable content); returns it.
    private func linkVersion(_ id: JobID, _ expectedVersion: Int, _ request: [UInt8]) throws -> Int {
        try requireJob(id)
        if Files.exists(paths.value(id.rawValue)) { throw JobStoreError(.alreadyFulfilled, "job \(id) was fulfilled already") }
        guard let (current, _) = currentVersion(id.rawValue), current == expectedVersion else {
            throw JobStoreError(.versionMismatch, "job \(id) is not at version \(expectedVersion)")
        }
        let temp = try Files.writeTemp(in: paths.tmp, request, durable: true)
        defer { Files.remove(temp) }
        try withJob(id) {
            guard try Files.link(temp, paths.job(id.rawValue) + "/v\(expectedVersion + 1)") else {
                throw JobStoreError(.versionMismatch, "job \(id) was updated concurrently")
            }
        }
        return expectedVersion + 1
    }

    public func state(_ id: JobID) async throws -> JobState {
        try await blocking { self.stateNow(id) }
    }

    private func stateNow(_ id: JobID) -> JobState {
        // The job's directory goes first when a job is removed.
        guard Files.exists(paths.job(id.rawValue)) else { return .unknown }
        if Files.exists(paths.value(id.rawValue)) { return .fulfilled }
        if let version = versions(id.rawValue).max() { return .pending(version: version) }
        return .unknown
    }

    @discardableResult
    public func removeExpired(limit: Int) async throws -> Int {
        guard limit > 0 else { throw RedisError.invalidArgument("limit must be positive") }
        guard let retention else { return 0 }
        return try await blocking { try self.removing.run { try self.removeExpiredStep(retention: retention, limit: limit) } }
    }

    // MARK: Internals

    private func requireJob(_ id: JobID) throws {
        guard Files.exists(paths.job(id.rawValue)) else { throw JobStoreError(.unknownJob, "no job \(id)") }
    }

    /// Runs `body` under a shared lock on the job's directory, which a removal takes
    /// exclusively: what `body` writes for the job is never left behind by a removal.
    /// Throws ``JobStoreError/Code/unknownJob`` when the job is gone.
    private func withJob<T>(_ id: JobID, _ body: () throws -> T) throws -> T {
        let path = paths.job(id.rawValue)
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw JobStoreError(.unknownJob, "no job \(id)") }
            throw Files.error("open", path)
        }
        defer { close(fd) }   // releases the lock
        while cFlock(fd, LOCK_SH) != 0 {
            if errno != EINTR { throw Files.error("flock", path) }
        }
        // Removed while this waited for the lock: the directory it holds was moved away.
        guard Files.exists(path) else { throw JobStoreError(.unknownJob, "no job \(id)") }
        return try body()
    }

    private func versions(_ id: String) -> [Int] {
        Files.list(paths.job(id)).compactMap { $0.hasPrefix("v") ? Int($0.dropFirst()) : nil }
    }

    /// The newest request (an update may delete the one just listed: look again).
    private func currentVersion(_ id: String) -> (Int, [UInt8])? {
        for _ in 0..<10 {
            guard let version = versions(id).max() else { return nil }
            if let request = Files.read(paths.job(id) + "/v\(version)") { return (version, request) }
        }
        return nil
    }

    /// Creates an empty marker file (idempotent; `O_EXCL`, so of two creators one makes it
    /// and an empty file is whole as soon as it exists). Not fsync'ed: `pending/` and
    /// `outbox/` markers are re-derived from durable files when a store is opened, and a
    /// power loss that could lose one restarts every process of the store.
    private func mark(_ path: String) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        if fd >= 0 {
            close(fd)
        } else if errno != EEXIST {
            throw Files.error("create", path)
        }
    }

    /// Drops the outbox marker when no target waits, then puts it back if one was queued
    /// meanwhile: a waiting target is never left without a marker (and a crash in between
    /// is repaired by the next store opened on the directory). A fulfilled job left with
    /// no target is marked done.
    private func refreshOutbox(_ id: String) throws {
        if !waitingFiles(id).isEmpty {
            try mark(paths.outbox(id))
            return
        }
        Files.remove(paths.outbox(id))
        if !waitingFiles(id).isEmpty {
            try mark(paths.outbox(id))
        } else if Files.exists(paths.value(id)) {
            markDone(id)
        }
    }

    // MARK: Retention

    /// Buckets of `done` markers: a retention's sixteenth wide (at least 10 ms), so a job is
    /// removed between one retention and a sixteenth more after it was marked.
    private var bucketWidth: Int64 { max((retention?.redisMilliseconds ?? 0) / 16, 10) }

    /// The bucket a marker made now goes to: named after its end.
    private func currentBucket() -> String {
        paths.done + "/\((now / bucketWidth + 1) * bucketWidth)"
    }

    private func doneMarkers(_ id: String) -> [String] {
        Files.list(paths.done).map { paths.done + "/" + $0 + "/" + id }.filter(Files.exists)
    }

    /// Marks a fulfilled job with no target waiting as removable after the retention (a
    /// store without one writes no marker). A lost marker only delays the removal until the
    /// next store opened on the directory marks the job again; a stray one (a target was
    /// queued meanwhile) is dropped by the removal, which checks again under the lock.
    private func markDone(_ id: String) {
        guard retention != nil, doneMarkers(id).isEmpty else { return }
        for _ in 0..<3 {
            let bucket = currentBucket()
            if mkdir(bucket, 0o755) != 0 && errno != EEXIST { break }
            // An empty file needs no write-then-link: it is whole as soon as it exists.
            let fd = open(bucket + "/" + id, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
            if fd >= 0 { close(fd); return }
            if errno == EEXIST { return }
            if errno != ENOENT { break }   // ENOENT: a removal dropped the empty bucket meanwhile
        }
        logger.warning("could not mark a fulfilled job removable; the next store opened on the directory will",
                       metadata: ["job": "\(id)", "error": "\(String(cString: strerror(errno)))"])
    }

    private func unmarkDone(_ id: String) {
        for marker in doneMarkers(id) { Files.remove(marker) }
    }

    /// The step `pullWork` and `pullNotification` take on their way: skipped while another
    /// task of this process runs one; its errors are left to the next explicit step.
    private func removeOnTheWay() {
        guard let retention else { return }
        _ = try? removing.runIfIdle { try removeExpiredStep(retention: retention, limit: opportunisticRemovals) }
    }

    /// Looks at up to `limit` markers of expired buckets, oldest first; returns how many
    /// jobs it removed. Durable in order: the job directories' renames, then the deletion
    /// of the rest, then the markers.
    private func removeExpiredStep(retention: Duration, limit: Int) throws -> Int {
        let now = self.now
        let expired = Files.list(paths.done).compactMap(Int64.init).filter { $0 + retention.redisMilliseconds <= now }.sorted()
        var looked = 0
        var removing: [(id: String, marker: String)] = []
        var buckets: [String] = []
        var failure: (any Error)?
        for bucket in expired where looked < limit {
            let directory = paths.done + "/\(bucket)"
            buckets.append(directory)
            for name in Files.list(directory, max: limit - looked) {
                looked += 1
                let marker = directory + "/" + name
                do {
                    switch try claim(name) {
                    case .remove: removing.append((name, marker))
                    case .dropMarker: Files.remove(marker)
                    case .later: moveMarker(marker, name)
                    case .busy: break
                    }
                } catch {
                    failure = failure ?? error   // the others are still removed
                }
            }
        }
        if !removing.isEmpty {
            Files.syncDirectory(paths.jobs)
            Failpoint.hit("remove-after-rename")
            for (id, _) in removing { removeRest(id) }
            for directory in [paths.values, paths.pendingDirectory, paths.outboxDirectory, paths.waitingDirectory, paths.leases, paths.tmp] {
                Files.syncDirectory(directory)
            }
            Failpoint.hit("remove-before-marker")
            for (_, marker) in removing { Files.remove(marker) }
        }
        for directory in buckets { _ = rmdir(directory) }   // once empty
        if let failure { throw failure }
        return removing.count
    }

    private enum Claim { case remove, dropMarker, later, busy }

    /// Decides on one marker; for `.remove`, the job's directory was moved into `tmp/`.
    private func claim(_ id: String) throws -> Claim {
        guard (try? JobID(id)) != nil else { return .dropMarker }
        let path = paths.job(id)
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            // Moved away by a removal that did not finish (or another remover): finish it.
            return errno == ENOENT ? .remove : .busy
        }
        defer { close(fd) }
        guard cFlock(fd, LOCK_EX | LOCK_NB) == 0 else { return .busy }   // a fulfil, queue or update is at work
        guard Files.exists(path) else { return .remove }   // another remover moved it meanwhile
        guard Files.exists(paths.value(id)), waitingFiles(id).isEmpty else { return .dropMarker }
        if leaseHeld(paths.lease("work", id)) || leaseHeld(paths.lease("notify", id)) { return .later }
        Failpoint.hit("remove-before-rename")
        try Files.rename(path, paths.removedJob(id))
        return .remove
    }

    /// Deletes what is left of a job whose directory was moved away (idempotent).
    private func removeRest(_ id: String) {
        Files.remove(paths.value(id))
        Files.remove(paths.pending(id))
        Files.remove(paths.outbox(id))
        Files.removeTree(paths.waiting(id))
        Files.removeTree(paths.lease("work", id))
        Files.removeTree(paths.lease("notify", id))
        Files.removeTree(paths.removedJob(id))
    }

    /// Looks at a leased job again a retention from now.
    private func moveMarker(_ marker: String, _ id: String) {
        let bucket = currentBucket()
        if mkdir(bucket, 0o755) != 0 && errno != EEXIST { return }
        _ = Files.renameIfPossible(marker, bucket + "/" + id)
    }

    /// Whether a live lease is held in `directory` (an unreadable top generation is being
    /// taken over: held).
    private func leaseHeld(_ directory: String) -> Bool {
        guard let top = generations(directory).max() else { return false }
        guard let content = leaseContent(directory + "/\(top)") else { return true }
        return content.expires > now
    }

    private func waitingFiles(_ id: String) -> [(path: String, target: [UInt8])] {
        let directory = paths.waiting(id)
        return Files.list(directory).compactMap { name in
            let path = directory + "/" + name
            return Files.read(path).map { (path, $0) }
        }
    }

    private func addTarget(_ id: String, _ encoded: [UInt8]) throws {
        if waitingFiles(id).contains(where: { $0.target == encoded }) { return }
        try Files.makeDirectory(paths.waiting(id))
        let temp = try Files.writeTemp(in: paths.tmp, encoded, durable: true)
        try Files.rename(temp, paths.waiting(id) + "/" + fnv1a(encoded) + "-" + UUID().uuidString.prefix(8))
    }

    private func removeTargets(_ id: String, _ encoded: Set<[UInt8]>) throws {
        for file in waitingFiles(id) where encoded.contains(file.target) { Files.remove(file.path) }
        try refreshOutbox(id)
    }

    /// The lease's `done(removing:)` makes its removals durable before it returns when
    /// `durableRemoval` (a caller of ``pullNotification()`` is told they are removed); the
    /// `respond` path does not wait (nobody is told: a removal a power loss undoes means a
    /// target notified again, which notification, at least once, allows anyway).
    private func notificationLease(_ id: JobID, _ lease: FileLease, durableRemoval: Bool) throws -> NotificationLease<Target>? {
        let targets = waitingFiles(id.rawValue)
        guard !targets.isEmpty, let value = Files.read(paths.value(id.rawValue)) else {
            try refreshOutbox(id.rawValue)
            _ = release(lease)
            return nil
        }
        let waiting = try targets.map { try decodeTarget($0.target, as: Target.self) }
        return NotificationLease(id: id, value: value, waiting: waiting, keeper: keeper(lease)) { notified in
            let encoded = try Set(notified.map(encodeTarget))
            try await blocking { try self.removeTargets(id.rawValue, encoded) }
            if durableRemoval { try await self.commits.sync(self.paths.waiting(id.rawValue)) }
        }
    }

    /// Notifies the waiting targets of a fulfilled job through `responder`, waiting up to the
    /// lease timeout for another notifier to finish; otherwise they stay in the outbox.
    private func notifyNow(_ id: JobID) async throws {
        guard let responder else { return }
        let deadline = ContinuousClock.now + leaseTimeout
        while ContinuousClock.now < deadline {
            let step = try await blocking { () -> NotifyStep<Target> in
                if self.waitingFiles(id.rawValue).isEmpty { return .done }
                guard let lease = try self.tryLease(self.paths.lease("notify", id.rawValue)) else { return .busy }
                return try self.notificationLease(id, lease, durableRemoval: false).map { .notify($0) } ?? .done
            }
            switch step {
            case .done: return
            case .notify(let notification):
                try await deliver(notification, responder)
                return
            case .busy:
                try await Task.sleep(for: .milliseconds(10))
            }
        }
    }

    // MARK: Introspection

    /// The store's counts, from its marker directories (a lease counts while it has not
    /// expired, on this host's clock).
    public func counts() async throws -> JobCounts {
        try await blocking {
            let pending = Files.list(self.paths.pendingDirectory)
            let leased = pending.filter { id in
                let directory = self.paths.lease("work", id)
                guard let top = self.generations(directory).max(),
                      let content = self.leaseContent(directory + "/\(top)") else { return false }
                return content.expires > self.now
            }
            return JobCounts(pending: pending.count, leased: leased.count,
                             fulfilled: Files.list(self.paths.values).count,
                             waitingNotification: Files.list(self.paths.outboxDirectory).count)
        }
    }

    // MARK: Leases

    struct FileLease: Sendable {
        let directory: String
        let generation: Int
        let token: String
    }

    private var now: Int64 { Int64(Date().timeIntervalSince1970 * 1000) }

    private func generations(_ directory: String) -> [Int] { Files.list(directory).compactMap { Int($0) } }

    /// A lease file's token and expiry; `nil` when it is gone. Lease files are not fsync'ed,
    /// so after a power loss one may be empty or cut short: such a file is read as expired
    /// (its holder died with the host). A file is never seen so otherwise: every lease file
    /// is written whole in `tmp/` before it is linked or renamed into place.
    private func leaseContent(_ path: String) -> (token: String, expires: Int64)? {
        guard let bytes = Files.read(path) else { return nil }
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: " ")
        guard parts.count == 2, let expires = Int64(parts[1]) else { return ("", 0) }
        return (String(parts[0]), expires)
    }

    /// Takes the lease when it is free (released) or expired; `nil` when held. Every
    /// taker links the generation above the highest one, so `link(2)` lets one win; the
    /// highest generation is never deleted (a release overwrites it with a marker), so
    /// generations, the file backend's fencing tokens, only grow.
    private func tryLease(_ directory: String) throws -> FileLease? {
        try Files.makeDirectory(directory)
        for _ in 0..<3 {
            let existing = generations(directory)
            var next = 1
            if let top = existing.max() {
                // Unreadable: a newer taker cleaned it up meanwhile; look again.
                guard let content = leaseContent(directory + "/\(top)") else { continue }
                if content.expires > now { return nil }
                next = top + 1
            }
            let token = UUID().uuidString
            let temp = try Files.writeTemp(in: paths.tmp, Array("\(token) \(now + leaseTimeout.redisMilliseconds)".utf8), durable: false)
            defer { Files.remove(temp) }
            guard try Files.link(temp, directory + "/\(next)") else { return nil }   // another process won
            // A process that listed an older state may have linked a lower generation: the
            // highest one holds, the others step back.
            if let top = generations(directory).max(), top != next {
                Files.remove(directory + "/\(next)")
                return nil
            }
            for old in existing where old < next { Files.remove(directory + "/\(old)") }
            return FileLease(directory: directory, generation: next, token: token)
        }
        return nil
    }

    private func holds(_ lease: FileLease) -> Bool {
        generations(lease.directory).max() == lease.generation
            && leaseContent(lease.directory + "/\(lease.generation)")?.token == lease.token
    }

    private func renew(_ lease: FileLease) throws -> Bool {
        guard holds(lease) else { return false }
        let temp = try Files.writeTemp(in: paths.tmp, Array("\(lease.token) \(now + leaseTimeout.redisMilliseconds)".utf8), durable: false)
        try Files.rename(temp, lease.directory + "/\(lease.generation)")
        return holds(lease)
    }

    /// Overwrites the holder's generation with a `released` marker (expired at once).
    private func release(_ lease: FileLease) -> Bool {
        guard holds(lease) else { return false }
        guard let temp = try? Files.writeTemp(in: paths.tmp, Array("released 0".utf8), durable: false) else { return false }
        do {
            try Files.rename(temp, lease.directory + "/\(lease.generation)")
        } catch {
            Files.remove(temp)
            return false
        }
        return true
    }

    private func keeper(_ lease: FileLease) -> LeaseKeeper {
        LeaseKeeper(timeout: leaseTimeout, metrics: metrics, renew: { try await blocking { try self.renew(lease) } },
                    release: { try await blocking { self.release(lease) } })
    }
}

/// What `notifyNow` found: nothing to do, a notifier at work, or a lease to notify with.
enum NotifyStep<Target: Codable & Sendable>: Sendable {
    case done, busy, notify(NotificationLease<Target>)
}

/// File calls block (an fsync can take milliseconds), so they run on Dispatch threads, never
/// on the cooperative pool, which has one thread per core and runs every task of the app.
let fileCalls = DispatchQueue(label: "queuekit.file-job-store", attributes: .concurrent)

/// Runs `body` on ``fileCalls`` and returns what it returned.
func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        fileCalls.async { continuation.resume(with: Result { try body() }) }
    }
}

/// One removal step at a time in a process (a step is a bounded number of file calls).
final class RemovalGate: Sendable {
    private let lock = Mutex(())

    /// Runs `body` once the step running now, if any, is over.
    func run(_ body: () throws -> Int) throws -> Int {
        try lock.withLock { _ in try body() }
    }

    /// Runs `body`, or returns `nil` when a step is running.
    func runIfIdle(_ body: () throws -> Int) throws -> Int? {
        try lock.withLockIfAvailable { _ in try body() }
    }
}

/// Paths inside a store directory.
struct StorePaths: Sendable {
    static let subdirectories = ["jobs", "values", "pending", "waiting", "outbox", "leases", "done", "tmp"]
    let root: String
    var jobs: String { root + "/jobs" }
    var values: String { root + "/values" }
    var pendingDirectory: String { root + "/pending" }
    var outboxDirectory: String { root + "/outbox" }
    var tmp: String { root + "/tmp" }
    var waitingDirectory: String { root + "/waiting" }
    var leases: String { root + "/leases" }
    var done: String { root + "/done" }
    func removedJob(_ id: String) -> String { root + "/tmp/" + id + ".removed" }
    func job(_ id: String) -> String { root + "/jobs/" + id }
    func value(_ id: String) -> String { root + "/values/" + id }
    func pending(_ id: String) -> String { root + "/pending/" + id }
    func outbox(_ id: String) -> String { root + "/outbox/" + id }
    func waiting(_ id: String) -> String { root + "/waiting/" + id }
    func lease(_ kind: String, _ id: String) -> String { root + "/leases/" + kind + "-" + id }
}

/// A test hook: `HIREDISKIT_JOBSTORE_FAILPOINT=<name>` kills the process (SIGKILL) when the
/// file store reaches that point, to prove what a crash there leaves behind.
enum Failpoint {
    static let armed = ProcessInfo.processInfo.environment["HIREDISKIT_JOBSTORE_FAILPOINT"]
    static func hit(_ name: String) {
        if armed == name { raise(SIGKILL) }
    }
}

/// 64-bit FNV-1a, hex: a short, stable file name for a target (collisions are harmless:
/// names carry a random suffix and files are matched by content).
func fnv1a(_ bytes: [UInt8]) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in bytes {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}

private func cLink(_ from: String, _ to: String) -> Int32 { link(from, to) }
private func cRename(_ from: String, _ to: String) -> Int32 { rename(from, to) }
private func cRead(_ fd: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int) -> Int { read(fd, buffer, count) }
private func cFlock(_ fd: Int32, _ operation: Int32) -> Int32 { flock(fd, operation) }

/// Thin POSIX helpers: every write is a new file, written whole before it is linked or
/// renamed (and fdatasync'ed first where its content must survive a power loss).
enum Files {
    static func error(_ what: String, _ path: String) -> JobStoreError {
        JobStoreError(.io, "\(what) \(path): \(String(cString: strerror(errno)))")
    }

    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o755) != 0 && errno != EEXIST { throw error("mkdir", path) }
    }

    /// Creates `path` (which must not exist), writes `bytes`; when `durable`, `fdatasync`s
    /// (the content and the size, not the times: all a reader needs after a power loss).
    static func writeNew(_ path: String, _ bytes: [UInt8], durable: Bool) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw error("create", path) }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + offset, bytes.count - offset) }
            if written < 0 {
                if errno == EINTR { continue }
                throw error("write", path)
            }
            offset += written
        }
        if durable && fdatasync(fd) != 0 { throw error("fdatasync", path) }
    }

    static func writeTemp(in directory: String, _ bytes: [UInt8], durable: Bool) throws -> String {
        let path = directory + "/" + UUID().uuidString
        try writeNew(path, bytes, durable: durable)
        return path
    }

    /// `link(2)`: false when `to` exists (someone else won).
    static func link(_ from: String, _ to: String) throws -> Bool {
        if cLink(from, to) == 0 { return true }
        if errno == EEXIST { return false }
        throw error("link", to)
    }

    static func rename(_ from: String, _ to: String) throws {
        guard cRename(from, to) == 0 else { throw error("rename", to) }
    }

    static func renameIfPossible(_ from: String, _ to: String) -> Bool { cRename(from, to) == 0 }

    static func remove(_ path: String) { _ = unlink(path) }

    static func removeTree(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    static func exists(_ path: String) -> Bool { access(path, F_OK) == 0 }

    /// The names in `directory` (at most `max`, in the directory's order).
    static func list(_ directory: String, max: Int = .max) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while names.count < max, let entry = readdir(dir) {
            let name = withUnsafePointer(to: entry.pointee.d_name) {
                $0.withMemoryRebound(to: CChar.self, capacity: 256) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    static func read(_ path: String) -> [UInt8]? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = buffer.withUnsafeMutableBytes { cRead(fd, $0.baseAddress!, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            result.append(contentsOf: buffer[0..<count])
        }
        return result
    }

    /// Makes the entries made or dropped in `directory` durable (errors ignored: the
    /// removal's steps, which a later removal repeats).
    static func syncDirectory(_ directory: String) {
        try? syncDirectoryOrThrow(directory)
    }

    /// Makes the entries made or dropped in `directory` durable.
    static func syncDirectoryOrThrow(_ directory: String) throws {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw error("open", directory) }
        defer { close(fd) }
        while fsync(fd) != 0 {
            if errno != EINTR { throw error("fsync", directory) }
        }
    }
}
