import Foundation
import RedisTestSupport
import Testing

/// Debian's `chromium`, if installed (`make test` installs it).
private let chromium: String? = ["/usr/bin/chromium", "/usr/bin/chromium-browser"].first {
    FileManager.default.isExecutableFile(atPath: $0)
}

/// The standalone dashboard (`hiredis-admin serve`) in headless Chromium, against a
/// populated Redis: the rendered DOM shows the queue names and counts.
@Suite(.enabled(if: chromium != nil, "chromium is not installed (make test installs it: apt-get install chromium)"))
struct BrowserTests {
    @Test func theRenderedDashboardShowsTheQueuesAndTheirCounts() async throws {
        let deployment = try await Deployment.start()
        let port = try freeLoopbackPort()
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(UUID().uuidString).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let server = ChildProcess()
        server.executableURL = AdminRun.executable
        server.arguments = ["serve", "--port", "\(port)"] + deployment.adminOptions
        server.standardOutput = try FileHandle(forWritingTo: log)
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate() }
        // The server prints its address once it listens.
        try await eventually("the dashboard to listen") {
            (try? String(contentsOf: log, encoding: .utf8))?.contains("dashboard on http://127.0.0.1:\(port)/") == true
        }

        let url = "http://127.0.0.1:\(port)/"
        let dom = try await runChromium(["--dump-dom", url])
        // Rows rendered by the page's script from api/summary.
        #expect(dom.contains("<tr><td>emails</td><td class=\"n\">2</td><td class=\"n\">1</td><td class=\"n dead\">1</td>"))
        #expect(dom.contains("<tr><td>reports</td><td class=\"n\">3</td><td class=\"n\">0</td><td class=\"n\">0</td>"))
        #expect(dom.contains("<tr><td>digests</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">0</td><td class=\"n\">1</td><td>paused</td>"))
        #expect(dom.contains("<td>worker-1</td>") && dom.contains("<td>report</td>") && dom.contains("2 / 3"))

        // Under the build directory (`.build/dashboard.png`), for a person to look at.
        var buildDirectory = AdminRun.executable.deletingLastPathComponent()
        while buildDirectory.pathComponents.count > 1, !buildDirectory.lastPathComponent.hasPrefix(".build") {
            buildDirectory.deleteLastPathComponent()
        }
        let screenshot = buildDirectory.appendingPathComponent("dashboard.png")
        try? FileManager.default.removeItem(at: screenshot)
        _ = try await runChromium(["--screenshot=\(screenshot.path)", "--window-size=1200,900", url])
        #expect(FileManager.default.fileExists(atPath: screenshot.path))
    }

    /// Runs headless Chromium with a virtual time budget (the page's fetches complete within
    /// it) and returns its standard output.
    private func runChromium(_ arguments: [String]) async throws -> String {
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString).out")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-profile-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        let process = ChildProcess()
        process.executableURL = URL(fileURLWithPath: chromium!)
        process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000",
                             "--user-data-dir=\(profile.path)"] + arguments
        process.standardOutput = try FileHandle(forWritingTo: output)
        process.standardError = FileHandle.nullDevice
        let status: Int32 = try await withCheckedThrowingContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do { try process.run() } catch { continuation.resume(throwing: error) }
        }
        #expect(status == 0)
        return try String(contentsOf: output, encoding: .utf8)
    }
}
