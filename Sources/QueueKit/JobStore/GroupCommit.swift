import Synchronization
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Group commit of directory fsyncs for one ``FileJobStore``: the classic leader and
/// followers. A call that needs a directory's new entries durable asks for a sync and
/// suspends; when no fsync of that directory is running, it becomes the leader and runs
/// one on a ``fileCalls`` thread. Calls that arrive while an fsync runs wait for the next
/// one, which the leader starts as soon as the running one ends and which covers all of
/// them: N concurrent creates cost about two fsyncs of `jobs/`, not N.
///
/// Every waiter is resumed only by an fsync that *started after* it asked (its ticket is at
/// most the count the leader read before calling `fsync`), so whatever the waiter changed in
/// the directory before asking is durable when it resumes. A failed fsync fails every
/// waiter it was to cover (``JobStoreError/Code/io``): their changes may not be durable.
/// Waiters hold no thread: only the leader's fsync does.
final class GroupCommit: Sendable {
    private struct Directory {
        /// Tickets handed out so far (the next waiter gets `requested + 1`).
        var requested: UInt64 = 0
        var waiters: [(ticket: UInt64, continuation: CheckedContinuation<Void, any Error>)] = []
    }

    /// The directories with waiters or an fsync running (an entry exists exactly while a
    /// leader runs for it).
    private let directories = Mutex<[String: Directory]>([:])
    private let fsyncs = Atomic<Int>(0)

    /// How many directory fsyncs this committer ran (for tests and the bench).
    var fsyncCount: Int { fsyncs.load(ordering: .relaxed) }

    /// Returns once every change made in each of `directories` before this call is durable.
    func sync(_ directories: some Collection<String>) async throws {
        let unique = Set(directories)
        if unique.count == 1, let directory = unique.first {
            try await sync(directory)
            return
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for directory in unique { group.addTask { try await self.sync(directory) } }
            try await group.waitForAll()
        }
    }

    /// Returns once every change made in `directory` before this call is durable.
    func sync(_ directory: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let lead = directories.withLock { directories -> Bool in
                let lead = directories[directory] == nil
                var entry = directories[directory] ?? Directory()
                entry.requested += 1
                entry.waiters.append((entry.requested, continuation))
                directories[directory] = entry
                return lead
            }
            if lead { fileCalls.async { self.lead(directory) } }
        }
    }

    /// Runs fsyncs of `directory` until no waiter is left.
    private func lead(_ directory: String) {
        while true {
            let covered = directories.withLock { $0[directory]?.requested ?? 0 }
            let result = Result { try Files.syncDirectoryOrThrow(directory) }
            fsyncs.add(1, ordering: .relaxed)
            let (done, more) = directories.withLock { directories -> ([CheckedContinuation<Void, any Error>], Bool) in
                guard var entry = directories[directory] else { return ([], false) }
                let done = entry.waiters.filter { $0.ticket <= covered }.map(\.continuation)
                entry.waiters.removeAll { $0.ticket <= covered }
                // Waiters that came during the fsync keep the entry: this thread leads again.
                directories[directory] = entry.waiters.isEmpty ? nil : entry
                return (done, !entry.waiters.isEmpty)
            }
            for continuation in done { continuation.resume(with: result) }
            if !more { return }
        }
    }
}
