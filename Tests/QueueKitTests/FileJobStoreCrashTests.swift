import Foundation
@testable import QueueKit
import RedisTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What the file store's durability rests on (see `FileJobStore`, "Durability"): a call
/// returns once what it reports survives a kill (proved here with `kill -9`) and a power
/// loss (argued from the fsync order: a test cannot cut the power). The files a power loss
/// may lose or tear (markers, leases) are simulated by deleting or emptying them.
@Suite struct FileJobStoreCrashTests {
    func directory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobstore-crash-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// Eight callers in a child process create, queue and fulfil concurrently and print each
    /// call once it returned; the child is killed with `kill -9` mid-run. Every printed call
    /// is found in the reopened store: the job with its request, the target, the value.
    @Test func everyAcknowledgedCallSurvivesAKill9MidRun() async throws {
        let directory = try directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let churn = try HelperProcess(["jobs-churn", "file", directory.path, "p", "10000", "8"])
        let lines = churn.lines
        // Waits for acknowledgements, not for time: the deadline only ends a stuck run.
        let early = try await within(.seconds(120)) { () -> [String] in
            var seen: [String] = []
            for await line in lines {
                seen.append(line)
                if seen.count(where: { $0.hasPrefix("fulfilled ") }) >= 60 { break }
            }
            return seen
        }
        churn.signal(SIGKILL)
        let seen = try #require(early, "no 60 fulfils acknowledged within 2 minutes")
        #expect(seen.count(where: { $0.hasPrefix("fulfilled ") }) >= 60, "the child stopped early: \(seen.suffix(3))")
        let acknowledged = seen + (await lines.collect())   // printed before the kill, still in the pipe
        #expect(await churn.exitStatus() == SIGKILL)

        var created: [JobID: String] = [:], queued: [JobID: String] = [:], fulfilled: [JobID: String] = [:]
        for line in acknowledged {
            let parts = line.split(separator: " ").map(String.init)
            guard parts.count == 3, let id = try? JobID(parts[1]) else {
                Issue.record("unexpected line \(line)")
                continue
            }
            switch parts[0] {
            case "created": created[id] = parts[2]
            case "queued": queued[id] = parts[2]
            case "fulfilled": fulfilled[id] = parts[2]
            default: Issue.record("unexpected line \(line)")
            }
        }
        #expect(created.count >= 60 && !queued.isEmpty)

        let store = try FileJobStore<String>(directory: directory, retention: nil)
        for (id, request) in created {
            let state = try await store.state(id)
            #expect(state == .pending(version: 0) || state == .fulfilled, "job \(id) is \(state)")
            let stored = FileManager.default.contents(atPath: directory.appendingPathComponent("jobs/\(id)/v0").path)
            #expect(stored.map { String(decoding: $0, as: UTF8.self) } == request, "the request of \(id)")
        }
        for (id, value) in fulfilled {
            #expect(try await store.state(id) == .fulfilled, "job \(id) was acknowledged fulfilled")
            let stored = FileManager.default.contents(atPath: directory.appendingPathComponent("values/\(id)").path)
            #expect(stored.map { String(decoding: $0, as: UTF8.self) } == value, "the value of \(id)")
        }
        // Through the API: every pending job (acknowledged or not) can be pulled; every
        // fulfilled job with a target gives its value and its targets to a notifier.
        var pulled: [JobID: JobLease] = [:]   // held: a released job could be pulled again
        while let lease = try await store.pullWork() {
            pulled[lease.id] = lease
            #expect(created[lease.id].map { Array($0.utf8) == lease.request } ?? true)
        }
        for lease in pulled.values { try await lease.release() }
        for (id, _) in created where fulfilled[id] == nil {
            if try await store.state(id) != .fulfilled { #expect(pulled[id] != nil, "pending job \(id) can be pulled") }
        }
        var notified: [JobID: [String]] = [:]
        while let notification = try await store.pullNotification() {
            notified[notification.id] = notification.waiting
            if let value = fulfilled[notification.id] { #expect(notification.value == Array(value.utf8)) }
            try await notification.done(removing: notification.waiting)
        }
        for (id, target) in queued {
            if fulfilled[id] != nil {
                #expect(notified[id]?.contains(target) == true, "target \(target) of fulfilled job \(id) is notified")
            } else if notified[id] == nil {
                let waiting = directory.appendingPathComponent("waiting/\(id)").path
                let targets = try FileManager.default.contentsOfDirectory(atPath: waiting).compactMap {
                    FileManager.default.contents(atPath: waiting + "/" + $0).map { String(decoding: $0, as: UTF8.self) }
                }
                #expect(targets.contains("\"\(target)\""), "target \(target) of job \(id) waits")
            }
        }
    }

    /// Group commit: concurrent creates share the fsyncs of `jobs/` (and all are listed).
    @Test func concurrentCreatesShareTheirDirectoryFsyncs() async throws {
        let directory = try directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try FileJobStore<String>(directory: directory)
        let creates = 32
        // Held back until every create waits for its sync of jobs/, so that the sharing does
        // not depend on how the machine schedules the creates.
        store.commits.pause()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for index in 0..<creates { group.addTask { _ = try await store.create(request: "r\(index)") } }
            try await eventually("every create to wait for its sync") { store.commits.waiterCount == creates }
            store.commits.resume()
            try await group.waitForAll()
        }
        #expect(store.commits.fsyncCount == 1, "\(store.commits.fsyncCount) fsyncs of jobs/ for \(creates) creates")
        #expect(try await store.counts().pending == creates)
    }

    /// Markers are not fsync'ed: a power loss may lose them (or bring back dropped ones).
    /// Opening the store makes them again from the durable files.
    @Test func markersAPowerLossMayLoseAreMadeAgainOnOpen() async throws {
        let directory = try directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try FileJobStore<String>(directory: directory)
        let pending = try await store.create(request: "pending")
        let notify = try await store.create(request: "notify")
        try await store.queue(notify, target: "t")
        try await store.fulfill(notify, value: "v")
        for marker in ["pending/\(pending)", "outbox/\(notify)"] {
            try FileManager.default.removeItem(at: directory.appendingPathComponent(marker))
        }
        try FileManager.default.createDirectory(at: directory.appendingPathComponent("pending"), withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: directory.appendingPathComponent("pending/\(notify)").path, contents: nil)

        let reopened = try FileJobStore<String>(directory: directory)
        let lease = try #require(try await reopened.pullWork())
        #expect(lease.id == pending)
        #expect(try await reopened.pullWork() == nil, "the other marker is of a fulfilled job")
        try await lease.release()
        let notification = try #require(try await reopened.pullNotification())
        #expect(notification.id == notify && notification.waiting == ["t"] && notification.value == Array("v".utf8))
        try await notification.done(removing: ["t"])
        #expect(!FileManager.default.fileExists(atPath: directory.appendingPathComponent("pending/\(notify)").path),
                "the marker a power loss brought back is dropped")
    }

    /// Lease files are not fsync'ed: after a power loss the top generation may be an empty
    /// (or cut) file. It reads as expired, and the next taker links the generation above.
    @Test func aLeaseFileAPowerLossLeftEmptyReadsAsExpired() async throws {
        let directory = try directory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try FileJobStore<String>(directory: directory)
        let id = try await store.create(request: "r")
        let leases = directory.appendingPathComponent("leases/work-\(id)")
        try FileManager.default.createDirectory(at: leases, withIntermediateDirectories: true)
        _ = FileManager.default.createFile(atPath: leases.appendingPathComponent("4").path, contents: nil)
        _ = FileManager.default.createFile(atPath: leases.appendingPathComponent("5").path, contents: Data("0F3A".utf8))
        let reopened = try FileJobStore<String>(directory: directory)
        let lease = try #require(try await reopened.pullWork())
        #expect(lease.id == id && lease.fencingToken == 6)
        try await lease.release()
    }
}
