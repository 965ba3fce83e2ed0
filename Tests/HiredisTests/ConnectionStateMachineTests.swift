@testable import Hiredis
import Testing

/// The lifecycle without a socket: one event, one expected action.
@Suite struct ConnectionStateMachineTests {
    let lost = RedisError(.connectionClosed, "gone")
    let refused = RedisError(.connectionFailed, "refused")

    @Test func firstConnectRunsHandshakeThenBecomesReady() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        #expect(machine.start() == .connect)
        #expect(machine.connected() == .sendHandshake)
        #expect(machine.handshakeSucceeded() == .becomeReady(reconnected: false))
        #expect(machine.state == .ready)
    }

    @Test func firstConnectFailureIsReportedAndCloses() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start()
        #expect(machine.connectFailed(refused) == .failFirstConnect(refused))
        #expect(machine.state == .closed)
    }

    @Test func handshakeFailureOnFirstConnectIsReported() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start()
        _ = machine.connected()
        let denied = RedisError(.authenticationFailed, "WRONGPASS")
        #expect(machine.connectionLost(denied) == .failFirstConnect(denied))
    }

    @Test func lossFailsInFlightAndReconnectsWithRisingAttempts() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start(); _ = machine.connected(); _ = machine.handshakeSucceeded()
        #expect(machine.connectionLost(lost) == .failInFlightAndScheduleReconnect(lost, attempt: 1))
        #expect(machine.reconnectTimerFired() == .connect)
        #expect(machine.connectFailed(refused) == .scheduleReconnect(attempt: 2))
        #expect(machine.reconnectTimerFired() == .connect)
        #expect(machine.connected() == .sendHandshake)
        #expect(machine.handshakeSucceeded() == .becomeReady(reconnected: true))
    }

    @Test func givesUpAfterMaximumAttempts() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff(maximumAttempts: 2))
        _ = machine.start(); _ = machine.connected(); _ = machine.handshakeSucceeded()
        _ = machine.connectionLost(lost)
        _ = machine.reconnectTimerFired()
        #expect(machine.connectFailed(refused) == .scheduleReconnect(attempt: 2))
        _ = machine.reconnectTimerFired()
        #expect(machine.connectFailed(refused) == .failAllAndClose(refused))
        #expect(machine.state == .closed)
    }

    @Test func noReconnectPolicyClosesOnLoss() {
        var machine = ConnectionStateMachine(policy: .never)
        _ = machine.start(); _ = machine.connected(); _ = machine.handshakeSucceeded()
        #expect(machine.connectionLost(lost) == .failAllAndClose(lost))
    }

    @Test func gracefulCloseDrainsThenFinishes() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start(); _ = machine.connected(); _ = machine.handshakeSucceeded()
        #expect(machine.closeRequested() == .disconnectGracefully)
        #expect(machine.closeRequested() == .none)
        #expect(machine.disconnected() == .finishClose)
        #expect(machine.state == .closed)
    }

    @Test func closeWhileReconnectingAbortsAtOnce() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start(); _ = machine.connected(); _ = machine.handshakeSucceeded()
        _ = machine.connectionLost(lost)
        #expect(machine.closeRequested() == .abortAndClose)
        #expect(machine.reconnectTimerFired() == .none)
    }

    @Test func lateEventsAfterCloseAreIgnored() {
        var machine = ConnectionStateMachine(policy: .exponentialBackoff())
        _ = machine.start()
        _ = machine.closeRequested()
        #expect(machine.connected() == .none)
        #expect(machine.connectionLost(lost) == .none)
        #expect(machine.handshakeSucceeded() == .none)
    }

    @Test func backoffDoublesUpToTheMaximumWithJitter() {
        let policy = ReconnectPolicy.exponentialBackoff(initialDelay: .milliseconds(100), maximumDelay: .seconds(1), jitter: 0.5)
        #expect(policy.delay(beforeAttempt: 1, random: 0.5) == .milliseconds(100))
        #expect(policy.delay(beforeAttempt: 2, random: 0.5) == .milliseconds(200))
        #expect(policy.delay(beforeAttempt: 4, random: 0.5) == .milliseconds(800))
        #expect(policy.delay(beforeAttempt: 5, random: 0.5) == .seconds(1))
        #expect(policy.delay(beforeAttempt: 60, random: 0.5) == .seconds(1))
        #expect(policy.delay(beforeAttempt: 1, random: 0) == .milliseconds(75))
        #expect(policy.delay(beforeAttempt: 1, random: 1) == .milliseconds(125))
    }
}
