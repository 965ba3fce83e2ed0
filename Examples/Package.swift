// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "HiredisKitExample",
    platforms: [.macOS(.v15)],
    dependencies: [
        // The library from this repository. A path dependency's identity is its folder's
        // name, which depends on where the repository was cloned: `name:` fixes it.
        .package(name: "HiredisKit", path: ".."),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.4.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        .executableTarget(
            name: "HiredisKitExample",
            dependencies: [
                .product(name: "Hiredis", package: "HiredisKit"),
                .product(name: "LockKit", package: "HiredisKit"),
                .product(name: "QueueKit", package: "HiredisKit"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: [.enableUpcomingFeature("ExistentialAny")]
        ),
    ]
)
