import Foundation
import Hummingbird
import Metrics
import QueueKit

/// The body of `POST /tasks`, and the task's payload on the queue.
struct TaskRequest: Codable, Sendable {
    let id: String
    /// How long the pretend work takes (default 20 ms).
    var workMilliseconds: Int?
}

struct TaskAccepted: ResponseCodable {
    let id: String
    let queueLength: Int
    let acceptedBy: String
}

extension Example {
    /// `POST /tasks`: puts the task on the shared queue; any instance's worker may run it.
    func enqueue(_ task: TaskRequest) async throws -> TaskAccepted {
        guard !task.id.isEmpty else { throw HTTPError(.badRequest, message: "the task id is empty") }
        let result = try await workQueue.enqueue(Self.taskQueue, try JSONEncoder().encode(task).map { $0 })
        return TaskAccepted(id: task.id, queueLength: result.length, acceptedBy: instance)
    }

    /// The worker's handler. Returning finishes the task; throwing puts it back on the queue.
    func process(_ process: WorkProcess) async throws {
        let task = try JSONDecoder().decode(TaskRequest.self, from: Data(process.task))
        try await redis.send("HINCRBY", "example:started", task.id, 1)
        try await Task.sleep(for: .milliseconds(task.workMilliseconds ?? 20))
        // What `make example` counts: every task must be here exactly once.
        try await redis.send("HINCRBY", "example:processed", task.id, 1)
        try await redis.send("HINCRBY", "example:processed-by", instance, 1)
        Counter(label: "example_tasks_processed_total").increment()
    }
}
