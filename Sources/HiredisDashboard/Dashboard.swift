import Foundation
import Hiredis
import HiredisOps
import Hummingbird
import LockKit
import Logging
import Metrics
import Prometheus
import QueueKit

/// A web dashboard of a HiredisKit deployment, mounted in your Hummingbird application
/// under a path of its choosing: a page with live counts (queues, workers and the age of
/// their heartbeat, in-flight tasks, dead letters, locks and semaphores) refreshed every
/// second, the JSON API behind it, optional actions (retry, purge, fail a worker), and
/// optional Prometheus metrics. The page and its script are served by the dashboard
/// itself: no build step, no CDN.
///
/// ```swift
/// let source = try OpsSource(client: connection, subscriber: subscriber)
/// var configuration = HiredisDashboard.Configuration()
/// configuration.actions = .enabled(bearerToken: secret)   // off by default
/// let router = Router()
/// HiredisDashboard(source: source, configuration: configuration).addRoutes(to: router, atPath: "/ops")
/// ```
///
/// Routes, under the path: `GET /` (the page), `GET /dashboard.js`, `GET /api/summary`,
/// `GET /api/queues`, `GET /api/queues/{queue}/tasks?offset=&limit=`,
/// `GET /api/queues/{queue}/dead-letters`, `GET /api/workers`, `GET /api/locks`,
/// `GET /api/jobs`; with actions enabled, `POST /api/queues/{queue}/retry`,
/// `POST /api/queues/{queue}/purge` (body `{"ids": [...]}` or none for all) and
/// `POST /api/workers/{id}/fail`, each needing `Authorization: Bearer <token>` (401 without
/// it, and 401 while actions are disabled: nothing changes); with a registry,
/// `GET /metrics` in Prometheus text format.
public struct HiredisDashboard: Sendable {
    /// Whether mutating actions are served.
    public enum Actions: Sendable {
        /// Every action request is refused (401).
        case disabled
        /// Actions need `Authorization: Bearer <token>`.
        case enabled(bearerToken: String)
    }

    /// What the host enables.
    public struct Configuration: Sendable {
        /// Off by default.
        public var actions: Actions = .disabled
        /// When set, `GET <path>/metrics` serves it in Prometheus text format.
        public var metricsRegistry: PrometheusCollectorRegistry?
        /// The page's title.
        public var title = "HiredisKit"
        /// Actions off, no metrics route.
        public init() {}
    }

    /// Where the figures are read.
    public let source: OpsSource
    /// What the host enabled.
    public let configuration: Configuration

    /// A dashboard of `source`.
    public init(source: OpsSource, configuration: Configuration = Configuration()) {
        self.source = source
        self.configuration = configuration
    }

    /// Bootstraps swift-metrics with a Prometheus factory on a new registry and returns the
    /// registry, for ``Configuration/metricsRegistry``. `MetricsSystem.bootstrap` may run
    /// only once per process: call this at most once, and not when the app bootstraps
    /// metrics itself (pass its registry instead).
    public static func bootstrapPrometheus() -> PrometheusCollectorRegistry {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }

    /// Adds the dashboard's routes to `router` under `path` (`"/"` for the root).
    public func addRoutes<Context: RequestContext>(to router: some RouterMethods<Context>, atPath path: String) {
        let base = "/" + path.split(separator: "/").joined(separator: "/")
        let prefix = base == "/" ? "" : base
        let group = router.group(RouterPath(prefix.isEmpty ? "" : prefix))
        let page = Self.page(title: configuration.title, base: prefix)
        // `<path>` and `<path>/` (the router ignores a trailing slash).
        group.get("") { _, _ in Self.response(page, type: "text/html; charset=utf-8") }
        group.get("dashboard.js") { _, _ in Self.response(dashboardScript, type: "text/javascript; charset=utf-8") }

        let source = self.source
        let actionsEnabled: Bool = if case .enabled = configuration.actions { true } else { false }
        group.get("api/summary") { _, _ in
            try await Self.json { DashboardSummary(summary: try await source.summary(), actionsEnabled: actionsEnabled) }
        }
        group.get("api/queues") { _, _ in try await Self.json { try await source.workQueue.queueSummaries() } }
        group.get("api/workers") { _, _ in try await Self.json { try await source.workQueue.workerSummaries() } }
        group.get("api/jobs") { _, _ in try await Self.json { try await source.jobCounts() } }
        group.get("api/locks") { _, _ in
            try await Self.json { LocksReport(locks: try await source.locks.locks(), semaphores: try await source.locks.semaphores()) }
        }
        group.get("api/queues/:queue/tasks") { request, context in
            let queue = try context.parameters.require("queue")
            let offset = request.uri.queryParameters.get("offset", as: Int.self) ?? 0
            let limit = request.uri.queryParameters.get("limit", as: Int.self) ?? 50
            return try await Self.json {
                TasksReport(queue: queue, offset: offset,
                            tasks: try await source.workQueue.getTasks(queue, offset: offset, limit: limit).map { String(decoding: $0, as: UTF8.self) })
            }
        }
        group.get("api/queues/:queue/dead-letters") { _, context in
            let queue = try context.parameters.require("queue")
            return try await Self.json { try await source.workQueue.deadLetters(queue).map(DeadLetterReport.init) }
        }

        let actions = configuration.actions
        group.post("api/queues/:queue/retry") { request, context in
            try await Self.action(request, actions) {
                let ids = try await Self.ids(request)
                let queue = try context.parameters.require("queue")
                return ActionReport(count: try await source.workQueue.retryDeadLetters(queue, ids: ids))
            }
        }
        group.post("api/queues/:queue/purge") { request, context in
            try await Self.action(request, actions) {
                let ids = try await Self.ids(request)
                let queue = try context.parameters.require("queue")
                return ActionReport(count: try await source.workQueue.purgeDeadLetters(queue, ids: ids))
            }
        }
        group.post("api/workers/:id/fail") { request, context in
            try await Self.action(request, actions) {
                let report = try await source.workQueue.failWorker(try context.parameters.require("id"))
                return ActionReport(count: report.requeued + report.deadLettered)
            }
        }
        if let registry = configuration.metricsRegistry {
            group.get("metrics") { _, _ in
                Self.response(registry.emitToString(), type: "text/plain; version=0.0.4; charset=utf-8")
            }
        }
    }

    // MARK: Helpers

    static func response(_ text: String, type: String, status: HTTPResponse.Status = .ok) -> Response {
        Response(status: status, headers: [.contentType: type, .cacheControl: "no-store"],
                 body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
    }

    /// Runs `body` and answers its value as JSON; a bad argument is a 400, an unknown
    /// worker a 404, anything else a 500, each with `{"error": message}`.
    static func json<T: Encodable>(_ body: () async throws -> T) async throws -> Response {
        do {
            return response(try opsJSON(try await body()), type: "application/json")
        } catch let error as RedisError where error.code == .invalidArgument {
            return failure(.badRequest, error.message)
        } catch let error as WorkQueueError where error.code == .unknownWorker {
            return failure(.notFound, String(describing: error))
        } catch let error as RedisError {
            return failure(.internalServerError, error.message)
        } catch {
            return failure(.internalServerError, String(describing: error))
        }
    }

    static func failure(_ status: HTTPResponse.Status, _ message: String) -> Response {
        response((try? opsJSON(["error": message])) ?? "{}", type: "application/json", status: status)
    }

    /// Checks the bearer token before running `body` (nothing is read or changed without it).
    static func action<T: Encodable>(_ request: Request, _ actions: Actions, _ body: () async throws -> T) async throws -> Response {
        guard case .enabled(let token) = actions else {
            return failure(.unauthorized, "actions are disabled on this dashboard")
        }
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer "),
              constantTimeEqual(Array(header.dropFirst("Bearer ".count).utf8), Array(token.utf8)) else {
            var response = failure(.unauthorized, "a valid bearer token is required")
            response.headers[.wwwAuthenticate] = "Bearer"
            return response
        }
        return try await json(body)
    }

    /// `{"ids": [...]}` from the body; `nil` (all) for an empty body or no `ids`.
    static func ids(_ request: Request) async throws -> [String]? {
        let body = try await request.body.collect(upTo: 1 << 20)
        guard body.readableBytes > 0 else { return nil }
        struct Body: Decodable { var ids: [String]? }
        do {
            return try JSONDecoder().decode(Body.self, from: Data(body.readableBytesView)).ids
        } catch {
            throw RedisError.invalidArgument("the body must be {\"ids\": [\"…\"]}")
        }
    }

    static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}

/// `api/summary`: the snapshot, and whether the page may offer actions.
public struct DashboardSummary: Sendable, Codable {
    /// The snapshot.
    public var summary: OpsSummary
    /// Whether the host enabled actions (a token is still needed).
    public var actionsEnabled: Bool
}

struct LocksReport: Codable {
    var locks: [LockInfo]
    var semaphores: [SemaphoreInfo]
}

struct TasksReport: Codable {
    var queue: String
    var offset: Int
    var tasks: [String]
}

struct ActionReport: Codable {
    var count: Int
}
