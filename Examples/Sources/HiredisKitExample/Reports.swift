import Foundation
import Hummingbird
import LockKit
import Metrics

/// The result of the expensive computation.
struct Report: ResponseCodable {
    let id: String
    /// Random: two runs of the computation would not agree.
    let value: Int
    let computedBy: String
}

extension Example {
    /// `GET /report/:id`. `fanout` runs the job once for all concurrent callers of the same id,
    /// in this process and in every other instance (they share Redis); each caller gets the
    /// one result. A caller arriving just after the job ended gets its stored result.
    func report(_ id: String) async throws -> Report {
        try await locks.fanout("report:\(id)", timeout: .seconds(30)) {
            try await computeReport(id)
        }
    }

    /// The expensive part: 1.5 s of pretend work. The counter lets `make example` count runs.
    private func computeReport(_ id: String) async throws -> Report {
        try await redis.send("INCR", "example:computations:\(id)")
        Counter(label: "example_reports_computed_total").increment()
        logger.info("computing report", metadata: ["report": "\(id)"])
        try await Task.sleep(for: .milliseconds(1500))
        return Report(id: id, value: Int.random(in: 1...1_000_000_000), computedBy: instance)
    }
}
