import CoreMetrics

/// The swift-metrics of a ``CallbackQueue``, made once per queue (never per call), each
/// with ``CallbackQueueOptions/metricsDimensions`` and a `kind`: `lock` (`once`, `multi`,
/// `withLock`), `semaphore` (permits), or `fanout` (a push/fanout job's leader lock).
/// Without a metrics backend they cost next to nothing.
///
/// - `lockkit_acquisitions_total` (`kind` lock | semaphore): locks and permits taken (a
///   multi-lock counts once).
/// - `lockkit_contention_total` (`kind` lock | semaphore): tries that found the lock held
///   or no permit free (each retry counts).
/// - `lockkit_wait_duration` (timer, `kind` lock | semaphore): from the call to the
///   acquisition.
/// - `lockkit_lease_lost_total` (`kind` lock | semaphore | fanout): leases a watchdog found
///   lost (an extension refused, or Redis unreachable for a whole lease).
/// - `lockkit_watchdog_extensions_total` (`kind` lock | semaphore | fanout): successful
///   automatic extensions.
/// - `lockkit_fanout_runs_total`: push/fanout jobs this process led (ran or was handed).
/// - `lockkit_fanout_coalesced_total`: callers handed an outcome they did not produce.
final class LockMetrics: Sendable {
    enum Kind: Int, CaseIterable, Sendable {
        case lock, semaphore, fanout
        var label: String {
            switch self {
            case .lock: "lock"
            case .semaphore: "semaphore"
            case .fanout: "fanout"
            }
        }
    }

    private let acquisitions: [Counter]
    private let contention: [Counter]
    private let waits: [Timer]
    private let leasesLost: [Counter]
    private let extensions: [Counter]
    let fanoutRuns: Counter
    let coalesced: Counter

    init(factory: (any MetricsFactory)?, dimensions: [(String, String)]) {
        let factory = factory ?? MetricsSystem.factory
        func each<M>(_ make: (String, [(String, String)]) -> M) -> [M] {
            Kind.allCases.map { make($0.label, dimensions + [("kind", $0.label)]) }
        }
        acquisitions = each { Counter(label: "lockkit_acquisitions_total", dimensions: $1, factory: factory) }
        contention = each { Counter(label: "lockkit_contention_total", dimensions: $1, factory: factory) }
        waits = each { Timer(label: "lockkit_wait_duration", dimensions: $1, factory: factory) }
        leasesLost = each { Counter(label: "lockkit_lease_lost_total", dimensions: $1, factory: factory) }
        extensions = each { Counter(label: "lockkit_watchdog_extensions_total", dimensions: $1, factory: factory) }
        fanoutRuns = Counter(label: "lockkit_fanout_runs_total", dimensions: dimensions, factory: factory)
        coalesced = Counter(label: "lockkit_fanout_coalesced_total", dimensions: dimensions, factory: factory)
    }

    func acquired(_ kind: Kind, waited: Duration) {
        acquisitions[kind.rawValue].increment()
        let (seconds, attoseconds) = waited.components
        waits[kind.rawValue].recordNanoseconds(seconds &* 1_000_000_000 &+ attoseconds / 1_000_000_000)
    }

    func contended(_ kind: Kind) { contention[kind.rawValue].increment() }
    func leaseLost(_ kind: Kind) { leasesLost[kind.rawValue].increment() }
    func extended(_ kind: Kind) { extensions[kind.rawValue].increment() }
}
