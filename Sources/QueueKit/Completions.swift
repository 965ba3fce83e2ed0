import Hiredis

/// A process that was finished (worqr's `done` event): published by the finish script, so
/// every finish of the queue is announced once, whoever finished it.
public struct WorkCompletion: Sendable, Hashable {
    /// The finished process's ``WorkProcess/id``.
    public let processID: String
    /// The queue the process belonged to.
    public let queue: String
    /// The worker that held the process.
    public let worker: String
    /// The task that was worked on.
    public let task: [UInt8]
    /// What the finisher passed as `result`, if anything.
    public let result: [UInt8]?

    /// The task as UTF-8 text.
    public var string: String { String(decoding: task, as: UTF8.self) }
    /// The result as UTF-8 text, if there is one.
    public var resultString: String? { result.map { String(decoding: $0, as: UTF8.self) } }
}

/// What ``WorkQueue/completions(_:)`` yields.
public enum CompletionEvent: Sendable, Hashable {
    /// A process finished (with its result, if any).
    case completed(WorkCompletion)
    /// The subscriber lost its connection and subscribed again: completions published in
    /// between were missed. Pub/sub is a wake-up, not the truth: re-read what you wait for.
    case gap
}

/// The completions of one queue, in the order Redis published them. Dropping the sequence
/// (or cancelling the task that iterates it) unsubscribes.
public struct WorkCompletions: AsyncSequence, Sendable {
    public typealias Element = CompletionEvent
    let subscription: RedisSubscription
    let queue: String

    public func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(base: subscription.makeAsyncIterator(), queue: queue)
    }

    public struct AsyncIterator: AsyncIteratorProtocol {
        var base: RedisSubscription.AsyncIterator
        let queue: String

        public mutating func next() async throws -> CompletionEvent? {
            while let event = try await base.next() {
                switch event {
                case .gap: return .gap
                case .message(let message):
                    if let completion = DoneMessage.parse(message.payload, queue: queue) { return .completed(completion) }
                }
            }
            return nil
        }
    }
}

extension WorkQueue {
    /// Every finish of `queue` from now on, from any worker or instance, with its result.
    /// The subscription is confirmed by the server before this returns, so a producer that
    /// calls it *before* enqueueing misses no completion of its tasks:
    ///
    /// ```swift
    /// let completions = try await queue.completions("thumbnails")
    /// try await queue.enqueue("thumbnails", "img-42")
    /// for try await case .completed(let done) in completions where done.string == "img-42" {
    ///     print(done.resultString ?? "")
    ///     break
    /// }
    /// ```
    ///
    /// - Throws: `invalidArgument` for an empty queue name; what
    ///   `RedisSubscriber.subscribe(_:)` throws.
    public func completions(_ queue: String) async throws -> WorkCompletions {
        let keys = try keys(queue)
        return WorkCompletions(subscription: try await subscriber.subscribe([keys.doneChannel]), queue: queue)
    }
}

/// The `done` message: length-prefixed fields (`<length>:<bytes>`): process id, worker,
/// task, and the result when there is one. Binary-safe.
enum DoneMessage {
    static func parse(_ payload: [UInt8], queue: String) -> WorkCompletion? {
        var fields: [ArraySlice<UInt8>] = []
        var index = payload.startIndex
        while index < payload.endIndex, fields.count < 4 {
            guard let colon = payload[index...].firstIndex(of: UInt8(ascii: ":")),
                  let length = Int(String(decoding: payload[index..<colon], as: UTF8.self)), length >= 0,
                  payload.endIndex - (colon + 1) >= length else { return nil }
            fields.append(payload[(colon + 1)..<(colon + 1 + length)])
            index = colon + 1 + length
        }
        guard fields.count >= 3, index == payload.endIndex else { return nil }
        return WorkCompletion(processID: String(decoding: fields[0], as: UTF8.self), queue: queue,
                              worker: String(decoding: fields[1], as: UTF8.self), task: Array(fields[2]),
                              result: fields.count == 4 ? Array(fields[3]) : nil)
    }
}
