import CoreMetrics

/// The swift-metrics of a connection, made once per connection (never per command).
/// Without a metrics backend they cost next to nothing.
///
/// - `hiredis_reconnects_total` (counter): connections re-established after a loss.
/// - `hiredis_timeouts_total` (counter, `kind` = `command` | `connect`): commands that got
///   no reply within their timeout; connection attempts that took longer than
///   ``RedisConfiguration/connectTimeout``.
/// - `hiredis_commands_in_flight` (meter): commands sent and not answered yet, over every
///   connection of the process.
///
/// Each also carries ``RedisConfiguration/metricsDimensions``.
final class ConnectionMetrics: Sendable {
    let reconnects: Counter
    let commandTimeouts: Counter
    let connectTimeouts: Counter
    let inFlight: Meter

    init(_ configuration: RedisConfiguration) {
        let factory = configuration.metricsFactory ?? MetricsSystem.factory
        let dimensions = configuration.metricsDimensions
        reconnects = Counter(label: "hiredis_reconnects_total", dimensions: dimensions, factory: factory)
        commandTimeouts = Counter(label: "hiredis_timeouts_total", dimensions: dimensions + [("kind", "command")], factory: factory)
        connectTimeouts = Counter(label: "hiredis_timeouts_total", dimensions: dimensions + [("kind", "connect")], factory: factory)
        inFlight = Meter(label: "hiredis_commands_in_flight", dimensions: dimensions, factory: factory)
    }
}
