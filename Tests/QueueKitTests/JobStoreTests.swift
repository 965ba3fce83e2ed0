import Foundation
import Hiredis
import Logging
import QueueKit
import RedisTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
import Glibc
#endif

enum Backend: String, CaseIterable, Sendable {
    case file, redis
    /// The Redis store spread over 16 shards (slots), on one server (the helper's `redis-sharded`).
    case shardedRedis = "redis-sharded"

    static let shards = 16
}

/// Where one test's store lives: a fresh directory, or a fresh prefix on a test Redis.
struct StoreLocation: Sendable {
    let backend: Backend
    let directory: URL
    let redis: TestRedis?
    let prefix: String

    static func make(_ backend: Backend) async throws -> StoreLocation {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobstore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let redis = backend == .file ? nil : try await TestRedis.start()
        return StoreLocation(backend: backend, directory: directory, redis: redis, prefix: uniqueName("jobs"))
    }

    func store(lease: Duration = .seconds(10), retention: Duration? = .seconds(3600),
               logger: Logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
               respond: JobResponder<String>? = nil,
               onResponseFailure: JobResponseFailureHandler<String>? = nil) async throws -> any JobStore<String> {
        switch backend {
        case .file:
            return try FileJobStore<String>(directory: directory, leaseTimeout: lease, retention: retention, logger: logger,
                                            respond: respond, onResponseFailure: onResponseFailure)
        case .redis, .shardedRedis:
            return try RedisJobStore<String>(client: try await redis!.connect(), prefix: prefix, leaseTimeout: lease,
                                             retention: retention, shards: backend == .redis ? 1 : Backend.shards,
                                             logger: logger, respond: respond, onResponseFailure: onResponseFailure)
        }
    }

    /// What the store occupies: its keys (Redis, found with SCAN), or every path under its
    /// directory (file).
    func footprint() async throws -> [String] {
        switch backend {
        case .file:
            return try FileManager.default.subpathsOfDirectory(atPath: directory.path).sorted()
        case .redis, .shardedRedis:
            let client = try await redis!.connect()
            let keys = await catching {
                var keys: [String] = []
                var cursor = "0"
                repeat {
                    guard case .array(let reply) = try await client.send("SCAN", cursor, "MATCH", "{\(prefix)*", "COUNT", "1000"),
                          reply.count == 2 else { throw JobStoreTestError("SCAN") }
                    cursor = try reply[0].decode(String.self)
                    keys += try reply[1].decode([String].self)
                } while cursor != "0"
                return keys.sorted()
            }
            await client.close()
            return try keys.get()
        }
    }

    /// The footprint of an empty store that has been used.
    var floor: [String] {
        switch backend {
        case .file: return ["done", "jobs", "leases", "outbox", "pending", "tmp", "values", "waiting"]
        case .redis: return ["{\(prefix)}:fence", "{\(prefix)}:seq"]
        case .shardedRedis: return (0..<Backend.shards).flatMap { ["{\(prefix):\($0)}:fence", "{\(prefix):\($0)}:seq"] }.sorted()
        }
    }

    /// Keeps the throwaway Redis (stopped when this is released) until the test's end.
    func keepAlive() { withExtendedLifetime(redis) {} }

    /// The arguments of the helper's `jobs-*` commands.
    func helperArguments(lease: Duration) -> [String] {
        [backend.rawValue, backend == .file ? directory.path : redis!.url, prefix, "\(lease.components.seconds * 1000 + lease.components.attoseconds / 1_000_000_000_000_000)"]
    }
}

/// Every notification a `respond` handler received.
final class Notifications: Sendable {
    private let received = Mutex<[String: [String]]>([:])
    let inbox = Inbox<String>()

    var handler: JobResponder<String> {
        { target, _, value in
            self.received.withLock { $0[target, default: []].append(String(decoding: value, as: UTF8.self)) }
            self.inbox.put(target)
            return true
        }
    }

    func values(_ target: String) -> [String] { received.withLock { $0[target] ?? [] } }
    var all: [String: [String]] { received.withLock { $0 } }
}

@Suite struct JobStoreTests {
    @Test(arguments: Backend.allCases)
    func queuedBeforeAndAfterAreBothNotified(_ backend: Backend) async throws {
        let notifications = Notifications()
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store(respond: notifications.handler)
        let id = try await store.create(request: ["question": "yes?"])
        try await store.queue(id, target: "before")
        #expect(notifications.values("before").isEmpty)
        try await store.fulfill(id, value: "no")
        #expect(notifications.values("before") == ["no"])
        try await store.queue(id, target: "after")
        #expect(notifications.values("after") == ["no"])
        #expect(try await store.state(id) == .fulfilled)
        #expect(try await store.pullNotification() == nil)
    }

    /// fs-job-store's `onresponsefailure`: a `respond` that throws is logged and reported,
    /// and its target stays queued for `pullNotification()`, on the fulfil path (which
    /// delivers under a notification lease) and on the queue-to-a-fulfilled-job path; the
    /// targets that were notified are removed.
    @Test(arguments: Backend.allCases)
    func aRespondHandlerThatThrowsIsReportedAndItsTargetWaitsForPullNotification(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let notifications = Notifications()
        let failures = Locked<[ResponseFailure]>([])
        let logs = LogCapture()
        let store = try await location.store(logger: logs.logger, respond: { target, id, value in
            if target.hasPrefix("bad") { throw JobStoreTestError("\(target) is unreachable") }
            return try await notifications.handler(target, id, value)
        }, onResponseFailure: { target, id, error in
            failures.withLock { $0.append(ResponseFailure(target: target, id: id, error: "\(error)")) }
        })
        let id = try await store.create(request: "r")
        for target in ["good1", "bad1", "good2"] { try await store.queue(id, target: target) }
        try await store.fulfill(id, value: "v")
        #expect(failures.withLock { $0 } == [ResponseFailure(target: "bad1", id: id, error: "bad1 is unreachable")])
        #expect(notifications.values("good1") == ["v"] && notifications.values("good2") == ["v"])

        try await store.queue(id, target: "bad2")
        try await store.queue(id, target: "good3")
        #expect(failures.withLock { $0 }.map(\.target) == ["bad1", "bad2"])
        #expect(failures.withLock { $0 }.allSatisfy { $0.id == id })
        #expect(notifications.values("good3") == ["v"])
        #expect(logs.entries(atLeast: .error).count == 2, "each failure is logged once")

        let lease = try #require(try await store.pullNotification(), "the failed targets still wait")
        #expect(lease.id == id && lease.waiting.sorted() == ["bad1", "bad2"], "the notified ones were removed")
        try await lease.done(removing: lease.waiting)
        #expect(try await store.pullNotification() == nil)
    }

    @Test(arguments: Backend.allCases)
    func stressTwentyConcurrentChains(_ backend: Backend) async throws {
        let notifications = Notifications()
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store(respond: notifications.handler)
        let ids = Locked<[Int: JobID]>([:])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chain in 0..<20 {
                group.addTask {
                    let id = try await store.create(request: "request-\(chain)")
                    ids.withLock { $0[chain] = id }
                    try await store.queue(id, target: "t\(chain)")
                    // Any chain may pull any job: another chain can have leased this one
                    // before the job it will lease exists, so a pull may find nothing yet.
                    // There are as many jobs as pulls, and a job is pulled once (fulfilled
                    // before it is released), so one is always coming.
                    var pulled = try await store.pullWork()
                    for _ in 0..<2_000 where pulled == nil {
                        try await Task.sleep(for: .milliseconds(5))
                        pulled = try await store.pullWork()
                    }
                    let lease = try #require(pulled)
                    do {
                        try await store.fulfill(lease.id, value: "value-\(lease.id)")
                    } catch let error as JobStoreError where error.code == .alreadyFulfilled {
                        // Lost the race: carry on.
                    }
                    try await lease.release()
                    try await store.queue(id, target: "after\(chain)")
                }
            }
            try await group.waitForAll()
        }
        let jobs = ids.withLock { $0 }
        for chain in 0..<20 {
            let id = try #require(jobs[chain])
            #expect(try await store.state(id) == .fulfilled)
            #expect(notifications.values("t\(chain)") == ["value-\(id)"])
            #expect(notifications.values("after\(chain)") == ["value-\(id)"])
        }
        #expect(notifications.all.count == 40)
        #expect(try await store.pullWork() == nil)
        #expect(try await store.pullNotification() == nil)
    }

    @Test(arguments: Backend.allCases)
    func pullWorkIsExclusiveAcrossEightProcesses(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        var created: Set<String> = []
        for index in 0..<1000 { created.insert(try await store.create(request: "job-\(index)").rawValue) }
        let helpers = try (0..<8).map { _ in try HelperProcess(["jobs-pull"] + location.helperArguments(lease: .seconds(10))) }
        var fulfilled: [String] = []
        for helper in helpers {
            let lines = await helper.lines.collect()
            #expect(await helper.exitStatus() == 0)
            let ids = lines.first { $0.hasPrefix("fulfilled ") }.map { $0.dropFirst("fulfilled ".count).split(separator: ",").map(String.init) } ?? []
            fulfilled += ids
            #expect(lines.last == "lost 0", "a process pulled a job that another had fulfilled")
        }
        #expect(fulfilled.count == 1000)
        #expect(Set(fulfilled) == created, "every job fulfilled exactly once")
        #expect(try await store.pullWork() == nil)
    }

    @Test(arguments: Backend.allCases)
    func aHolderPausedPastItsLeaseLosesTheJob(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let lease = Duration.milliseconds(1500)
        // The helpers' leases are short (they are paused or killed past them); the test's
        // own are long, so that a loaded machine's stall cannot cost it its lease.
        let store = try await location.store(lease: .seconds(10))
        let id = try await store.create(request: "slow")
        let holder = try HelperProcess(["jobs-hold"] + location.helperArguments(lease: lease) + ["work"])
        var first: [String] = []
        for await line in holder.lines {
            first.append(line)
            break
        }
        #expect(first == ["held \(id)"])
        holder.signal(SIGSTOP)
        var taken: JobLease?
        try await eventually("the paused holder's lease to expire") {
            taken = try await store.pullWork()
            return taken != nil
        }
        let mine = try #require(taken)
        #expect(mine.id == id)
        try await store.fulfill(id, value: "winner")
        try await mine.release()
        holder.signal(SIGCONT)
        #expect(await holder.lines.collect() == ["compromised", "late fulfil: alreadyFulfilled", "release: leaseCompromised"])
        #expect(await holder.exitStatus() == 0)
    }

    @Test(arguments: Backend.allCases)
    func aKilledHoldersWorkAndNotificationAreCompletedByAnother(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let lease = Duration.milliseconds(1500)
        let notifications = Notifications()
        let store = try await location.store(lease: .seconds(10))   // see aHolderPausedPastItsLeaseLosesTheJob
        let id = try await store.create(request: "work")
        try await store.queue(id, target: "waiter")

        let worker = try HelperProcess(["jobs-hold"] + location.helperArguments(lease: lease) + ["work"])
        for await line in worker.lines {
            #expect(line == "held \(id)")
            break
        }
        worker.signal(SIGKILL)
        _ = await worker.exitStatus()
        var taken: JobLease?
        try await eventually("the killed holder's work lease to expire") {
            taken = try await store.pullWork()
            return taken != nil
        }
        #expect(taken?.id == id)
        try await store.fulfill(id, value: "done")   // no respond here: the target waits in the outbox
        try await taken?.release()

        let notifier = try HelperProcess(["jobs-hold"] + location.helperArguments(lease: lease) + ["notify"])
        for await line in notifier.lines {
            #expect(line == "held \(id) waiter")
            break
        }
        notifier.signal(SIGKILL)
        _ = await notifier.exitStatus()
        var notification: NotificationLease<String>?
        try await eventually("the killed holder's notification lease to expire") {
            notification = try await store.pullNotification()
            return notification != nil
        }
        let pulled = try #require(notification)
        #expect(pulled.id == id && pulled.waiting == ["waiter"] && pulled.value == Array("done".utf8))
        try await deliverAll(pulled, notifications.handler)
        #expect(notifications.values("waiter") == ["done"])
        #expect(try await store.pullNotification() == nil)
    }

    @Test(arguments: Backend.allCases)
    func pullNotificationDoneRemovingOnlyTheNotified(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let id = try await store.create(request: "r")
        for target in ["a", "b", "c"] { try await store.queue(id, target: target) }
        try await store.unqueue(id, target: "c")
        try await store.fulfill(id, value: "v")
        let lease = try #require(try await store.pullNotification())
        #expect(lease.waiting.sorted() == ["a", "b"])
        #expect(try await store.pullNotification() == nil, "leased: nobody else gets it")
        try await lease.done(removing: ["a"])
        let again = try #require(try await store.pullNotification())
        #expect(again.waiting == ["b"])
        try await again.done(removing: ["b"])
        #expect(try await store.pullNotification() == nil)
    }

    @Test(arguments: Backend.allCases)
    func unqueueAllRemovesNotifiedAndWaitingTargets(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let id = try await store.create(request: "r")
        for target in ["a", "b", "c"] { try await store.queue(id, target: target) }
        try await store.unqueueAll(id, targets: ["a", "b"])
        try await store.fulfill(id, value: "v")
        let lease = try #require(try await store.pullNotification())
        #expect(lease.waiting == ["c"])
        try await lease.done(removing: [])
        try await store.unqueueAll(id, targets: ["c"])
        #expect(try await store.pullNotification() == nil)
    }

    /// As fs-job-store: a new job's request is version 0, and each update adds one.
    @Test(arguments: Backend.allCases)
    func aNewJobIsAtVersionZeroAndItsFirstUpdateReturnsOne(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let id = try await store.create(request: "v0")
        #expect(try await store.state(id) == .pending(version: 0))
        let fresh = try #require(try await store.pullWork())
        #expect(fresh.id == id && fresh.version == 0 && fresh.request == Array("v0".utf8))
        try await fresh.release()
        #expect(try await store.update(id, expectedVersion: 0, request: Array("v1".utf8)) == 1)
        #expect(try await store.state(id) == .pending(version: 1))
        #expect(try await store.update(id, expectedVersion: 1, request: Array("v2".utf8)) == 2)
        if backend == .file {
            let files = try FileManager.default.contentsOfDirectory(atPath: location.directory.appendingPathComponent("jobs/\(id)").path)
            #expect(files == ["v2"], "older versions are dropped")
        }
        let lease = try #require(try await store.pullWork())
        #expect(lease.version == 2 && lease.request == Array("v2".utf8))
        try await lease.release()
    }

    @Test(arguments: Backend.allCases)
    func updateChecksTheVersion(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let id = try await store.create(request: "v0")
        #expect(try await store.state(id) == .pending(version: 0))
        #expect(try await store.update(id, expectedVersion: 0, request: Array("v1".utf8)) == 1)
        await #expect { try await store.update(id, expectedVersion: 0, request: Array("stale".utf8)) } throws: {
            ($0 as? JobStoreError)?.code == .versionMismatch
        }
        let lease = try #require(try await store.pullWork())
        #expect(lease.request == Array("v1".utf8) && lease.version == 1)
        try await store.fulfill(id, value: "x")
        try await lease.release()
        await #expect { try await store.update(id, expectedVersion: 1, request: Array("late".utf8)) } throws: {
            ($0 as? JobStoreError)?.code == .alreadyFulfilled
        }
        await #expect { try await store.fulfill(id, value: "second") } throws: {
            ($0 as? JobStoreError)?.code == .alreadyFulfilled
        }
    }

    @Test(arguments: Backend.allCases)
    func releaseIsSafeTwiceAndPutsTheJobBack(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let id = try await store.create(request: "r")
        let lease = try #require(try await store.pullWork())
        #expect(try await store.pullWork() == nil)
        try await lease.release()
        try await lease.release()
        #expect(try await store.pullWork()?.id == id)
    }

    @Test(arguments: Backend.allCases)
    func unknownJobsAreTypedErrors(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store = try await location.store()
        let unknown = try JobID(UUID().uuidString)
        #expect(try await store.state(unknown) == .unknown)
        let isUnknown: @Sendable (any Error) -> Bool = { ($0 as? JobStoreError)?.code == .unknownJob }
        await #expect(performing: { try await store.fulfill(unknown, value: "v") }, throws: isUnknown)
        await #expect(performing: { try await store.queue(unknown, target: "t") }, throws: isUnknown)
        await #expect(performing: { try await store.unqueue(unknown, target: "t") }, throws: isUnknown)
        await #expect(performing: { try await store.update(unknown, expectedVersion: 1, request: []) }, throws: isUnknown)
        #expect(throws: JobStoreError.self) { try JobID("../../etc/passwd") }
        #expect(try await store.pullWork() == nil)
    }
}

/// Delivers through `respond` and removes the notified targets.
func deliverAll(_ lease: NotificationLease<String>, _ respond: JobResponder<String>) async throws {
    var notified: [String] = []
    for target in lease.waiting where try await respond(target, lease.id, lease.value) { notified.append(target) }
    try await lease.done(removing: notified)
}

/// Lease files under a file store that are not `released` markers.
func liveLeases(_ directory: URL) throws -> [String] {
    let leases = directory.appendingPathComponent("leases")
    return try FileManager.default.subpathsOfDirectory(atPath: leases.path).filter { path in
        guard path.contains("/"), let data = FileManager.default.contents(atPath: leases.appendingPathComponent(path).path) else { return false }
        return !String(decoding: data, as: UTF8.self).hasPrefix("released")
    }
}

@Suite struct FileJobStoreTests {
    func directory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobstore-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func releasedLeasesLeaveNoLiveLeaseAndGenerationsGrow() async throws {
        let directory = try directory()
        let store = try FileJobStore<String>(directory: directory)
        let id = try await store.create(request: "r")
        var tokens: [Int64] = []
        for _ in 0..<3 {
            let lease = try #require(try await store.pullWork())
            tokens.append(lease.fencingToken)
            try await lease.release()
        }
        #expect(tokens == [1, 2, 3], "a release never resets the generation")
        #expect(try liveLeases(directory).isEmpty)
        #expect(try await store.state(id) == .pending(version: 0))
    }

    /// A bad option is the same error whichever backend is asked (as for every other
    /// option of the library): `RedisError.invalidArgument`.
    @Test(arguments: Backend.allCases)
    func aTooShortLeaseIsTheSameErrorOnBothBackends(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        await #expect { _ = try await location.store(lease: .milliseconds(10)) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
    }

    @Test func invalidDirectoriesAreRefusedAndNothingIsWritten() throws {
        let missing = FileManager.default.temporaryDirectory.appendingPathComponent("missing-\(UUID().uuidString)")
        let isInvalid: (any Error) -> Bool = { ($0 as? JobStoreError)?.code == .invalidStore }
        #expect(performing: { try FileJobStore<String>(directory: missing) }, throws: isInvalid)
        #expect(!FileManager.default.fileExists(atPath: missing.path))
        let file = try directory().appendingPathComponent("a-file")
        try Data("x".utf8).write(to: file)
        #expect(performing: { try FileJobStore<String>(directory: file) }, throws: isInvalid)
        let readOnly = try directory()
        chmod(readOnly.path, 0o555)
        defer { chmod(readOnly.path, 0o755) }
        #expect(performing: { try FileJobStore<String>(directory: readOnly) }, throws: isInvalid)
        #expect(try FileManager.default.contentsOfDirectory(atPath: readOnly.path).isEmpty)
    }

    /// A creator killed between the temp write and the rename, or between the rename and
    /// listing the job: no corrupt job, no stray lock; the listed-but-unmarked job is
    /// finished by the next store opened on the directory.
    @Test(arguments: ["create-before-rename", "create-before-pending"])
    func aCreatorKilledMidCreateLeavesNothingThatBlocks(_ failpoint: String) async throws {
        let directory = try directory()
        let store = try FileJobStore<String>(directory: directory)
        let before = try await store.create(request: "healthy")
        let crasher = try HelperProcess(["jobs-create", "file", directory.path, "p", "10000"],
                                        environment: ["HIREDISKIT_JOBSTORE_FAILPOINT": failpoint])
        #expect(await crasher.lines.collect().isEmpty)
        #expect(await crasher.exitStatus() == SIGKILL)
        let reopened = try FileJobStore<String>(directory: directory)
        var pulled: [String] = []
        while let lease = try await reopened.pullWork() {
            pulled.append(String(decoding: lease.request, as: UTF8.self))
            try await reopened.fulfill(lease.id, value: "ok")
            try await lease.release()
        }
        let expected = failpoint == "create-before-rename" ? ["healthy"] : ["crash test", "healthy"]
        #expect(pulled.sorted() == expected)
        #expect(try await reopened.state(before) == .fulfilled)
        #expect(try liveLeases(directory).isEmpty, "no live lease left")
    }
}

/// A target whose encoding fails once its name is in `poisoned`: a removal that fails
/// before it reaches the store.
struct FlakyTarget: Codable, Sendable, Equatable {
    static let poisoned = Mutex<Set<String>>([])
    let name: String

    init(_ name: String) { self.name = name }

    init(from decoder: any Decoder) throws {
        name = try decoder.singleValueContainer().decode(String.self)
    }

    func encode(to encoder: any Encoder) throws {
        if Self.poisoned.withLock({ $0.contains(name) }) { throw JobStoreTestError("\(name) cannot be encoded") }
        var container = encoder.singleValueContainer()
        try container.encode(name)
    }
}

struct ResponseFailure: Sendable, Equatable {
    let target: String
    let id: JobID
    let error: String
}


@Suite struct NotificationLeaseTests {
    /// Removing the notified targets fails: the lease is released all the same (here a 60 s
    /// lease would otherwise keep the job from the next pull), and the targets stay.
    @Test(arguments: Backend.allCases)
    func doneReleasesTheLeaseEvenWhenRemovingFails(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let store: any JobStore<FlakyTarget> = switch backend {
        case .file: try FileJobStore<FlakyTarget>(directory: location.directory, leaseTimeout: .seconds(60))
        case .redis, .shardedRedis:
            try RedisJobStore<FlakyTarget>(client: try await location.redis!.connect(), prefix: location.prefix,
                                           leaseTimeout: .seconds(60), shards: backend == .redis ? 1 : Backend.shards)
        }
        let target = FlakyTarget("target-\(UUID().uuidString)")
        let id = try await store.create(request: Array("r".utf8))
        try await store.queue(id, target: target)
        try await store.fulfill(id, value: Array("v".utf8))
        let lease = try #require(try await store.pullNotification())
        FlakyTarget.poisoned.withLock { _ = $0.insert(target.name) }
        defer { FlakyTarget.poisoned.withLock { _ = $0.remove(target.name) } }
        await #expect(throws: JobStoreTestError.self) { try await lease.done(removing: [target]) }
        let again = try #require(try await store.pullNotification(), "the lease was released")
        #expect(again.waiting == [target])
        FlakyTarget.poisoned.withLock { _ = $0.remove(target.name) }
        try await again.done(removing: [target])
        #expect(try await store.pullNotification() == nil)
    }
}

struct JobStoreTestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
