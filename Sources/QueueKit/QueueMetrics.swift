import Metrics
import Synchronization

/// swift-metrics counters and gauges of the work queue, one set per queue name, with the
/// dimensions of ``WorkQueueOptions/metricsDimensions`` and `queue`. Without a metrics
/// backend bootstrapped by the app they cost next to nothing.
///
/// Counters: `queuekit_enqueued_total`, `queuekit_dequeued_total`,
/// `queuekit_finished_total`, `queuekit_stopped_total`, `queuekit_recovered_total`,
/// `queuekit_dead_lettered_total`. Gauge: `queuekit_in_flight` (also dimensioned by
/// `worker`).
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

    func inFlight(_ queue: String, worker: String, _ value: Int) {
        let gauge = gauges.withLock { cache in
            let key = MetricKey(name: worker, queue: queue)
            if let gauge = cache[key] { return gauge }
            let gauge = Gauge(label: "queuekit_in_flight", dimensions: dimensions + [("queue", queue), ("worker", worker)], factory: factory)
            cache[key] = gauge
            return gauge
        }
        gauge.record(value)
    }
}
