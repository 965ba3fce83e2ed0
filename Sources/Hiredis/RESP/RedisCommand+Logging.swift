// How a command is shown in logs, descriptions and error messages: its words, with every
// secret replaced by `(redacted)`, long words cut, and bytes that are not printable ASCII
// escaped. One function does it, `loggableDescription`; nothing else prints a command's
// arguments.

extension RedisCommand: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The command's words for a log line, secrets redacted: every argument of `AUTH`; the
    /// username and password after `AUTH` in `HELLO`; the password after `AUTH` (and the
    /// username and password after `AUTH2`) in `MIGRATE`; the value of a parameter whose name
    /// holds `pass` or `auth` in `CONFIG SET`, `SENTINEL SET` and `SENTINEL CONFIG SET`
    /// (`requirepass`, `masterauth`, `auth-pass`, …); the `>password`, `<password`,
    /// `#hash` and `!hash` rules of `ACL SETUSER`.
    ///
    /// Each word is cut after 64 bytes (`…(+N bytes)`), and after 32 words the rest is
    /// counted, not shown. A word that is not plain printable ASCII is quoted, with `\"`,
    /// `\\`, `\n`, `\r`, `\t` and `\xHH` escapes.
    ///
    /// It walks every word: compute it only when it will be logged (at `trace`).
    public var loggableDescription: String {
        var redaction = Redaction()
        var text = ""
        let shownWords = 32
        forEachWord { index, bytes in
            guard index < shownWords else { return false }
            if index > 0 { text += " " }
            if let secret = redaction.isSecret(index, bytes) {
                text += secret
            } else {
                Self.appendLoggable(bytes, to: &text)
            }
            return true
        }
        if count > shownWords { text += " …(+\(count - shownWords) words)" }
        return text
    }

    public var description: String { loggableDescription }
    public var debugDescription: String { "RedisCommand(\(loggableDescription))" }
    /// What `dump` and test failures show: the redacted words, never the encoded bytes.
    public var customMirror: Mirror { Mirror(self, children: ["words": loggableDescription], displayStyle: .struct) }

    /// The longest part of one word that is shown.
    static let loggableWordLength = 64

    /// Appends `bytes` as one word: bare when it is non-empty printable ASCII without
    /// quotes or backslashes, else quoted with escapes; cut after `loggableWordLength` bytes.
    static func appendLoggable(_ bytes: UnsafeRawBufferPointer, to text: inout String) {
        let shown = bytes.prefix(loggableWordLength)
        let bare = !shown.isEmpty && shown.allSatisfy { $0 > 0x20 && $0 < 0x7F && $0 != 0x22 && $0 != 0x5C }
        if bare {
            text += String(decoding: shown, as: UTF8.self)
        } else {
            text += "\""
            for byte in shown {
                switch byte {
                case 0x22: text += "\\\""
                case 0x5C: text += "\\\\"
                case 0x0A: text += "\\n"
                case 0x0D: text += "\\r"
                case 0x09: text += "\\t"
                case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
                default:
                    let hex = Array("0123456789abcdef".unicodeScalars)
                    text += "\\x"
                    text.unicodeScalars.append(hex[Int(byte >> 4)])
                    text.unicodeScalars.append(hex[Int(byte & 0x0F)])
                }
            }
            text += "\""
        }
        if bytes.count > shown.count { text += "…(+\(bytes.count - shown.count) bytes)" }
    }

    /// Decides, word by word in order, which words are secrets. Each decision depends only
    /// on the words before, so one walk suffices.
    private struct Redaction {
        enum Kind { case plain, auth, hello, migrate, configSet, sentinel, sentinelSet, sentinelConfig, acl, aclSetUser }
        var kind = Kind.plain
        /// Words still to redact after a keyword (`AUTH user pass`).
        var pending = 0
        /// `CONFIG SET name value`: the previous word was a secret parameter's name.
        var secretValueNext = false

        mutating func isSecret(_ index: Int, _ word: UnsafeRawBufferPointer) -> String? {
            if index == 0 {
                kind = Self.equals(word, "AUTH") ? .auth
                    : Self.equals(word, "HELLO") ? .hello
                    : Self.equals(word, "MIGRATE") ? .migrate
                    : Self.equals(word, "CONFIG") ? .configSet   // confirmed by the next word
                    : Self.equals(word, "SENTINEL") ? .sentinel
                    : Self.equals(word, "ACL") ? .acl
                    : .plain
                return nil
            }
            if pending > 0 {
                pending -= 1
                return redactedMark
            }
            switch kind {
            case .plain:
                return nil
            case .auth:
                return redactedMark
            case .hello:
                if Self.equals(word, "AUTH") { pending = 2 }
                return nil
            case .migrate:
                // MIGRATE host port key db timeout [COPY] [REPLACE] [AUTH pw | AUTH2 user pw] [key list]
                // Every option word counts, the key list's too: a key that reads AUTH hides
                // the key after it, which errs on the side of secrecy.
                guard index >= 6 else { return nil }
                if Self.equals(word, "AUTH") { pending = 1 } else if Self.equals(word, "AUTH2") { pending = 2 }
                return nil
            case .configSet:
                if index == 1 {
                    if !Self.equals(word, "SET") { kind = .plain }
                    return nil
                }
                return pairedValue(index, word, firstName: 2)
            case .sentinel:
                if index == 1 {
                    kind = Self.equals(word, "SET") ? .sentinelSet : Self.equals(word, "CONFIG") ? .sentinelConfig : .plain
                }
                return nil
            case .sentinelSet:
                // SENTINEL SET master name value [name value …]
                return index >= 3 ? pairedValue(index, word, firstName: 3) : nil
            case .sentinelConfig:
                // SENTINEL CONFIG SET name value [name value …]
                if index == 2, !Self.equals(word, "SET") { kind = .plain }
                return index >= 3 ? pairedValue(index, word, firstName: 3) : nil
            case .acl:
                if index == 1 { kind = Self.equals(word, "SETUSER") ? .aclSetUser : .plain }
                return nil
            case .aclSetUser:
                // ACL SETUSER name rule…: >password, <password, #hash, !hash.
                guard index >= 3, let first = word.first, [0x3E, 0x3C, 0x23, 0x21].contains(first) else { return nil }
                return String(UnicodeScalar(first)) + redactedMark
            }
        }

        /// `name value` pairs from `firstName` on: a value is secret when its name holds
        /// `pass` or `auth`.
        private mutating func pairedValue(_ index: Int, _ word: UnsafeRawBufferPointer, firstName: Int) -> String? {
            if (index - firstName) % 2 == 0 {
                secretValueNext = Self.contains(word, "PASS") || Self.contains(word, "AUTH")
                return nil
            }
            return secretValueNext ? redactedMark : nil
        }

        /// ASCII case-insensitive equality with an upper-case `name`.
        static func equals(_ word: UnsafeRawBufferPointer, _ name: StaticString) -> Bool {
            guard word.count == name.utf8CodeUnitCount else { return false }
            return contains(word, name)
        }

        /// Whether `word` holds the upper-case ASCII `part`, case-insensitively.
        static func contains(_ word: UnsafeRawBufferPointer, _ part: StaticString) -> Bool {
            part.withUTF8Buffer { part in
                guard word.count >= part.count else { return false }
                for start in 0...(word.count - part.count) {
                    var matched = true
                    for offset in 0..<part.count {
                        let byte = word[start + offset]
                        guard (0x61...0x7A).contains(byte) ? byte - 0x20 == part[offset] : byte == part[offset] else {
                            matched = false
                            break
                        }
                    }
                    if matched { return true }
                }
                return false
            }
        }
    }
}
