/// Redis Cluster's key → slot mapping: CRC16 (XMODEM) of the key, or of its hash tag (the
/// bytes between the first `{` and the next `}`, when not empty), modulo 16384.
public enum ClusterSlot {
    /// The number of slots of a Redis Cluster.
    public static let count = 16384

    /// The slot of `key`.
    public static func of(_ key: String) -> Int {
        var key = key
        return key.withUTF8 { of(UnsafeRawBufferPointer($0)) }
    }

    /// The slot of a binary key.
    public static func of(_ key: [UInt8]) -> Int {
        key.withUnsafeBytes { of($0) }
    }

    static func of(_ key: UnsafeRawBufferPointer) -> Int {
        var start = 0
        var end = key.count
        if let open = key.firstIndex(of: UInt8(ascii: "{")),
           let close = key[(open + 1)...].firstIndex(of: UInt8(ascii: "}")), close > open + 1 {
            start = open + 1
            end = close
        }
        var crc: UInt16 = 0
        for index in start..<end {
            crc = (crc << 8) ^ table[Int(UInt8(truncatingIfNeeded: crc >> 8) ^ key[index])]
        }
        return Int(crc) & (count - 1)
    }

    private static let table: [UInt16] = (0..<256).map { byte in
        var crc = UInt16(byte) << 8
        for _ in 0..<8 { crc = crc & 0x8000 != 0 ? (crc << 1) ^ 0x1021 : crc << 1 }
        return crc
    }
}
