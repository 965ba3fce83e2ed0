import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A child process started with `posix_spawn`: the subset of `Foundation.Process` that the
/// tests and tools use, under the same names.
///
/// Why not `Foundation.Process`: on Linux (Swift 6.3.1's Foundation) `run()` crashes now and
/// then with a bad pointer dereference in `findMaximumOpenFromProcSelfFD()`, a 256-byte
/// over-read of a `/proc/self/fd` entry (swift-corelibs-foundation#5472, fixed after
/// 6.3.1). A suite that spawns hundreds of helpers with many sockets open hit it in about
/// one run in five. Here the child closes every descriptor above 2 itself
/// (`posix_spawn_file_actions_addclosefrom_np`), with no directory walk in the parent.
public final class ChildProcess: Sendable {
    private struct State {
        var executableURL: URL?
        var arguments: [String] = []
        var environment: [String: String]?
        var currentDirectoryURL: URL?
        var standardInput: (any Sendable)?
        var standardOutput: (any Sendable)?
        var standardError: (any Sendable)?
        var pid: pid_t = 0
        var running = false
        var status: Int32 = 0
        var terminationHandler: (@Sendable (ChildProcess) -> Void)?
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Mutex(State())
    private let exited = DispatchSemaphore(value: 0)

    public init() {}

    public var executableURL: URL? {
        get { state.withLock { $0.executableURL } }
        set { state.withLock { $0.executableURL = newValue } }
    }
    public var arguments: [String]? {
        get { state.withLock { $0.arguments } }
        set { state.withLock { $0.arguments = newValue ?? [] } }
    }
    public var environment: [String: String]? {
        get { state.withLock { $0.environment } }
        set { state.withLock { $0.environment = newValue } }
    }
    public var currentDirectoryURL: URL? {
        get { state.withLock { $0.currentDirectoryURL } }
        set { state.withLock { $0.currentDirectoryURL = newValue } }
    }
    /// A `Pipe`, a `FileHandle`, or `nil` to inherit this process's.
    public var standardInput: (any Sendable)? {
        get { state.withLock { $0.standardInput } }
        set { state.withLock { $0.standardInput = newValue } }
    }
    public var standardOutput: (any Sendable)? {
        get { state.withLock { $0.standardOutput } }
        set { state.withLock { $0.standardOutput = newValue } }
    }
    public var standardError: (any Sendable)? {
        get { state.withLock { $0.standardError } }
        set { state.withLock { $0.standardError = newValue } }
    }
    /// Called once, on a background thread, when the child has exited.
    public var terminationHandler: (@Sendable (ChildProcess) -> Void)? {
        get { state.withLock { $0.terminationHandler } }
        set { state.withLock { $0.terminationHandler = newValue } }
    }
    public var processIdentifier: Int32 { state.withLock { $0.pid } }
    public var isRunning: Bool { state.withLock { $0.running } }
    /// The exit status, or the number of the signal that ended the child.
    public var terminationStatus: Int32 { state.withLock { $0.status } }

    /// Starts the child.
    public func run() throws {
        let snapshot = state.withLock { $0 }
        guard let executable = snapshot.executableURL?.path else { throw TestSupportError("no executable to run") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var parentCloses: [FileHandle] = []
        func wire(_ stream: (any Sendable)?, to target: Int32, reading: Bool) {
            switch stream {
            case let pipe as Pipe:
                let childEnd = reading ? pipe.fileHandleForReading : pipe.fileHandleForWriting
                posix_spawn_file_actions_adddup2(&actions, childEnd.fileDescriptor, target)
                parentCloses.append(childEnd)
            case let handle as FileHandle:
                posix_spawn_file_actions_adddup2(&actions, handle.fileDescriptor, target)
            default:
                break
            }
        }
        wire(snapshot.standardInput, to: 0, reading: true)
        wire(snapshot.standardOutput, to: 1, reading: false)
        wire(snapshot.standardError, to: 2, reading: false)
        if let directory = snapshot.currentDirectoryURL?.path, let chdir = Self.addChdir {
            _ = directory.withCString { chdir(&actions, $0) }
        }
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        let argv = ([executable] + snapshot.arguments).map { strdup($0) } + [nil]
        let environment = snapshot.environment ?? ProcessInfo.processInfo.environment
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        guard result == 0 else {
            throw TestSupportError("posix_spawn \(executable): \(String(cString: strerror(result)))")
        }
        for handle in parentCloses { try? handle.close() }
        let child = pid
        state.withLock {
            $0.pid = child
            $0.running = true
        }
        let reaper = Thread { [self] in
            var status: Int32 = 0
            while waitpid(child, &status, 0) < 0 && errno == EINTR {}
            // WIFEXITED / WEXITSTATUS / WTERMSIG, spelled out (they are C macros).
            let signal = status & 0x7f
            let code = signal == 0 ? (status >> 8) & 0xff : signal
            let (handler, waiters) = state.withLock { state -> ((@Sendable (ChildProcess) -> Void)?, [CheckedContinuation<Void, Never>]) in
                state.running = false
                state.status = code
                defer { state.exitWaiters = [] }
                return (state.terminationHandler, state.exitWaiters)
            }
            exited.signal()
            waiters.forEach { $0.resume() }
            handler?(self)
        }
        reaper.start()
    }

    /// Blocks until the child has exited.
    public func waitUntilExit() {
        guard state.withLock({ $0.pid != 0 }) else { return }
        exited.wait()
        exited.signal()  // later callers return at once too
    }

    /// Waits, without blocking a thread, until the child has exited.
    public func exit() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.pid == 0 || !state.running { return true }
                state.exitWaiters.append(continuation)
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Runs the child to its end and returns its standard output and error, together, with
    /// no input. The output goes to a temporary file and the exit is awaited: no thread is
    /// blocked meanwhile (on 2 cores the cooperative pool has 2, and a test blocking one
    /// for seconds stalls every other test of the process, its heartbeats and leases too).
    public func runToEnd() async throws -> Data {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("child-output-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: file.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: file) }
        let output = try FileHandle(forWritingTo: file)
        standardOutput = output
        standardError = output
        standardInput = FileHandle.nullDevice
        do {
            try run()
        } catch {
            try? output.close()
            throw error
        }
        try? output.close()   // the child has its own copy
        await exit()
        return (try? Data(contentsOf: file)) ?? Data()
    }

    /// SIGTERM.
    public func terminate() {
        let pid = processIdentifier
        if pid != 0 { kill(pid, SIGTERM) }
    }

    private typealias FileAction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32
    private typealias PathAction = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
    /// glibc ≥ 2.34 has it under _GNU_SOURCE, which Swift's Glibc module does not define.
    private static let addCloseFrom: FileAction? = symbol("posix_spawn_file_actions_addclosefrom_np")
    private static let addChdir: PathAction? = symbol("posix_spawn_file_actions_addchdir_np")

    private static func symbol<F>(_ name: String) -> F? {
        guard let handle = dlopen(nil, RTLD_NOW), let address = dlsym(handle, name) else { return nil }
        return unsafeBitCast(address, to: F.self)
    }
}
