import Foundation
import Hiredis
import Hummingbird
import LockKit
import Logging
import Metrics
import Prometheus
import QueueKit
import ServiceLifecycle

/// One instance of the example service. Run several against the same Redis:
///
///     REDIS_URL=redis://127.0.0.1:6379 PORT=8080 INSTANCE=a swift run --package-path Examples
///
/// `PORT=0` takes any free port; the instance logs the one it got ("listening", `port=`).
@main
struct ExampleApp {
    static func main() async throws {
        let environment = ProcessInfo.processInfo.environment
        let instance = environment["INSTANCE"] ?? "example"
        let redisURL = environment["REDIS_URL"] ?? "redis://127.0.0.1:6379"
        let port = Int(environment["PORT"] ?? "8080") ?? 8080

        // Logs: swift-log to standard output, every line tagged with the instance.
        LoggingSystem.bootstrap(StreamLogHandler.standardOutput)
        var logger = Logger(label: "example")
        logger.logLevel = environment["LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .info
        logger[metadataKey: "instance"] = "\(instance)"

        // Metrics: swift-metrics into a Prometheus registry, served at GET /metrics. The
        // library's own metrics (queuekit_*) and Hummingbird's request metrics land there too.
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))

        // Redis: one connection for commands, shared by everything, and a subscriber for each
        // module's events (pub/sub needs connections of its own).
        var configuration = try RedisConfiguration(url: redisURL)
        configuration.clientName = "example-\(instance)"
        configuration.logger = logger
        let redis = try await RedisConnection.connect(configuration)
        let lockEvents = try await RedisSubscriber.connect(configuration)
        let queueEvents = try await RedisSubscriber.connect(configuration)

        // LockKit: locks and fan-out. Every instance must use the same channel and prefix.
        var lockOptions = CallbackQueueOptions(channel: "{example:locks}", lockPrefix: "example:lock:")
        // A fan-out leader's lease, renewed while its job runs: another instance takes a dead
        // leader's job over after about this long. 5 s rather than the 1 s default, so that a
        // busy host pausing this process for a second does not get its job run twice.
        lockOptions.lock.keepAliveLease = .seconds(5)
        lockOptions.logger = logger
        let locks = try CallbackQueue(client: redis, pubsub: lockEvents, options: lockOptions)

        // QueueKit: the work queue, and this instance's worker as a Service.
        var queueOptions = WorkQueueOptions(prefix: "example")
        queueOptions.shutdownGracePeriod = .seconds(20)   // running tasks may finish within this
        queueOptions.workerTimeout = .seconds(10)         // silent this long = dead (a busy host is not)
        queueOptions.reregisterAfterFailure = true        // after a long pause, rejoin rather than stop
        queueOptions.logger = logger
        let workQueue = try WorkQueue(client: redis, subscriber: queueEvents, options: queueOptions)

        let example = Example(instance: instance, redis: redis, locks: locks, workQueue: workQueue, logger: logger)
        let worker = workQueue.makeWorker()
        try await worker.handle(Example.taskQueue, concurrency: 4) { process in
            try await example.process(process)
        }

        let app = Application(
            router: example.router(metrics: registry),
            configuration: .init(address: .hostname("127.0.0.1", port: port), serverName: "example-\(instance)"),
            onServerRunning: { [logger] channel in
                logger.info("listening", metadata: ["port": "\(channel.localAddress?.port ?? port)"])
            },
            logger: logger
        )

        // One ServiceGroup: the HTTP server and the worker. On SIGTERM or SIGINT it shuts them
        // down in reverse order: the server stops taking requests, then the worker stops taking
        // tasks and lets the running ones finish (within `shutdownGracePeriod`).
        let group = ServiceGroup(configuration: .init(
            services: [worker, app],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        ))
        try await group.run()

        await locks.close()
        await lockEvents.close()
        await queueEvents.close()
        await redis.close()
        logger.info("stopped")
    }
}
