// The chaos run's ledger: every process appends what it did, one line per event, to its own
// file. Lines go out with write(2) on an O_APPEND descriptor, so a `kill -9` loses nothing
// already written; the conductor reads every file once the run is over.
import Foundation
import Synchronization

/// Wall-clock milliseconds: every process on the machine shares this clock, so events from
/// different files can be ordered against each other and against the fault log.
func nowMillis() -> Int64 {
    var spec = timespec()
    clock_gettime(CLOCK_REALTIME, &spec)
    return Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000
}

/// One process's append-only event file.
final class EventLog: Sendable {
    private let descriptor: Int32
    private let lock = Mutex(())

    init(path: String) throws {
        descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else { throw ChaosError("cannot open \(path): errno \(errno)") }
    }

    deinit { close(descriptor) }

    /// Appends `time kind field…` (tab-separated; fields must not contain tabs or newlines).
    func record(_ kind: String, _ fields: String..., at time: Int64 = nowMillis()) {
        let line = ([String(time), kind] + fields).joined(separator: "\t") + "\n"
        lock.withLock { _ in
            var bytes = Array(line.utf8)
            var offset = 0
            while offset < bytes.count {
                let written = bytes.withUnsafeMutableBytes { write(descriptor, $0.baseAddress! + offset, $0.count - offset) }
                if written < 0 { if errno == EINTR { continue }; return }
                offset += written
            }
            bytes.removeAll()
        }
    }

    /// Runs `body` as one tracked operation: `S kind seq` before and `E kind seq ok|error`
    /// after, so that the verifier can find operations that never ended or ended late.
    func operation<T>(_ kind: String, _ sequence: Int, _ body: () async throws -> T) async throws -> T {
        record("S", kind, String(sequence))
        do {
            let value = try await body()
            record("E", kind, String(sequence), "ok")
            return value
        } catch {
            record("E", kind, String(sequence), sanitize("\(error)"))
            throw error
        }
    }
}

/// One parsed line.
struct Event {
    let time: Int64
    let kind: Substring
    let fields: [Substring]
    let process: String   // the log's name: one per OS process (slot and incarnation)
}

/// Reads every `*.log` in `directory`.
func readEvents(in directory: URL) throws -> [Event] {
    var events: [(event: Event, order: Int)] = []
    for name in try FileManager.default.contentsOfDirectory(atPath: directory.path) where name.hasSuffix(".log") {
        let text = try String(contentsOf: directory.appendingPathComponent(name), encoding: .utf8)
        let process = String(name.dropLast(4))
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard parts.count >= 2, let time = Int64(parts[0]) else { continue }  // a torn last line
            events.append((Event(time: time, kind: parts[1], fields: Array(parts.dropFirst(2)), process: process), events.count))
        }
    }
    // By time; within a millisecond, in file order (a process's own events stay in order).
    return events.sorted { ($0.event.time, $0.order) < ($1.event.time, $1.order) }.map(\.event)
}

func sanitize(_ text: String) -> String {
    String(text.prefix(200).map { $0 == "\t" || $0 == "\n" ? " " : $0 })
}

struct ChaosError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// A boolean shared between tasks.
final class SharedFlag: Sendable {
    private let value: Atomic<Bool>
    init(_ value: Bool) { self.value = Atomic(value) }
    var isOn: Bool { value.load(ordering: .relaxed) }
    func set(_ newValue: Bool) { value.store(newValue, ordering: .relaxed) }
}
