// libFuzzer target: `RedisConfiguration(url:)` on any input. It must return or throw
// `RedisError.invalidArgument`, never crash, and what it returns must be usable.
// Built by Fuzz/build.sh; one entry point per binary, no `main`.
import Hiredis

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzURL(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    // Invalid UTF-8 is decoded leniently (U+FFFD), as a caller's `String(decoding:)` would.
    let url = String(decoding: bytes, as: UTF8.self)
    check(url)
    // The same text behind each scheme, so that every input reaches the parsers.
    if !url.hasPrefix("redis://") && !url.hasPrefix("unix://") {
        check("redis://" + url)
        check("unix://" + url)
    }
    return 0
}

private func check(_ url: String) {
    let configuration: RedisConfiguration
    do {
        configuration = try RedisConfiguration(url: url)
    } catch let error as RedisError {
        guard error.code == .invalidArgument, !error.message.isEmpty else {
            fatalError("RedisConfiguration(url:) threw \(error.code), not invalidArgument")
        }
        _ = error.description
        return
    } catch {
        fatalError("RedisConfiguration(url:) threw a non-RedisError: \(type(of: error))")
    }
    switch configuration.endpoint {
    case .tcp(let host, _):
        guard !host.isEmpty else { fatalError("an accepted TCP URL has an empty host") }
    case .unixSocket(let path):
        guard !path.isEmpty else { fatalError("an accepted unix URL has an empty path") }
    }
    _ = configuration.endpoint.description
    if configuration.username != nil && configuration.password == nil {
        fatalError("a username without a password was accepted")
    }
}
