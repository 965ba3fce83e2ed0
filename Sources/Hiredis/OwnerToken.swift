import Synchronization

/// Tokens that say who holds something in Redis (a lock, a permit, a lease): unique
/// across processes and attempts, and cheap to make.
///
/// A random 128-bit prefix, drawn once per process, followed by a counter. `UUID()` would
/// do too, but costs a system call for its randomness and a `printf` for its text on every
/// lock attempt.
package enum OwnerToken {
    private static let prefix: String = {
        var generator = SystemRandomNumberGenerator()
        let high = generator.next() as UInt64
        let low = generator.next() as UInt64
        return hex(high) + hex(low)
    }()

    private static let counter = Atomic<UInt64>(0)

    private static func hex(_ value: UInt64) -> String {
        let digits = String(value, radix: 16)
        return String(repeating: "0", count: 16 - digits.count) + digits
    }

    /// A token no other call, in this process or another, returns.
    package static func next() -> String {
        prefix + "-" + String(counter.add(1, ordering: .relaxed).newValue, radix: 16)
    }
}
