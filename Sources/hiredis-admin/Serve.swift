import ArgumentParser
import Foundation
import HiredisDashboard
import HiredisOps
import Hummingbird
import Logging

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Serve the dashboard (loopback by default).")
    @OptionGroup var connection: ConnectionOptions
    @Option(help: "The port.") var port = 8080
    @Option(help: "The address to bind (default loopback).") var host = "127.0.0.1"
    @Option(help: "Enable retry/purge/fail-worker with this bearer token (or HIREDIS_ADMIN_TOKEN).") var token: String?
    @Flag(help: "Serve Prometheus metrics at /metrics.") var metrics = false

    func validate() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
    }

    func run() async throws {
        // Before the connections are made, so that their metrics reach the registry.
        let registry = metrics ? HiredisDashboard.bootstrapPrometheus() : nil
        let source: OpsSource
        do { source = try await connection.open() } catch {
            printError(error)
            throw ExitCode.failure
        }
        let token = self.token ?? ProcessInfo.processInfo.environment["HIREDIS_ADMIN_TOKEN"]
        var configuration = HiredisDashboard.Configuration()
        if let token, !token.isEmpty { configuration.actions = .enabled(bearerToken: token) }
        configuration.metricsRegistry = registry
        let dashboard = HiredisDashboard(source: source, configuration: configuration)
        let router = Router()
        dashboard.addRoutes(to: router, atPath: "/")
        let app = Application(
            router: router, configuration: .init(address: .hostname(host, port: port), serverName: "hiredis-admin"),
            onServerRunning: { channel in
                print("dashboard on http://\(host):\(channel.localAddress?.port ?? port)/")
                fflush(nil)
            },
            logger: Logger(label: "hiredis-admin"))
        try await app.runService()
    }
}
