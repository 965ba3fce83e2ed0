import Hiredis
import Testing

/// `RedisConfiguration(url:)`: what each form means, and a named, secret-free error for
/// every malformed part.
@Suite struct URLTests {
    static let secret = "T0p-Secret-42"

    @Test func percentDecodesTheUsernameAndPassword() throws {
        let configuration = try RedisConfiguration(url: "redis://al%69ce:p%40ss%3Aw%2Fd%25@127.0.0.1:6380/2")
        #expect(configuration.username == "alice")
        #expect(configuration.password == "p@ss:w/d%")
        #expect(configuration.endpoint == .tcp(host: "127.0.0.1", port: 6380))
        #expect(configuration.database == 2)
        // An unencoded "@" in the password still works: the host follows the last one.
        let lenient = try RedisConfiguration(url: "redis://:p@ss@example.test")
        #expect(lenient.password == "p@ss")
        #expect(lenient.endpoint == .tcp(host: "example.test", port: 6379))
        // A password alone, as in AUTH password; non-ASCII UTF-8 is fine.
        let passwordOnly = try RedisConfiguration(url: "redis://caf%C3%A9@h")
        #expect(passwordOnly.username == nil && passwordOnly.password == "café")
    }

    @Test func ipv6HostsGoInBrackets() throws {
        #expect(try RedisConfiguration(url: "redis://[::1]").endpoint == .tcp(host: "::1", port: 6379))
        let full = try RedisConfiguration(url: "redis://[::1]:6380/2")
        #expect(full.endpoint == .tcp(host: "::1", port: 6380))
        #expect(full.database == 2)
    }

    @Test func defaultsAndSchemes() throws {
        let bare = try RedisConfiguration(url: "redis://")
        #expect(bare.endpoint == .tcp(host: "127.0.0.1", port: 6379))
        #expect(bare.database == 0 && bare.password == nil && bare.tls == nil)
        #expect(try RedisConfiguration(url: "REDIS://h/").endpoint == .tcp(host: "h", port: 6379))
        let tls = try RedisConfiguration(url: "rediss://:pw@cache.internal:6380")
        #expect(tls.tls == RedisTLSConfiguration())
        #expect(tls.tls?.verifyPeer == true)
        #expect(tls.endpoint == .tcp(host: "cache.internal", port: 6380))
        #expect(try RedisConfiguration(url: "redis://h").tls == nil)
        let unix = try RedisConfiguration(url: "unix:///tmp/my%20dir/redis.sock?db=4")
        #expect(unix.endpoint == .unixSocket(path: "/tmp/my dir/redis.sock"))
        #expect(unix.database == 4)
        #expect(try RedisConfiguration(url: "unix:///tmp/r.sock").database == 0)
        #expect(try RedisConfiguration(url: "redis://h:65535").endpoint == .tcp(host: "h", port: 65535))
    }

    /// Every malformed part: the error is `invalidArgument`, names the part, and never
    /// contains the password (the URL is quoted with it redacted).
    @Test(arguments: [
        ("http://h", "the scheme \"http\""),
        ("ftp://user:\(URLTests.secret)@h", "the scheme \"ftp\""),
        ("127.0.0.1:6379", "the scheme is missing"),
        (":\(URLTests.secret)@h:6379", "the scheme is missing"),
        ("redis://:\(URLTests.secret)@h:0", "the port"),
        ("redis://:\(URLTests.secret)@h:65536", "the port"),
        ("redis://:\(URLTests.secret)@h:-1", "the port"),
        ("redis://:\(URLTests.secret)@h:port", "the port"),
        ("redis://:\(URLTests.secret)@h:", "the port"),
        ("rediss://alice:\(URLTests.secret)@h:99999", "the port"),
        ("redis://:\(URLTests.secret)@[::1]:0", "the port"),
        ("redis://:\(URLTests.secret)@h/x", "the database"),
        ("redis://:\(URLTests.secret)@h/-1", "the database"),
        ("redis://:\(URLTests.secret)@h/1/2", "the database"),
        ("redis://:\(URLTests.secret)@[::1", "the host"),
        ("redis://:\(URLTests.secret)@[::1:6379", "the host"),
        ("redis://:\(URLTests.secret)@::1", "the host"),
        ("redis://:\(URLTests.secret)@::1:6379", "the host"),
        ("redis://:\(URLTests.secret)@[]:6379", "the host"),
        ("redis://:\(URLTests.secret)@[::1]6379", "the host"),
        ("redis://:\(URLTests.secret)@h]:6379", "the host"),
        ("redis://al%ZZice:\(URLTests.secret)@h", "the username"),
        ("redis://alice:\(URLTests.secret)%G1@h", "the password"),
        ("redis://alice:@h", "the password"),   // a username without a password (found by the URL fuzzer)
        ("redis://:\(URLTests.secret)%@h", "the password"),
        ("redis://:\(URLTests.secret)%4@h", "the password"),
        ("redis://:%FF\(URLTests.secret)@h", "the password"),
        ("redis://\(URLTests.secret)%zz@h", "the password"),
        ("redis://:\(URLTests.secret)@h?db=1", "the query"),
        ("unix://", "the socket path"),
        ("unix://relative/redis.sock", "the socket path"),
        ("unix://:\(URLTests.secret)@/tmp/redis.sock", "the socket path"),
        ("unix:///tmp/%ZZ.sock", "the socket path"),
        ("unix:///tmp/r.sock?db=x", "the database"),
        ("unix:///tmp/r.sock?db=-2", "the database"),
        ("unix:///tmp/r.sock?password=\(URLTests.secret)", "the query parameter \"password\""),
    ])
    func aMalformedPartIsNamedWithoutThePassword(_ url: String, _ part: String) {
        let error = #expect(throws: RedisError.self, "\(url)") { try RedisConfiguration(url: url) }
        guard let error else { return }
        #expect(error.code == .invalidArgument)
        #expect(error.message.contains(part), "\(error.message)")
        #expect(!error.message.contains(Self.secret), "the password leaked: \(error.message)")
        #expect(!"\(error)".contains(Self.secret))
        #expect(!String(reflecting: error).contains(Self.secret))
    }

    @Test func errorsQuoteTheURLWithTheUserinfoRedacted() {
        let withUser = #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://alice:\(Self.secret)@h:0") }
        #expect(withUser?.message.contains("\"redis://alice:(redacted)@h:0\"") == true, "\(withUser?.message ?? "")")
        let passwordOnly = #expect(throws: RedisError.self) { try RedisConfiguration(url: "redis://\(Self.secret)@h/x") }
        #expect(passwordOnly?.message.contains("\"redis://(redacted)@h/x\"") == true, "\(passwordOnly?.message ?? "")")
        let query = #expect(throws: RedisError.self) { try RedisConfiguration(url: "unix:///r.sock?db=1&pass=\(Self.secret)") }
        #expect(query?.message.contains("\"unix:///r.sock?db=1&pass=(redacted)\"") == true, "\(query?.message ?? "")")
    }
}
