/// First-come first-served turns among this process's callers (the takers of one
/// semaphore): only the oldest caller in a line asks Redis; when it is done, the next one's
/// turn begins at once. Redis decides between processes; this decides within one.
extension CallbackQueue {
    /// Joins `line` and waits until this caller is its oldest; returns the ticket to give to
    /// ``endTurn(_:_:)``, or `nil` when `deadline` passed first (the caller has left the line).
    ///
    /// - Throws: `CancellationError` when the task was cancelled before its turn.
    func waitForTurn(_ line: String, until deadline: ContinuousClock.Instant?) async throws -> UInt64? {
        nextID += 1
        let ticket = nextID
        turnLines[line, default: []].append(ticket)
        if turnLines[line]?.first == ticket { return ticket }
        let timer = deadline.map { deadline in
            Task { [weak self] in
                guard (try? await Task.sleep(until: deadline)) != nil else { return }
                await self?.resumeTurn(ticket)
            }
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                if Task.isCancelled { continuation.resume() } else { turnWaiters[ticket] = continuation }
            }
        } onCancel: {
            Task { await self.resumeTurn(ticket) }
        }
        timer?.cancel()
        if turnLines[line]?.first == ticket { return ticket }
        // Woken before its turn: cancelled, or out of time.
        endTurn(line, ticket)
        try Task.checkCancellation()
        return nil
    }

    /// Leaves `line`; when `ticket` was the oldest, the next caller's turn begins.
    func endTurn(_ line: String, _ ticket: UInt64) {
        guard var tickets = turnLines[line], let index = tickets.firstIndex(of: ticket) else { return }
        tickets.remove(at: index)
        turnLines[line] = tickets.isEmpty ? nil : tickets
        if index == 0, let next = tickets.first { resumeTurn(next) }
    }

    private func resumeTurn(_ ticket: UInt64) {
        turnWaiters.removeValue(forKey: ticket)?.resume()
    }

    /// How many callers are in `line` (the one whose turn it is included).
    func lineLength(_ line: String) -> Int { turnLines[line]?.count ?? 0 }
}
