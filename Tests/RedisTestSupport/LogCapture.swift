import Logging
import Synchronization

/// A swift-log backend for tests: it keeps every entry logged through ``logger`` (level,
/// message and all metadata, the logger's own included).
public final class LogCapture: Sendable {
    private let entries = Mutex<[(level: Logger.Level, text: String)]>([])

    public init() {}

    /// Every entry so far, as "level message metadata".
    public var all: [String] { entries.withLock { $0.map { "\($0.level) \($0.text)" } } }

    /// The entries at `level` or above, as "message metadata".
    public func entries(atLeast level: Logger.Level) -> [String] {
        entries.withLock { $0.filter { $0.level >= level }.map(\.text) }
    }

    /// A logger at `trace` whose entries land here.
    public var logger: Logger {
        var logger = Logger(label: "hiredis-kit.test", factory: { _ in Handler(capture: self) })
        logger.logLevel = .trace
        return logger
    }

    private struct Handler: LogHandler {
        let capture: LogCapture
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            capture.entries.withLock { $0.append((event.level, "\(event.message) \(all)")) }
        }
    }
}
