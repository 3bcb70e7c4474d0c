//! Normalized updates an engine adapter produces and the brain stores: what happened to a
//! task, a worker or a queue, engine-neutral. Applying an update twice changes nothing, and an
//! older update never overwrites a newer state (see [`TaskState::rank`]).

use serde::{Deserialize, Serialize};

/// Task states of the Tasks API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// A worker received it.
    Received,
    /// A worker started it.
    Started,
    /// It finished successfully.
    Succeeded,
    /// It raised.
    Failed,
    /// It was revoked.
    Cancelled,
    /// It will be retried (a new attempt follows).
    Retried,
    /// Its worker died while it ran.
    Lost,
}

impl TaskState {
    /// Every state.
    pub const ALL: [TaskState; 7] = [
        TaskState::Received,
        TaskState::Started,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::Retried,
        TaskState::Lost,
    ];

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Received => "received",
            TaskState::Started => "started",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::Retried => "retried",
            TaskState::Lost => "lost",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<TaskState> {
        TaskState::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// Order of progress, for updates with equal event times: a later stage wins, so
    /// `started` never replaces `succeeded` even if both carry the same timestamp.
    pub fn rank(self) -> i32 {
        match self {
            TaskState::Received => 1,
            TaskState::Started => 2,
            TaskState::Retried => 3,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled | TaskState::Lost => 4,
        }
    }

    /// Whether the task is still in flight (may not be deleted).
    pub fn in_flight(self) -> bool {
        matches!(self, TaskState::Received | TaskState::Started)
    }
}

/// What an event says about a task. Fields an event does not carry are `None`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskUpdate {
    /// Engine (`celery`).
    pub engine: String,
    /// The engine's task id.
    pub task_id: String,
    /// The state this event moves the task to.
    pub state: Option<TaskState>,
    /// When the event happened on the worker, ms since the epoch.
    pub at_ms: i64,
    /// Task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Worker name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Priority label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Positional arguments (redacted on the host), JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<serde_json::Value>,
    /// Keyword arguments (redacted on the host), JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<serde_json::Value>,
    /// Result (succeeded), as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// Exception (failed, retried).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// Traceback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// Retries so far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i32>,
    /// ETA, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_ms: Option<i64>,
    /// Runtime, ms (succeeded, failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_ms: Option<i64>,
    /// Parent task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// Root task id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
    /// Why the task's real arguments are unavailable (so it cannot be retried); set by the
    /// agent when neither the event's repr nor the worker could give them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_unavailable: Option<String>,
}

/// What an event says about a worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerUpdate {
    /// Engine-native name, e.g. `celery@host-1`.
    pub name: String,
    /// Whether it is online after this event.
    pub online: bool,
    /// When, ms.
    pub at_ms: i64,
    /// Pool kind (`prefork`, `solo`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    /// Pool size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<i32>,
    /// Queues consumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<Vec<String>>,
    /// Tasks the worker has started since it booted (Celery's heartbeat `processed`): what
    /// lets the agent notice task events it never received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processed: Option<i64>,
}

/// One normalized update.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Update {
    /// About a task (boxed: it is much larger than the other variants).
    Task(Box<TaskUpdate>),
    /// About a worker.
    Worker(WorkerUpdate),
    /// A queue's depth.
    QueueDepth {
        /// Queue name.
        queue: String,
        /// Messages waiting (all priority buckets).
        depth: u64,
        /// When observed, ms.
        at_ms: i64,
    },
}

/// A numbered batch of updates, as spooled by the agent and sent until acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Batch sequence number, from 1, per agent.
    pub seq: u64,
    /// Events this agent dropped since it started counting (spool overflow, lost subscriber
    /// messages): cumulative, so a lost batch cannot hide a drop.
    pub dropped_total: u64,
    /// The updates.
    pub updates: Vec<Update>,
}
