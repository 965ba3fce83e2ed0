import CoreMetrics
import Foundation
import HiredisDashboard
import HiredisOps
import Hummingbird
import HummingbirdTesting
import LockKit
import Prometheus
import QueueKit
import RedisTestSupport
import Testing

/// The dashboard mounted under `/ops` of a Hummingbird application, against a populated Redis.
private func withDashboard<T: Sendable>(
    _ deployment: Deployment, _ configure: (inout HiredisDashboard.Configuration) -> Void = { _ in },
    _ test: @escaping @Sendable (any TestClientProtocol) async throws -> T
) async throws -> T {
    var configuration = HiredisDashboard.Configuration()
    configure(&configuration)
    let router = Router()
    HiredisDashboard(source: try await deployment.source(), configuration: configuration).addRoutes(to: router, atPath: "/ops")
    return try await Application(router: router).test(.router, test)
}

private func decode<T: Decodable>(_ type: T.Type, _ response: TestResponse) throws -> T {
    try JSONDecoder().decode(type, from: Data(response.body.readableBytesView))
}

private let token = "t0ken-for-tests"
private let authorized: HTTPFields = [.authorization: "Bearer \(token)"]

@Suite struct DashboardAPITests {
    @Test func theSummaryHasTheFiguresOfTheDeployment() async throws {
        let deployment = try await Deployment.start()
        let summary = try await withDashboard(deployment) { client in
            try await client.execute(uri: "/ops/api/summary", method: .get) { response in
                #expect(response.status == .ok)
                return try decode(DashboardSummary.self, response)
            }
        }
        #expect(summary.summary.queues == [QueueSummary(name: "digests", waiting: 0, inFlight: 0, deadLetters: 0, delayed: 1, paused: true,
                                                        limits: QueueLimits(rate: RateLimit(50, per: .seconds(1)), concurrency: 4)),
                                           QueueSummary(name: "emails", waiting: 2, inFlight: 1, deadLetters: 1),
                                           QueueSummary(name: "reports", waiting: 3, inFlight: 0, deadLetters: 0)])
        #expect(summary.summary.workers.map(\.id) == ["worker-1"] && summary.summary.workers.first?.inFlight == 1)
        #expect(summary.summary.locks.map(\.key) == ["report"] && summary.summary.locks.first?.token == deployment.lock.token)
        #expect(summary.summary.semaphores.first?.held == 2 && summary.summary.semaphores.first?.permits == 3)
        #expect(summary.summary.jobs == JobCounts(pending: 2, leased: 1, fulfilled: 2, waitingNotification: 1))
        #expect(!summary.actionsEnabled)
    }

    @Test func pagesOfTasksAndDeadLettersWithTheirErrors() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment) { client in
            try await client.execute(uri: "/ops/api/queues/reports/tasks?offset=1&limit=1", method: .get) { response in
                struct Page: Decodable { var tasks: [String] }
                let page = try decode(Page.self, response)
                #expect(page.tasks == ["r2"])
            }
            try await client.execute(uri: "/ops/api/queues/emails/dead-letters", method: .get) { response in
                let letters = try decode([DeadLetterReport].self, response)
                #expect(letters.map(\.error) == ["smtp down"])
            }
        }
    }

    @Test func thePageAndItsScriptAreServedWithoutACDN() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment) { client in
            try await client.execute(uri: "/ops", method: .get) { response in
                let html = String(buffer: response.body)
                #expect(response.headers[.contentType]?.hasPrefix("text/html") == true)
                #expect(html.contains("<script src=\"/ops/dashboard.js\"></script>") && !html.contains("http"))
            }
            try await client.execute(uri: "/ops/dashboard.js", method: .get) { response in
                #expect(response.status == .ok && String(buffer: response.body).contains("/api/summary"))
            }
        }
    }
}

@Suite struct DashboardActionTests {
    @Test func actionsAreRefusedWhileDisabledEvenWithAToken() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment) { client in
            try await client.execute(uri: "/ops/api/queues/emails/purge", method: .post, headers: authorized) { response in
                #expect(response.status == .unauthorized)
            }
        }
        #expect(try await deployment.workQueue.deadLetters("emails").count == 1)
    }

    @Test func actionsWithoutTheRightTokenAre401AndChangeNothing() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment, { $0.actions = .enabled(bearerToken: token) }) { client in
            for headers: HTTPFields in [[:], [.authorization: "Bearer wrong"], [.authorization: token]] {
                for uri in ["/ops/api/queues/emails/retry", "/ops/api/queues/emails/purge", "/ops/api/workers/worker-1/fail"] {
                    try await client.execute(uri: uri, method: .post, headers: headers) { response in
                        #expect(response.status == .unauthorized, "\(uri) \(headers)")
                    }
                }
            }
        }
        #expect(try await deployment.workQueue.queueSummary("emails") == QueueSummary(name: "emails", waiting: 2, inFlight: 1, deadLetters: 1))
        #expect(try await deployment.workQueue.getWorkers() == ["worker-1"])
    }

    @Test func retryWithTheTokenPutsDeadLettersBack() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment, { $0.actions = .enabled(bearerToken: token) }) { client in
            try await client.execute(uri: "/ops/api/queues/emails/retry", method: .post, headers: authorized) { response in
                #expect(response.status == .ok && String(buffer: response.body) == #"{"count":1}"#)
            }
        }
        #expect(try await deployment.workQueue.queueSummary("emails").deadLetters == 0)
        #expect(try await deployment.workQueue.countQueue("emails") == 3)
    }

    @Test func purgeWithTheTokenForgetsTheIdsGiven() async throws {
        let deployment = try await Deployment.start()
        let id = try #require(try await deployment.workQueue.deadLetters("emails").first?.id)
        try await withDashboard(deployment, { $0.actions = .enabled(bearerToken: token) }) { client in
            try await client.execute(uri: "/ops/api/queues/emails/purge", method: .post, headers: authorized,
                                     body: ByteBuffer(string: #"{"ids":["\#(id)"]}"#)) { response in
                #expect(response.status == .ok && String(buffer: response.body) == #"{"count":1}"#)
            }
        }
        #expect(try await deployment.workQueue.deadLetters("emails").isEmpty)
    }

    @Test func failWorkerWithTheTokenRequeuesItsTasks() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment, { $0.actions = .enabled(bearerToken: token) }) { client in
            try await client.execute(uri: "/ops/api/workers/worker-1/fail", method: .post, headers: authorized) { response in
                #expect(response.status == .ok)
            }
            try await client.execute(uri: "/ops/api/workers/nobody/fail", method: .post, headers: authorized) { response in
                #expect(response.status == .notFound)
            }
        }
        let summary = try await deployment.workQueue.queueSummary("emails")
        #expect(summary == QueueSummary(name: "emails", waiting: 3, inFlight: 0, deadLetters: 1))
    }
}

@Suite struct DashboardMetricsTests {
    @Test func metricsAreServedInPrometheusTextFormat() async throws {
        let deployment = try await Deployment.start()
        let registry = PrometheusCollectorRegistry()
        // The modules' metrics through a Prometheus factory, as a host would bootstrap it.
        let factory = PrometheusMetricsFactory(registry: registry)
        var options = CallbackQueueOptions(channel: "metrics-" + UUID().uuidString, lockPrefix: deployment.prefixes.lock)
        options.metricsFactory = factory
        let queue = try CallbackQueue(client: try await deployment.redis.connect(), pubsub: try await deployment.redis.subscriber(),
                                      options: options)
        try await queue.once("another").release()
        try await withDashboard(deployment, { $0.metricsRegistry = registry }) { client in
            try await client.execute(uri: "/ops/metrics", method: .get) { response in
                #expect(response.status == .ok)
                #expect(String(buffer: response.body).contains(#"lockkit_acquisitions_total{kind="lock"} 1"#))
            }
        }
    }

    @Test func withoutARegistryThereIsNoMetricsRoute() async throws {
        let deployment = try await Deployment.start()
        try await withDashboard(deployment) { client in
            try await client.execute(uri: "/ops/metrics", method: .get) { response in
                #expect(response.status == .notFound)
            }
        }
    }
}
