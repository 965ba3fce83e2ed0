import CHiredis

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// `hiredis_ssl` and the OpenSSL functions a TLS connection needs, resolved at run time.
///
/// The package links only `libhiredis`, so that it builds wherever hiredis is installed,
/// Debian 12's 0.14 (which has no TLS) included. Where the linked hiredis is 1.x, its
/// companion `libhiredis_ssl` is looked up when the first TLS connection is made: in the
/// process first (an application may link it), then by its usual file names. OpenSSL's
/// functions come from the same place (`libhiredis_ssl` depends on `libssl` and
/// `libcrypto`).
///
/// The connection makes and configures the `SSL` object itself, then hands it to hiredis
/// with `redisInitiateSSL`: so the server's name is verified (`SSL_set1_host`, which
/// hiredis's own context helper does not do), and a failed handshake can be told apart
/// from a refused certificate.
///
/// Every stored property is a C function pointer or a string, set once in `init`: the type
/// is `Sendable` as it stands. The functions are thread-safe (OpenSSL ≥ 1.1 locks
/// internally); the objects they are given belong to one connection's queue.
struct TLSLibrary: Sendable {
    typealias Pointer = OpaquePointer

    let initiate: @convention(c) (UnsafeMutablePointer<redisContext>?, Pointer?) -> Int32
    let clientMethod: @convention(c) () -> Pointer?
    let contextNew: @convention(c) (Pointer?) -> Pointer?
    let contextFree: @convention(c) (Pointer?) -> Void
    let setVerify: @convention(c) (Pointer?, Int32, Pointer?) -> Void
    let loadVerifyLocations: @convention(c) (Pointer?, UnsafePointer<CChar>?, UnsafePointer<CChar>?) -> Int32
    let setDefaultVerifyPaths: @convention(c) (Pointer?) -> Int32
    let useCertificateChainFile: @convention(c) (Pointer?, UnsafePointer<CChar>?) -> Int32
    let usePrivateKeyFile: @convention(c) (Pointer?, UnsafePointer<CChar>?, Int32) -> Int32
    let checkPrivateKey: @convention(c) (Pointer?) -> Int32
    let setPasswordUserData: @convention(c) (Pointer?, UnsafeMutableRawPointer?) -> Void
    let sslNew: @convention(c) (Pointer?) -> Pointer?
    let sslFree: @convention(c) (Pointer?) -> Void
    let sslControl: @convention(c) (Pointer?, Int32, Int, UnsafeMutableRawPointer?) -> Int
    let setHost: @convention(c) (Pointer?, UnsafePointer<CChar>?) -> Int32
    let verifyParameters: @convention(c) (Pointer?) -> Pointer?
    let setIPAddress: @convention(c) (Pointer?, UnsafePointer<CChar>?) -> Int32
    let verifyResult: @convention(c) (Pointer?) -> Int
    let isInitFinished: @convention(c) (Pointer?) -> Int32
    let writeBIO: @convention(c) (Pointer?) -> Pointer?
    let bytesWritten: @convention(c) (Pointer?) -> UInt64
    let verifyErrorString: @convention(c) (Int) -> UnsafePointer<CChar>?
    let peekLastError: @convention(c) () -> UInt
    let errorString: @convention(c) (UInt, UnsafeMutablePointer<CChar>?, Int) -> Void
    let clearErrors: @convention(c) () -> Void

    /// Where the library was found, for logs and errors.
    let origin: String

    /// The library, or why TLS is unavailable; resolved once, on first use.
    static let shared: Result<TLSLibrary, RedisError> = load()

    private static func load() -> Result<TLSLibrary, RedisError> {
        guard TLSSupport.hiredisCanDoTLS else { return .failure(TLSSupport.noTLSInHiredis) }
        var tried: [String] = []
        for name in candidateNames() {
            // The process first (an application may link libhiredis_ssl), then by file name.
            guard let handle = name.isEmpty ? dlopen(nil, RTLD_NOW) : dlopen(name, RTLD_NOW | RTLD_LOCAL) else {
                tried.append(name)
                continue
            }
            guard dlsym(handle, "redisInitiateSSL") != nil else {
                if !name.isEmpty { dlclose(handle) }
                tried.append(name.isEmpty ? "the process" : name)
                continue
            }
            do {
                return .success(try TLSLibrary(handle: handle, origin: name.isEmpty ? "the process" : name))
            } catch {
                return .failure(error)
            }
        }
        return .failure(RedisError(.tlsUnavailable, """
            TLS is not available: this build links hiredis \(TLSSupport.hiredisVersion), whose TLS library \
            (libhiredis_ssl) was not found (tried \(tried.joined(separator: ", "))). Install it (Debian and Ubuntu: \
            the libhiredis package that matches libhiredis-dev ships libhiredis_ssl; macOS: `brew install hiredis`), \
            or link it into the application. Nothing was sent.
            """))
    }

    /// `""` for the process itself, then `libhiredis_ssl` by the names distributions give it.
    private static func candidateNames() -> [String] {
        let version = TLSSupport.hiredisVersion
        let major = Int(HIREDIS_MAJOR), minor = Int(HIREDIS_MINOR)
        #if canImport(Darwin)
        return ["", "libhiredis_ssl.\(version).dylib", "libhiredis_ssl.\(major).\(minor).dylib", "libhiredis_ssl.dylib",
                "/opt/homebrew/lib/libhiredis_ssl.dylib", "/usr/local/lib/libhiredis_ssl.dylib"]
        #else
        // hiredis 1.1 and 1.2 keep the soname 1.1.0.
        return ["", "libhiredis_ssl.so.\(version)", "libhiredis_ssl.so.1.1.0", "libhiredis_ssl.so.\(major).\(minor)",
                "libhiredis_ssl.so.\(major)", "libhiredis_ssl.so"]
        #endif
    }

    private init(handle: UnsafeMutableRawPointer, origin: String) throws(RedisError) {
        var missing: [String] = []
        func resolve<F>(_ name: String, as type: F.Type) -> F {
            guard let symbol = dlsym(handle, name) else {
                missing.append(name)
                return unsafeBitCast(Self.missingSymbol(), to: type)
            }
            return unsafeBitCast(symbol, to: type)
        }
        initiate = resolve("redisInitiateSSL", as: type(of: initiate))
        clientMethod = resolve("TLS_client_method", as: type(of: clientMethod))
        contextNew = resolve("SSL_CTX_new", as: type(of: contextNew))
        contextFree = resolve("SSL_CTX_free", as: type(of: contextFree))
        setVerify = resolve("SSL_CTX_set_verify", as: type(of: setVerify))
        loadVerifyLocations = resolve("SSL_CTX_load_verify_locations", as: type(of: loadVerifyLocations))
        setDefaultVerifyPaths = resolve("SSL_CTX_set_default_verify_paths", as: type(of: setDefaultVerifyPaths))
        useCertificateChainFile = resolve("SSL_CTX_use_certificate_chain_file", as: type(of: useCertificateChainFile))
        usePrivateKeyFile = resolve("SSL_CTX_use_PrivateKey_file", as: type(of: usePrivateKeyFile))
        checkPrivateKey = resolve("SSL_CTX_check_private_key", as: type(of: checkPrivateKey))
        setPasswordUserData = resolve("SSL_CTX_set_default_passwd_cb_userdata", as: type(of: setPasswordUserData))
        sslNew = resolve("SSL_new", as: type(of: sslNew))
        sslFree = resolve("SSL_free", as: type(of: sslFree))
        sslControl = resolve("SSL_ctrl", as: type(of: sslControl))
        setHost = resolve("SSL_set1_host", as: type(of: setHost))
        verifyParameters = resolve("SSL_get0_param", as: type(of: verifyParameters))
        setIPAddress = resolve("X509_VERIFY_PARAM_set1_ip_asc", as: type(of: setIPAddress))
        verifyResult = resolve("SSL_get_verify_result", as: type(of: verifyResult))
        isInitFinished = resolve("SSL_is_init_finished", as: type(of: isInitFinished))
        writeBIO = resolve("SSL_get_wbio", as: type(of: writeBIO))
        bytesWritten = resolve("BIO_number_written", as: type(of: bytesWritten))
        verifyErrorString = resolve("X509_verify_cert_error_string", as: type(of: verifyErrorString))
        peekLastError = resolve("ERR_peek_last_error", as: type(of: peekLastError))
        errorString = resolve("ERR_error_string_n", as: type(of: errorString))
        clearErrors = resolve("ERR_clear_error", as: type(of: clearErrors))
        self.origin = origin
        guard missing.isEmpty else {
            throw RedisError(.tlsUnavailable, """
                TLS is not available: \(origin) lacks \(missing.joined(separator: ", ")) (OpenSSL 1.1 or later is needed). \
                Nothing was sent.
                """)
        }
        // hiredis ≥ 1.1 asks for this once per process (a no-op with OpenSSL ≥ 1.1).
        if let initialise = dlsym(handle, "redisInitOpenSSL") {
            _ = unsafeBitCast(initialise, to: (@convention(c) () -> Int32).self)()
        }
    }

    /// Stands in for a symbol that was not found; never called (`init` throws then).
    private static func missingSymbol() -> UnsafeMutableRawPointer {
        let function: @convention(c) () -> Void = { fatalError("a missing TLS function was called") }
        return unsafeBitCast(function, to: UnsafeMutableRawPointer.self)
    }

    // MARK: Making a connection's SSL object

    /// An `SSL` object configured from `configuration` for a server reached as `host`
    /// (`nil` for a unix socket): trust, client certificate, SNI and the name to verify.
    func makeSSL(_ configuration: RedisTLSConfiguration, host: String?) throws(RedisError) -> Pointer {
        clearErrors()
        guard let context = contextNew(clientMethod()) else {
            throw RedisError(.tlsUnavailable, "OpenSSL could not make a TLS context: \(lastError() ?? "unknown error")")
        }
        defer { contextFree(context) }  // the SSL object keeps its own reference
        // SSL_VERIFY_PEER = 1, SSL_VERIFY_NONE = 0.
        setVerify(context, configuration.verifyPeer ? 1 : 0, nil)
        if configuration.caCertificateFile != nil || configuration.caCertificateDirectory != nil {
            guard loadVerifyLocations(context, configuration.caCertificateFile, configuration.caCertificateDirectory) == 1 else {
                throw fileError("the certificate authorities", configuration.caCertificateFile ?? configuration.caCertificateDirectory!)
            }
        } else if setDefaultVerifyPaths(context) != 1 {
            throw fileError("the system's certificate authorities", "the default trust store")
        }
        if let certificate = configuration.certificateFile, let key = configuration.privateKeyFile {
            guard useCertificateChainFile(context, certificate) == 1 else {
                throw fileError("the client certificate", certificate)
            }
            // With no callback set, OpenSSL's default one reads the passphrase from the
            // user data: a copy that lives while the key is read, then is wiped.
            let loaded: Int32
            if let passphrase = configuration.privateKeyPassphrase {
                var bytes = Array(passphrase.utf8CString)
                loaded = bytes.withUnsafeMutableBytes { buffer -> Int32 in
                    setPasswordUserData(context, buffer.baseAddress)
                    defer {
                        setPasswordUserData(context, nil)
                        memset(buffer.baseAddress!, 0, buffer.count)
                    }
                    return usePrivateKeyFile(context, key, 1)  // SSL_FILETYPE_PEM
                }
            } else {
                // No passphrase given: an encrypted key must fail, not prompt on a terminal.
                var empty: [CChar] = [0]
                loaded = empty.withUnsafeMutableBytes { buffer -> Int32 in
                    setPasswordUserData(context, buffer.baseAddress)
                    defer { setPasswordUserData(context, nil) }
                    return usePrivateKeyFile(context, key, 1)
                }
            }
            guard loaded == 1, checkPrivateKey(context) == 1 else {
                throw fileError("the client private key (or its passphrase)", key)
            }
        }
        guard let ssl = sslNew(context) else {
            throw RedisError(.tlsUnavailable, "OpenSSL could not make a TLS connection object: \(lastError() ?? "unknown error")")
        }
        let name = configuration.serverName ?? host
        if let name {
            let isAddress = Self.isIPAddress(name)
            if !isAddress {
                // SNI (SSL_CTRL_SET_TLSEXT_HOSTNAME = 55, TLSEXT_NAMETYPE_host_name = 0);
                // never for an address (RFC 6066).
                _ = name.withCString { sslControl(ssl, 55, 0, UnsafeMutableRawPointer(mutating: $0)) }
            }
            if configuration.verifyPeer {
                let set = isAddress ? setIPAddress(verifyParameters(ssl), name) : setHost(ssl, name)
                guard set == 1 else {
                    sslFree(ssl)
                    throw RedisError.invalidArgument("the TLS server name \"\(name)\" cannot be verified: \(lastError() ?? "refused by OpenSSL")")
                }
            }
        }
        return ssl
    }

    /// Hands `ssl` to hiredis for `context` (right after the connect started). hiredis owns
    /// it from then on; on failure it is freed here.
    func initiate(_ ssl: Pointer, on context: UnsafeMutablePointer<redisContext>, verifying: Bool, endpoint: String) -> RedisError? {
        clearErrors()
        guard initiate(context, ssl) == REDIS_OK else {
            // On loopback the server can answer before hiredis's first `SSL_connect` returns.
            let message = context.pointee.err != 0 ? Self.errorText(of: context) : lastError() ?? "unknown error"
            let error = failure(of: ssl, verifying: verifying, endpoint: endpoint, hiredisMessage: message)
                ?? RedisError(.connectionFailed, "\(endpoint): \(message)")
            sslFree(ssl)
            return error
        }
        return nil
    }

    // MARK: Explaining a failure

    /// Why a TLS connection failed, when TLS is the reason: a refused certificate, a failed
    /// or refused handshake (a plaintext port, a missing client certificate). `nil` when
    /// the connection failed for another reason. Called on the thread that saw the failure
    /// (OpenSSL's error queue is per thread), before hiredis frees `ssl`.
    ///
    /// `answered`: a reply arrived on this connection. A TLS 1.3 server checks the client's
    /// certificate after the client's side of the handshake has finished, and then drops the
    /// connection, often with a reset that overtakes its alert: a connection dropped before
    /// its first reply is reported as a refused handshake, naming that likely cause.
    ///
    /// A connection on which no handshake byte was written never reached a TLS server (the
    /// TCP connect was refused or failed): not TLS's to explain, whenever it is reported.
    func failure(of ssl: Pointer, verifying: Bool, answered: Bool = false, endpoint: String, hiredisMessage: String) -> RedisError? {
        guard hasSentBytes(ssl) else { return nil }
        let finished = isInitFinished(ssl) == 1
        let verification = verifyResult(ssl)
        if verifying, !finished, verification != 0 {  // X509_V_OK
            let reason = verifyErrorString(verification).map { String(cString: $0) } ?? "error \(verification)"
            return RedisError(.tlsVerificationFailed, "the TLS certificate of \(endpoint) was refused: \(reason)")
        }
        if let reason = lastError() {
            if !finished || reason.contains("alert") {
                var hint = ""
                if reason.contains("wrong version number") || reason.contains("packet length too long")
                    || reason.contains("record layer failure") {
                    hint = " (is it a plaintext port? TLS needs the server's tls-port)"
                } else if reason.contains("certificate required") || reason.contains("handshake failure") {
                    hint = " (does the server require a client certificate? set certificateFile and privateKeyFile)"
                }
                return RedisError(.tlsHandshakeFailed, "\(endpoint) ended the TLS handshake: \(reason)\(hint)")
            }
            return RedisError(.connectionClosed, "\(hiredisMessage) (TLS: \(reason))")
        }
        if !finished {
            return RedisError(.tlsHandshakeFailed, """
                \(endpoint) closed the connection during the TLS handshake (\(hiredisMessage)): \
                does the server require a client certificate (tls-auth-clients)? set certificateFile and privateKeyFile
                """)
        }
        if !answered {
            return RedisError(.tlsHandshakeFailed, """
                \(endpoint) closed the connection right after the TLS handshake, before any reply (\(hiredisMessage)): \
                a server that requires client certificates (tls-auth-clients) does so when the client gives none, \
                or one it does not trust
                """)
        }
        return nil
    }

    /// Whether `ssl` has written handshake bytes to its socket: the TCP connection was up
    /// and the server heard TLS from it.
    func hasSentBytes(_ ssl: Pointer) -> Bool {
        writeBIO(ssl).map { bytesWritten($0) > 0 } ?? false
    }

    /// Whether the handshake of `ssl` has completed.
    func handshakeFinished(_ ssl: Pointer) -> Bool {
        isInitFinished(ssl) == 1
    }

    /// The reason of the newest OpenSSL error of this thread, if any.
    private func lastError() -> String? {
        let code = peekLastError()
        guard code != 0 else { return nil }
        var buffer = [CChar](repeating: 0, count: 256)
        errorString(code, &buffer, buffer.count)
        let text = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        // "error:0A000086:SSL routines::certificate verify failed": keep what follows the codes.
        if let range = text.range(of: "::") { return String(text[range.upperBound...]) }
        return text.split(separator: ":", maxSplits: 4).last.map(String.init) ?? text
    }

    /// `c->errstr`, a fixed-size C array.
    private static func errorText(of context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: &context.pointee.errstr) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
    }

    private func fileError(_ what: String, _ path: String) -> RedisError {
        RedisError.invalidArgument("could not load \(what) from \(path): \(lastError() ?? "OpenSSL refused it")")
    }

    static func isIPAddress(_ name: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, name, &v4) == 1 || inet_pton(AF_INET6, name, &v6) == 1
    }
}
