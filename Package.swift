// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "HiredisKit",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "Hiredis", targets: ["Hiredis"]),
        .library(name: "LockKit", targets: ["LockKit"]),
        .library(name: "QueueKit", targets: ["QueueKit"]),
        .library(name: "HiredisOps", targets: ["HiredisOps"]),
        .library(name: "HiredisDashboard", targets: ["HiredisDashboard"]),
        .executable(name: "hiredis-admin", targets: ["hiredis-admin"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.4.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .systemLibrary(
            name: "CHiredis",
            pkgConfig: "hiredis",
            providers: [.apt(["libhiredis-dev"]), .brew(["hiredis"])]
        ),
        .target(
            name: "Hiredis",
            dependencies: [
                "CHiredis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "DequeModule", package: "swift-collections"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LockKit",
            dependencies: [
                "Hiredis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "QueueKit",
            dependencies: [
                "Hiredis",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "HiredisOps",
            dependencies: ["Hiredis", "LockKit", "QueueKit"],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "HiredisDashboard",
            dependencies: [
                "Hiredis", "LockKit", "QueueKit", "HiredisOps",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "hiredis-admin",
            dependencies: [
                "Hiredis", "LockKit", "QueueKit", "HiredisOps", "HiredisDashboard",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "hiredis-bench",
            dependencies: [
                "Hiredis", "LockKit", "QueueKit", "RedisTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "hiredis-demo",
            dependencies: ["Hiredis", "LockKit", "QueueKit", "RedisTestSupport"],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "hiredis-chaos",
            dependencies: [
                "Hiredis", "LockKit", "QueueKit", "RedisTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "hiredis-test-helper",
            dependencies: ["Hiredis", "LockKit", "QueueKit", "RedisTestSupport"],
            path: "Tests/TestHelper",
            swiftSettings: swiftSettings
        ),
        .target(
            name: "RedisTestSupport",
            dependencies: ["Hiredis", .product(name: "Logging", package: "swift-log")],
            path: "Tests/RedisTestSupport",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "HiredisTests",
            dependencies: ["Hiredis", "RedisTestSupport", "CHiredis"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LockKitTests",
            dependencies: ["LockKit", "Hiredis", "RedisTestSupport", "hiredis-test-helper"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "QueueKitTests",
            dependencies: [
                "QueueKit", "Hiredis", "RedisTestSupport", "hiredis-test-helper",
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),
        // The code samples of README.md and the DocC articles, generated by
        // scripts/samples.py: compiled, never run. Warnings are off here only: a sample
        // shows one call and leaves values unused on purpose.
        .testTarget(
            name: "DocSamples",
            dependencies: [
                "Hiredis", "LockKit", "QueueKit", "HiredisOps", "HiredisDashboard",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Tests/DocSamples",
            swiftSettings: swiftSettings + [.unsafeFlags(["-suppress-warnings"])]
        ),
        .testTarget(
            name: "OperationsTests",
            dependencies: [
                "LockKit", "QueueKit", "Hiredis", "RedisTestSupport", "HiredisOps", "HiredisDashboard", "hiredis-admin",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// `make test-tls` builds the package a second time, against hiredis 1.x with TLS, only to run
// the TLS suites: HIREDISKIT_CORE_ONLY=1 leaves out the operations products, whose
// Hummingbird and Prometheus would double that build's time and are not under test there.
// DocSamples goes too: its samples import HiredisOps, HiredisDashboard and Hummingbird.
if Context.environment["HIREDISKIT_CORE_ONLY"] == "1" {
    let operations: Set<String> = ["HiredisOps", "HiredisDashboard", "hiredis-admin", "OperationsTests", "DocSamples"]
    package.products.removeAll { operations.contains($0.name) }
    package.targets.removeAll { operations.contains($0.name) }
    package.dependencies.removeAll { dependency in
        guard case .sourceControl(_, let location, _) = dependency.kind else { return false }
        return location.hasSuffix("/hummingbird") || location.hasSuffix("/swift-prometheus")
    }
}
