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
        /// A leader runs fsyncs for this directory.
        var leading = false
    }

    private struct State {
        /// The directories with waiters or a leader (an entry goes when both are gone).
        var directories: [String: Directory] = [:]
        /// No leader starts (tests: so that waiters gather deterministically).
        var paused = false
    }

    private let state = Mutex(State())
    private let fsyncs = Atomic<Int>(0)

    /// How many directory fsyncs this committer ran (for tests and the bench).
    var fsyncCount: Int { fsyncs.load(ordering: .relaxed) }

    /// Calls waiting for a sync, in every directory (for tests).
    var waiterCount: Int { state.withLock { $0.directories.values.reduce(0) { $0 + $1.waiters.count } } }

    /// Holds back new leaders until ``resume()`` (for tests: waiters then gather).
    func pause() { state.withLock { $0.paused = true } }

    /// Lets leaders start again, one per directory with waiters.
    func resume() {
        let directories = state.withLock { state -> [String] in
            state.paused = false
            var starting: [String] = []
            for (directory, entry) in state.directories where !entry.leading && !entry.waiters.isEmpty {
                state.directories[directory]?.leading = true
                starting.append(directory)
            }
            return starting
        }
        for directory in directories { fileCalls.async { self.lead(directory) } }
    }

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
            let lead = state.withLock { state -> Bool in
                var entry = state.directories[directory] ?? Directory()
                entry.requested += 1
                entry.waiters.append((entry.requested, continuation))
                let lead = !entry.leading && !state.paused
                if lead { entry.leading = true }
                state.directories[directory] = entry
                return lead
            }
            if lead { fileCalls.async { self.lead(directory) } }
        }
    }

    /// Runs fsyncs of `directory` until no waiter is left.
    private func lead(_ directory: String) {
        while true {
            let covered = state.withLock { $0.directories[directory]?.requested ?? 0 }
            let result = Result { try Files.syncDirectoryOrThrow(directory) }
            fsyncs.add(1, ordering: .relaxed)
            let (done, more) = state.withLock { state -> ([CheckedContinuation<Void, any Error>], Bool) in
                guard var entry = state.directories[directory] else { return ([], false) }
                let done = entry.waiters.filter { $0.ticket <= covered }.map(\.continuation)
                entry.waiters.removeAll { $0.ticket <= covered }
                // Waiters that came during the fsync keep the entry: this thread leads again
                // (unless paused meanwhile: `resume()` starts a leader then).
                let more = !entry.waiters.isEmpty && !state.paused
                entry.leading = more
                state.directories[directory] = entry.waiters.isEmpty ? nil : entry
                return (done, more)
            }
            for continuation in done { continuation.resume(with: result) }
            if !more { return }
        }
    }
}
