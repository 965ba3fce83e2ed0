// What the documentation's samples call without showing it: the application's own code.
import Foundation
import Hiredis
import LockKit
import QueueKit

func reloadState() {}
func chargeInvoice(_ number: Int, fencingToken: Int64) async throws {}
func sendEmail(_ text: String) async throws {}
func send(_ text: String) async throws {}
func cancelRunning(_ task: [UInt8]) {}
func recompute() async throws {}
func recompute(ledger: Int, fencingToken: Int64) async throws -> Int { 0 }
func printReport() async throws {}

struct Report: Codable, Sendable { var rows: Int }
func buildReport<R>() async throws -> R { fatalError("documentation sample") }
func buildReport(month: String) async throws -> Report { Report(rows: 0) }

struct Thumbnail: Codable, Sendable { var url: String; var size: Int }
func render(_ request: Thumbnail) async throws -> String { "" }
func post(_ value: String, to target: String) async -> Bool { true }
func post(_ value: [UInt8], to target: String) async -> Bool { true }

struct Page: Sendable {}
struct PageStore: Sendable {
    func save(_ page: Page, fencingToken: Int64) async throws {}
}
func countRows() async throws -> Int { 0 }
