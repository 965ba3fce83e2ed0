import Hiredis
import Hummingbird
import LockKit
import Logging
import Prometheus
import QueueKit

/// What the routes and the worker share: the instance's name and its Redis-backed tools.
struct Example: Sendable {
    let instance: String
    let redis: RedisConnection
    let locks: CallbackQueue
    let workQueue: WorkQueue
    let logger: Logger

    /// The queue `POST /tasks` feeds and the worker drains.
    static let taskQueue = "tasks"

    func router(metrics registry: PrometheusCollectorRegistry) -> Router<BasicRequestContext> {
        let router = Router()
        router.addMiddleware {
            LogRequestsMiddleware(.info)
            MetricsMiddleware()
        }
        router.get("health") { _, _ in HTTPResponse.Status.ok }
        router.get("metrics") { _, _ in String(decoding: registry.emitToBuffer(), as: UTF8.self) }

        // An expensive report, computed once for concurrent callers on every instance.
        router.get("report/:id") { _, context in
            try await report(context.parameters.require("id"))
        }
        // Work for the worker of whichever instance is free.
        router.post("tasks") { request, context in
            let task = try await request.decode(as: TaskRequest.self, context: context)
            return EditedResponse(status: .accepted, response: try await enqueue(task))
        }
        // A lock-protected read-modify-write.
        router.post("counter/:name/increment") { _, context in
            try await increment(context.parameters.require("name"))
        }
        return router
    }
}
