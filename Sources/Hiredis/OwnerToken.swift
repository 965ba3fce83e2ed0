import Synchronization

/// Tokens that say who holds something in Redis (a lock, a permit, a lease): unique
/// across processes and attempts, and cheap to make.
///
/// A random 128-bit prefix, drawn once per process, followed by a counter, both in hex.
/// `UUID()` would do too, but costs a system call for its randomness and a `printf` for
/// its text on every lock attempt.
package enum OwnerToken {
    /// 32 hex digits, then "-".
    private static let prefix: [UInt8] = {
        var generator = SystemRandomNumberGenerator()
        var bytes: [UInt8] = []
        for _ in 0..<2 { appendHex(generator.next() as UInt64, width: 16, to: &bytes) }
        bytes.append(0x2D)
        return bytes
    }()

    private static let counter = Atomic<UInt64>(0)

    /// `value` in lower-case hex, `width` digits at least.
    private static func appendHex(_ value: UInt64, width: Int, to bytes: inout [UInt8]) {
        let digits = max(width, (64 - value.leadingZeroBitCount + 3) / 4)
        for position in stride(from: digits - 1, through: 0, by: -1) {
            let nibble = UInt8(truncatingIfNeeded: value >> (4 * UInt64(position))) & 0xF
            bytes.append(nibble < 10 ? 0x30 + nibble : 0x57 + nibble)
        }
    }

    /// A token no other call, in this process or another, returns.
    package static func next() -> String {
        var bytes = prefix
        appendHex(counter.add(1, ordering: .relaxed).newValue, width: 1, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }
}
