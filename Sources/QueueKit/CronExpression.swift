import Foundation
import Hiredis

/// A 5-field cron expression, evaluated in UTC: `minute hour day-of-month month day-of-week`.
///
/// Each field is `*`, a number, a range `a-b`, a step `*/s`, `a-b/s` or `a/s` (from `a` to
/// the field's end), or a comma-separated list of those. Ranges: minute 0–59, hour 0–23,
/// day of month 1–31, month 1–12, day of week 0–7 (0 and 7 are Sunday). Numbers only (no
/// `JAN` or `MON`), no `?`, `L`, `W`, `#` or seconds. As in Vixie cron, when both day of
/// month and day of week are restricted (neither is `*`), a day matches if either matches.
///
/// ```swift
/// let everyFiveMinutes = try CronExpression("*/5 * * * *")
/// let weekdayMornings = try CronExpression("30 8 * * 1-5")
/// ```
public struct CronExpression: Sendable, Hashable, CustomStringConvertible {
    /// The expression as given.
    public let source: String
    private let minutes: UInt64
    private let hours: UInt64
    private let days: UInt64
    private let months: UInt64
    private let weekdays: UInt64
    private let daysRestricted: Bool
    private let weekdaysRestricted: Bool

    /// Parses a 5-field expression (`minute hour day-of-month month day-of-week`).
    ///
    /// - Throws: `RedisError` `invalidArgument` naming the field that is wrong.
    public init(_ source: String) throws {
        let fields = source.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw RedisError.invalidArgument("a cron expression has 5 fields (minute hour day month weekday), \"\(source)\" has \(fields.count)")
        }
        self.source = source
        minutes = try Self.parse(fields[0], "minute", 0...59)
        hours = try Self.parse(fields[1], "hour", 0...23)
        days = try Self.parse(fields[2], "day of month", 1...31)
        months = try Self.parse(fields[3], "month", 1...12)
        var weekdays = try Self.parse(fields[4], "day of week", 0...7)
        if weekdays & (1 << 7) != 0 { weekdays |= 1 }   // 7 is Sunday too
        self.weekdays = weekdays & 0x7F
        daysRestricted = fields[2] != "*"
        weekdaysRestricted = fields[4] != "*"
    }

    public var description: String { source }

    private static func parse(_ field: String, _ name: String, _ range: ClosedRange<Int>) throws -> UInt64 {
        func bad(_ why: String) -> RedisError { RedisError.invalidArgument("cron \(name) field \"\(field)\": \(why)") }
        var set: UInt64 = 0
        for part in field.split(separator: ",", omittingEmptySubsequences: false) {
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2, let base = pieces.first, !base.isEmpty else { throw bad("malformed") }
            var step = 1
            if pieces.count == 2 {
                guard let value = Int(pieces[1]), value >= 1 else { throw bad("the step must be a number of at least 1") }
                step = value
            }
            var low = range.lowerBound, high = range.upperBound
            if base != "*" {
                let bounds = base.split(separator: "-", omittingEmptySubsequences: false)
                guard bounds.count <= 2, let first = Int(bounds[0]) else { throw bad("\"\(base)\" is not a number or a range") }
                low = first
                if bounds.count == 2 {
                    guard let last = Int(bounds[1]) else { throw bad("\"\(base)\" is not a range") }
                    high = last
                } else if pieces.count == 1 {
                    high = first
                }
            }
            guard range.contains(low), range.contains(high) else { throw bad("outside \(range.lowerBound)-\(range.upperBound)") }
            guard low <= high else { throw bad("the range \(low)-\(high) runs backwards") }
            for value in stride(from: low, through: high, by: step) { set |= 1 << UInt64(value) }
        }
        return set
    }

    private static func has(_ set: UInt64, _ value: Int) -> Bool { set & (1 << UInt64(value)) != 0 }

    /// The first time matching the expression strictly after `date` (UTC, to the minute), or
    /// `nil` when none comes within 5 years (`0 0 30 2 *`: February 30th).
    public func next(after date: Date) -> Date? {
        let minute = Int64((date.timeIntervalSince1970 / 60).rounded(.down)) + 1
        var day = Int(minute.floorDivided(by: 1440))
        var (year, month, dayOfMonth) = Self.civil(fromDays: day)
        var hour = Int(minute.floorModulo(1440) / 60), minuteOfHour = Int(minute.floorModulo(60))
        let lastYear = year + 5
        while year <= lastYear {
            if !Self.has(months, month) {
                month += 1
                if month > 12 { month = 1; year += 1 }
                dayOfMonth = 1; hour = 0; minuteOfHour = 0
                continue
            }
            if dayOfMonth > Self.daysIn(year, month) {
                month += 1
                if month > 12 { month = 1; year += 1 }
                dayOfMonth = 1; hour = 0; minuteOfHour = 0
                continue
            }
            day = Self.days(fromCivil: year, month, dayOfMonth)
            let weekday = Int((Int64(day) + 4).floorModulo(7))   // 1970-01-01 was a Thursday
            let dayMatches = Self.has(days, dayOfMonth), weekdayMatches = Self.has(weekdays, weekday)
            let matches = daysRestricted && weekdaysRestricted ? (dayMatches || weekdayMatches) : (dayMatches && weekdayMatches)
            if !matches {
                dayOfMonth += 1; hour = 0; minuteOfHour = 0
                continue
            }
            if !Self.has(hours, hour) {
                hour += 1; minuteOfHour = 0
                if hour > 23 { dayOfMonth += 1; hour = 0 }
                continue
            }
            if !Self.has(minutes, minuteOfHour) {
                minuteOfHour += 1
                if minuteOfHour > 59 {
                    minuteOfHour = 0; hour += 1
                    if hour > 23 { dayOfMonth += 1; hour = 0 }
                }
                continue
            }
            let total = (Int64(day) * 1440 + Int64(hour) * 60 + Int64(minuteOfHour)) * 60
            return Date(timeIntervalSince1970: Double(total))
        }
        return nil
    }

    private static func daysIn(_ year: Int, _ month: Int) -> Int {
        switch month {
        case 2: return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: return 30
        default: return 31
        }
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    static func days(fromCivil year: Int, _ month: Int, _ day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func civil(fromDays days: Int) -> (Int, Int, Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }
}

extension Int64 {
    fileprivate func floorDivided(by divisor: Int64) -> Int64 {
        let quotient = self / divisor
        return (self % divisor != 0 && (self < 0) != (divisor < 0)) ? quotient - 1 : quotient
    }

    fileprivate func floorModulo(_ divisor: Int64) -> Int64 {
        let remainder = self % divisor
        return remainder < 0 ? remainder + divisor : remainder
    }
}
