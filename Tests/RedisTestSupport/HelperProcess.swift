import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A `hiredis-test-helper` child process, for tests that need several OS processes.
/// Its standard output arrives line by line in ``lines``.
public final class HelperProcess: Sendable {
    public let lines: AsyncStream<String>
    private let process: Mutex<ChildProcess>
    public let pid: Int32

    /// The helper executable, built next to the test bundle.
    public static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
            .deletingLastPathComponent().appendingPathComponent("hiredis-test-helper")
    }

    public init(_ arguments: [String], environment: [String: String] = [:]) throws {
        let process = ChildProcess()
        process.executableURL = Self.executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        let (lines, continuation) = AsyncStream<String>.makeStream()
        self.lines = lines
        // Blocking reads on a plain thread (see RedisServer: no Dispatch read sources).
        let readFD = output.fileHandleForReading.fileDescriptor
        let reader = Thread {
            withExtendedLifetime(output) {
                var pending = ""
                var buffer = [UInt8](repeating: 0, count: 4096)
                while true {
                    let count = read(readFD, &buffer, buffer.count)
                    if count < 0 && errno == EINTR { continue }
                    if count <= 0 { break }
                    pending += String(decoding: buffer[0..<count], as: UTF8.self)
                    while let newline = pending.firstIndex(of: "\n") {
                        continuation.yield(String(pending[..<newline]))
                        pending = String(pending[pending.index(after: newline)...])
                    }
                }
                if !pending.isEmpty { continuation.yield(pending) }
                continuation.finish()
            }
        }
        try process.run()
        reader.start()
        pid = process.processIdentifier
        self.process = Mutex(process)
    }

    deinit {
        // Not once it was reaped: the pid may belong to another process by now.
        if process.withLock({ $0.isRunning }) { signalProcess(pid, SIGKILL) }
    }

    /// Sends a signal (`SIGKILL` for `kill -9`, `SIGSTOP`, `SIGCONT`).
    public func signal(_ signal: Int32) { signalProcess(pid, signal) }

    /// Waits for the process to exit and returns its status.
    public func exitStatus() async -> Int32 {
        await withCheckedContinuation { continuation in
            Thread {
                var status: Int32 = 0
                let process = self.process.withLock { $0 }
                process.waitUntilExit()
                status = process.terminationStatus
                continuation.resume(returning: status)
            }.start()
        }
    }
}

extension AsyncStream<String> {
    /// Collects every line until the stream ends.
    public func collect() async -> [String] {
        var all: [String] = []
        for await line in self { all.append(line) }
        return all
    }
}

/// A value shared by concurrent tasks (tests, helpers and the bench).
public final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    public init(_ value: Value) { mutex = Mutex(value) }
    public func withLock<T>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}
