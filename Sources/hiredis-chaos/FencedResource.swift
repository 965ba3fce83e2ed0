// The "resource" the lock workload protects: a counter in a file that, like a storage
// service that honours fencing tokens, refuses any read or write carrying a token lower than
// the highest it has seen. It also notices what fencing is meant to prevent: two holders
// working under the same token, and a write that was not based on the latest value.
import Foundation
import Synchronization

struct ResourceState: Sendable {
    var maxToken: Int64 = 0
    var holder = "-"
    var counter = 0
    var accepted = 0
    var staleRejected = 0
    var overlaps = 0
    var lostUpdates = 0

    init() {}

    init?(_ text: String) {
        let parts = text.split(separator: " ")
        guard parts.count == 7, let maxToken = Int64(parts[0]), let counter = Int(parts[2]), let accepted = Int(parts[3]),
              let stale = Int(parts[4]), let overlaps = Int(parts[5]), let lost = Int(parts[6]) else { return nil }
        (self.maxToken, holder, self.counter, self.accepted) = (maxToken, String(parts[1]), counter, accepted)
        (staleRejected, self.overlaps, lostUpdates) = (stale, overlaps, lost)
    }

    /// Padded to a fixed width, so that every write overwrites the whole record (a process
    /// killed mid-write cannot leave the tail of a longer one behind).
    var text: String {
        let text = "\(maxToken) \(holder) \(counter) \(accepted) \(staleRejected) \(overlaps) \(lostUpdates)"
        return text + String(repeating: " ", count: max(0, 256 - text.utf8.count))
    }
}

/// A counter file shared by every chaos process. Each operation is atomic across processes
/// (`flock`, taken without blocking a thread) and within one (a mutex).
final class FencedResource: Sendable {
    private let descriptor: Int32
    private let local = Mutex(())

    init(path: String) throws {
        descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ChaosError("cannot open \(path): errno \(errno)") }
    }

    deinit { close(descriptor) }

    /// Reads the counter for the holder of `token`; `nil` when the token is stale.
    func read(token: Int64, holder: String) async throws -> Int? {
        try await update { state in
            if token < state.maxToken { state.staleRejected += 1; return nil }
            if token == state.maxToken && state.holder != holder { state.overlaps += 1 }
            state.maxToken = token
            state.holder = holder
            return state.counter
        }
    }

    /// Writes `value` for the holder of `token`; `false` when the token is stale.
    func write(token: Int64, holder: String, value: Int) async throws -> Bool {
        try await update { state in
            if token < state.maxToken { state.staleRejected += 1; return false }
            if state.holder != holder { state.overlaps += 1 }
            if value != state.counter + 1 { state.lostUpdates += 1 }
            state.maxToken = token
            state.holder = holder
            state.counter = value
            state.accepted += 1
            return true
        }
    }

    /// The state as it is now.
    func snapshot() async throws -> ResourceState {
        try await update { $0 }
    }

    private func update<T>(_ body: (inout ResourceState) -> T) async throws -> T {
        while true {
            if let value = try tryUpdate(body) { return value }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    /// One attempt; `nil` when another process holds the file lock (no thread is blocked on it,
    /// so a SIGSTOPped holder cannot starve this process's cooperative threads).
    private func tryUpdate<T>(_ body: (inout ResourceState) -> T) throws -> T? {
        try local.withLock { _ -> T? in
            guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
                if errno == EWOULDBLOCK || errno == EINTR { return nil }
                throw ChaosError("flock failed: errno \(errno)")
            }
            defer { flock(descriptor, LOCK_UN) }
            var buffer = [UInt8](repeating: 0, count: 512)
            let count = pread(descriptor, &buffer, buffer.count, 0)
            guard count >= 0 else { throw ChaosError("resource read failed: errno \(errno)") }
            let text = String(decoding: buffer[0..<count], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard count == 0 || ResourceState(text) != nil else { throw ChaosError("the resource file is corrupt: \(text)") }
            var state = count == 0 ? ResourceState() : ResourceState(text)!
            let value = body(&state)
            let bytes = Array(state.text.utf8)
            guard pwrite(descriptor, bytes, bytes.count, 0) == bytes.count else {
                throw ChaosError("resource write failed: errno \(errno)")
            }
            return .some(value)
        }
    }
}
