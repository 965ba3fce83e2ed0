import Metrics
import Synchronization

/// swift-metrics counters and gauges of the work queue, one set per queue name, with the
/// dimensions of ``WorkQueueOptions/metricsDimensions`` and `queue`. Without a metrics
/// backend bootstrapped by the app they cost next to nothing.
///
/// Counters: `queuekit_enqueued_total`, `queuekit_dequeued_total`,
/// `queuekit_finished_total`, `queuekit_stopped_total`, `queuekit_recovered_total`,
/// `queuekit_dead_lettered_total`. Gauge: `queuekit_in_flight` (this process's tasks in
/// flight in the queue, over all its workers).
final class QueueMetrics: Sendable {
    private let dimensions: [(String, String)]
    private let factory: any MetricsFactory
    /// Made once per (name, queue) and per (queue, worker): every task touches them.
    private let counters = Mutex<[MetricKey: Counter]>([:])
    private let gauges = Mutex<[MetricKey: Gauge]>([:])

    private struct MetricKey: Hashable {
        let name: String
        let queue: String
    }

    init(dimensions: [(String, String)], factory: (any MetricsFactory)?) {
        self.dimensions = dimensions
        self.factory = factory ?? MetricsSystem.factory
    }

    private func counter(_ name: String, _ queue: String) -> Counter {
        counters.withLock { cache in
            let key = MetricKey(name: name, queue: queue)
            if let counter = cache[key] { return counter }
            let counter = Counter(label: name, dimensions: dimensions + [("queue", queue)], factory: factory)
            cache[key] = counter
            return counter
        }
    }

    func enqueued(_ queue: String, _ count: Int) { counter("queuekit_enqueued_total", queue).increment(by: count) }
    func dequeued(_ queue: String, _ count: Int) { counter("queuekit_dequeued_total", queue).increment(by: count) }
    func finished(_ queue: String) { counter("queuekit_finished_total", queue).increment() }
    func stopped(_ queue: String) { counter("queuekit_stopped_total", queue).increment() }
    func recovered(_ queue: String, _ count: Int, deadLettered: Int) {
        if count > 0 { counter("queuekit_recovered_total", queue).increment(by: count) }
        if deadLettered > 0 { counter("queuekit_dead_lettered_total", queue).increment(by: deadLettered) }
    }
    func deadLettered(_ queue: String) { counter("queuekit_dead_lettered_total", queue).increment() }

    /// This process's in-flight count for `queue`, summed over its workers: a `worker`
    /// dimension would add a series for every worker id ever started (a new one at each
    /// restart), which a metrics backend keeps for ever.
    func inFlight(_ queue: String, worker: String, _ value: Int) {
        let gauge = gauges.withLock { cache -> Gauge in
            let key = MetricKey(name: "queuekit_in_flight", queue: queue)
            if let gauge = cache[key] { return gauge }
            let gauge = Gauge(label: "queuekit_in_flight", dimensions: dimensions + [("queue", queue)], factory: factory)
            cache[key] = gauge
            return gauge
        }
        let sum = inFlightByWorker.withLock { counts -> Int in
            counts[queue, default: [:]][worker] = value == 0 ? nil : value
            if counts[queue]?.isEmpty == true { counts[queue] = nil }
            return counts[queue]?.values.reduce(0, +) ?? 0
        }
        gauge.record(sum)
    }

    /// In-flight counts by queue, then worker, for ``inFlight(_:worker:_:)``.
    private let inFlightByWorker = Mutex<[String: [String: Int]]>([:])
}
