import Metrics

/// The swift-metrics of a job store, made once per store (never per call), each with the
/// store's `metricsDimensions` and `backend` = `redis` | `file`. Without a metrics
/// backend they cost next to nothing.
///
/// Counters: `jobstore_created_total` (jobs created), `jobstore_pulled_total` (work
/// leases handed out by `pullWork`), `jobstore_fulfilled_total` (first fulfils),
/// `jobstore_notified_total` (targets notified and removed, by a `respond` handler or a
/// notification lease's `done(removing:)`), `jobstore_lease_lost_total` (work and
/// notification leases found lost).
final class JobStoreMetrics: Sendable {
    let created: Counter
    let pulled: Counter
    let fulfilled: Counter
    let notified: Counter
    let leaseLost: Counter

    init(backend: String, factory: (any MetricsFactory)?, dimensions: [(String, String)]) {
        let factory = factory ?? MetricsSystem.factory
        let dimensions = dimensions + [("backend", backend)]
        created = Counter(label: "jobstore_created_total", dimensions: dimensions, factory: factory)
        pulled = Counter(label: "jobstore_pulled_total", dimensions: dimensions, factory: factory)
        fulfilled = Counter(label: "jobstore_fulfilled_total", dimensions: dimensions, factory: factory)
        notified = Counter(label: "jobstore_notified_total", dimensions: dimensions, factory: factory)
        leaseLost = Counter(label: "jobstore_lease_lost_total", dimensions: dimensions, factory: factory)
    }
}
