import Foundation
import Hiredis
import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A fulfilled job whose targets were all notified is removed after the store's retention,
/// on both backends; nothing that still matters is ever removed.
@Suite struct JobStoreRetentionTests {
    @Test(arguments: Backend.allCases)
    func aFulfilledJobIsRemovedAfterItsRetentionOnlyWhenNoTargetWaitsAndNoLeaseIsHeld(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        await #expect { _ = try await location.store(retention: .zero) } throws: {
            ($0 as? RedisError)?.code == .invalidArgument
        }
        let store = try await location.store(retention: .milliseconds(100))
        await #expect { try await store.removeExpired(limit: 0) } throws: { ($0 as? RedisError)?.code == .invalidArgument }

        let waiting = try await store.create(request: "a target waits")
        try await store.queue(waiting, target: "t")
        try await store.fulfill(waiting, value: "v")
        let leased = try await store.create(request: "its work lease is held")
        let lease = try #require(try await store.pullWork())
        #expect(lease.id == leased)
        try await store.fulfill(leased, value: "v")
        let finished = try await store.create(request: "nothing left to do")
        try await store.fulfill(finished, value: "v")
        let pending = try await store.create(request: "never fulfilled")

        try await eventually("the finished job to be removed") {
            try await store.removeExpired()
            return try await store.state(finished) == .unknown
        }
        #expect(try await store.state(waiting) == .fulfilled)
        #expect(try await store.state(leased) == .fulfilled)
        #expect(try await store.state(pending) == .pending(version: 0))
        let isUnknown: @Sendable (any Error) -> Bool = { ($0 as? JobStoreError)?.code == .unknownJob }
        await #expect(performing: { try await store.fulfill(finished, value: "again") }, throws: isUnknown)
        await #expect(performing: { try await store.queue(finished, target: "late") }, throws: isUnknown)

        try await lease.release()
        let notification = try #require(try await store.pullNotification())
        #expect(notification.id == waiting && notification.waiting == ["t"])
        try await notification.done(removing: ["t"])
        try await eventually("the notified and the released job to be removed") {
            try await store.removeExpired()
            let first = try await store.state(waiting), second = try await store.state(leased)
            return first == .unknown && second == .unknown
        }
        #expect(try await store.state(pending) == .pending(version: 0))
        #expect(try await store.pullWork()?.id == pending)
    }

    @Test(arguments: Backend.allCases)
    func aStoreWithoutRetentionKeepsItsJobs(_ backend: Backend) async throws {
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let keeper = try await location.store(retention: nil)
        let id = try await keeper.create(request: "r")
        try await keeper.fulfill(id, value: "v")
        #expect(try await keeper.removeExpired() == 0)
        #expect(try await keeper.state(id) == .fulfilled)
    }

    /// 5,000 jobs (file: see `count`) through create, pullWork and fulfil, every tenth with a
    /// target notified by `respond`, every fiftieth with one left for pullNotification: the
    /// store shrinks back to its floor (Redis: fence and seq; file: its subdirectories) through
    /// the removals pullWork and pullNotification make on their way.
    @Test(arguments: Backend.allCases)
    func thousandsOfFinishedJobsLeaveTheStoreAtItsFloor(_ backend: Backend) async throws {
        let count = 5000   // file: about 40 s on a loaded 2-core machine (it fsyncs), Redis 2.5 s
        let location = try await StoreLocation.make(backend)
        defer { location.keepAlive() }
        let notifications = Notifications()
        let store = try await location.store(retention: .milliseconds(100)) { target, id, value in
            target.hasPrefix("later") ? false : try await notifications.handler(target, id, value)
        }
        let clock = ContinuousClock()
        let start = clock.now
        var ids: [JobID] = []
        var largest = 0
        for index in 0..<count {
            let id = try await store.create(request: "job-\(index)")
            ids.append(id)
            if index % 10 == 0 { try await store.queue(id, target: "t\(index)") }
            if index % 50 == 0 { try await store.queue(id, target: "later\(index)") }
            let lease = try #require(try await store.pullWork())
            #expect(lease.id == id)
            try await store.fulfill(lease.id, value: "v\(index)")
            try await lease.release()
            if index % 50 == 0 {
                let notification = try #require(try await store.pullNotification())
                #expect(notification.id == id && notification.waiting == ["later\(index)"])
                try await notification.done(removing: notification.waiting)
            }
            if index % 500 == 499 { largest = max(largest, try await location.footprint().count) }
        }
        let ran = clock.now - start
        let left = try await location.footprint().count
        try await eventually(timeout: .seconds(60), "the store to shrink to its floor") {
            _ = try await store.pullWork()
            _ = try await store.pullNotification()
            return try await location.footprint() == location.floor
        }
        let drained = clock.now - start - ran
        print("jobstore-retention \(backend): \(count) jobs in \(ran), footprint at most \(largest) while running, \(left) after, floor \(location.floor.count) after \(drained) more")
        #expect(notifications.all.count == count / 10)
        #expect(try await store.state(ids[0]) == .unknown)
        #expect(try await store.state(ids[count - 1]) == .unknown)
    }
}

@Suite struct FileJobStoreRemovalTests {
    /// A remover killed after moving a job's directory away, or before dropping its marker:
    /// the job is unknown at once, nothing blocks another store, and the next removal
    /// finishes the work (the store returns to its floor).
    @Test(arguments: ["remove-after-rename", "remove-before-marker"])
    func aRemoverKilledMidRemovalLeavesNothingThatBlocks(_ failpoint: String) async throws {
        let location = try await StoreLocation.make(.file)
        let store = try await location.store(retention: .milliseconds(50))
        var ids: [JobID] = []
        for index in 0..<3 {
            let id = try await store.create(request: "r\(index)")
            try await store.fulfill(id, value: "v")
            ids.append(id)
        }
        let other = try await store.create(request: "still pending")
        // Wait until the three are expired (the helper would find nothing otherwise).
        let doneDirectory = location.directory.appendingPathComponent("done").path
        try await eventually("the markers to expire") {
            let now = Int64(Date().timeIntervalSince1970 * 1000)
            let buckets = try FileManager.default.contentsOfDirectory(atPath: doneDirectory).compactMap { Int64($0) }
            return !buckets.isEmpty && buckets.allSatisfy { $0 + 50 <= now }
        }
        let remover = try HelperProcess(["jobs-remove"] + location.helperArguments(lease: .seconds(10)) + ["50"],
                                        environment: ["HIREDISKIT_JOBSTORE_FAILPOINT": failpoint])
        #expect(await remover.lines.collect().isEmpty)
        #expect(await remover.exitStatus() == SIGKILL)
        for id in ids { #expect(try await store.state(id) == .unknown) }
        #expect(try await store.state(other) == .pending(version: 0))
        #expect(try await location.footprint() != location.floor, "the killed remover left work behind")

        let reopened = try await location.store(retention: .milliseconds(50))
        let lease = try #require(try await reopened.pullWork())
        #expect(lease.id == other)
        try await reopened.fulfill(other, value: "v")
        try await lease.release()
        try await eventually("the store to shrink to its floor") {
            try await reopened.removeExpired()
            return try await location.footprint() == location.floor
        }
    }
}
