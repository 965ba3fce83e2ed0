import Foundation
import Hiredis

/// How many jobs a store holds, by where they are (``RedisJobStore/counts()``,
/// ``FileJobStore/counts()``): for operators. A snapshot: each figure is read on its own.
public struct JobCounts: Sendable, Hashable, Codable {
    /// Jobs not fulfilled yet (``leased`` included).
    public var pending: Int
    /// Pending jobs a worker holds a lease on now.
    public var leased: Int
    /// Fulfilled jobs still kept (within their retention, or with targets waiting).
    public var fulfilled: Int
    /// Fulfilled jobs with targets still waiting to be notified.
    public var waitingNotification: Int

    /// Counts with these figures (zero by default).
    public init(pending: Int = 0, leased: Int = 0, fulfilled: Int = 0, waitingNotification: Int = 0) {
        self.pending = pending
        self.leased = leased
        self.fulfilled = fulfilled
        self.waitingNotification = waitingNotification
    }
}

extension RedisJobStore {
    /// The store's counts, over every shard: jobs found with `SCAN` (never `KEYS`), the
    /// rest from the store's indexes.
    public func counts() async throws -> JobCounts {
        var counts = JobCounts()
        for tag in tags {
            let total = try await client.scanKeys(matching: globPattern(tag) + "job:*").count
            let replies = try await client.pipeline([
                RedisCommand("ZCARD", tag + "pending"), RedisCommand("ZCARD", tag + "leased"),
                RedisCommand("ZCARD", tag + "outbox"), RedisCommand("ZCARD", tag + "notifying"),
            ])
            let pending = try replies[0].get().decode(Int.self)
            let leased = try replies[1].get().decode(Int.self)
            counts.pending += pending + leased
            counts.leased += leased
            counts.fulfilled += max(total - pending - leased, 0)
            counts.waitingNotification += try replies[2].get().decode(Int.self) + replies[3].get().decode(Int.self)
        }
        return counts
    }

    private func globPattern(_ text: String) -> String {
        var out = ""
        for character in text {
            if "*?[]\\".contains(character) { out.append("\\") }
            out.append(character)
        }
        return out
    }
}
