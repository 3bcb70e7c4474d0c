//! Normalized updates an engine adapter produces and the brain stores: what happened to a
//! task, a worker or a queue, engine-neutral. Applying an update twice changes nothing, and an
//! older update never overwrites a newer state (see [`TaskState::rank`]).

pub mod plausible;
pub mod storable;

use serde::de::{self, Deserializer, MapAccess, Visitor};
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
    /// The attempt (run) this event belongs to: 0 for the first, then 1, 2… (Celery's
    /// `retries`, which it sends on `task-received` only; the agent stamps the attempt's later
    /// events with it). A later attempt's state wins over an earlier attempt's whatever their
    /// times; absent, the event counts as of the task's current attempt.
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
    /// Fields cut to their size cap before this update was sent (see [`storable`]); the full
    /// values stay on the host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub truncated: Vec<String>,
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

/// One normalized update. On the wire an object with its variant in `type` (serde's
/// internally tagged form); read by [`Update`]'s own `Deserialize`, which is faster for it.
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// The fields of [`Update::QueueDepth`], for reading it.
#[derive(Deserialize)]
struct QueueDepthFields {
    queue: String,
    depth: u64,
    at_ms: i64,
}

impl Update {
    /// The update of variant `tag` from the object's other fields.
    fn from_fields<'de, D: Deserializer<'de>>(tag: &str, fields: D) -> Result<Update, D::Error> {
        Ok(match tag {
            "task" => Update::Task(Box::new(TaskUpdate::deserialize(fields)?)),
            "worker" => Update::Worker(WorkerUpdate::deserialize(fields)?),
            "queue_depth" => {
                let QueueDepthFields {
                    queue,
                    depth,
                    at_ms,
                } = QueueDepthFields::deserialize(fields)?;
                Update::QueueDepth {
                    queue,
                    depth,
                    at_ms,
                }
            }
            other => {
                return Err(de::Error::unknown_variant(
                    other,
                    &["task", "worker", "queue_depth"],
                ));
            }
        })
    }
}

/// Serde's derived reader for internally tagged enums buffers every object into a generic tree
/// before choosing the variant; the brain reads 50,000 updates a second, so this one reads the
/// variant's fields straight from the input when `type` comes first, as serde writes it, and
/// buffers only when it does not.
impl<'de> Deserialize<'de> for Update {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Update, D::Error> {
        deserializer.deserialize_map(UpdateVisitor)
    }
}

struct UpdateVisitor;

impl<'de> Visitor<'de> for UpdateVisitor {
    type Value = Update;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an update object with a `type`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Update, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("type"));
        };
        if first == "type" {
            let tag: String = map.next_value()?;
            return Update::from_fields(&tag, de::value::MapAccessDeserializer::new(map));
        }
        let mut fields = serde_json::Map::new();
        fields.insert(first, map.next_value()?);
        while let Some((key, value)) = map.next_entry::<String, serde_json::Value>()? {
            fields.insert(key, value);
        }
        let tag = match fields.remove("type") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("`type` is not a string")),
            None => return Err(de::Error::missing_field("type")),
        };
        Update::from_fields(&tag, serde_json::Value::Object(fields)).map_err(de::Error::custom)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Update> {
        vec![
            Update::Task(Box::new(TaskUpdate {
                engine: "celery".into(),
                task_id: "t-1".into(),
                state: Some(TaskState::Succeeded),
                at_ms: 5,
                kwargs: Some(serde_json::json!({"token": "<redacted>"})),
                runtime_ms: Some(12),
                ..TaskUpdate::default()
            })),
            Update::Worker(WorkerUpdate {
                name: "celery@h".into(),
                online: true,
                at_ms: 6,
                queues: Some(vec!["celery".into()]),
                ..WorkerUpdate::default()
            }),
            Update::QueueDepth {
                queue: "celery".into(),
                depth: 9,
                at_ms: 7,
            },
        ]
    }

    #[test]
    fn updates_read_back_as_written() {
        for update in samples() {
            let text = serde_json::to_string(&update).unwrap();
            assert!(text.starts_with(r#"{"type":"#), "{text}");
            assert_eq!(serde_json::from_str::<Update>(&text).unwrap(), update);
        }
    }

    #[test]
    fn the_type_may_come_anywhere_and_bad_types_are_errors() {
        let late = r#"{"queue":"q","depth":1,"at_ms":2,"type":"queue_depth"}"#;
        assert_eq!(
            serde_json::from_str::<Update>(late).unwrap(),
            Update::QueueDepth {
                queue: "q".into(),
                depth: 1,
                at_ms: 2
            }
        );
        let late_task =
            r#"{"engine":"celery","task_id":"t","state":"started","at_ms":3,"type":"task"}"#;
        assert!(
            matches!(serde_json::from_str::<Update>(late_task).unwrap(), Update::Task(t) if t.task_id == "t")
        );
        for bad in [
            r#"{"type":"exec","cmd":"rm"}"#,
            r#"{"queue":"q","depth":1,"at_ms":2}"#,
            r#"{"type":7}"#,
            r#"{"type":"queue_depth","queue":"q"}"#,
            r#"{}"#,
            r#"[]"#,
        ] {
            assert!(serde_json::from_str::<Update>(bad).is_err(), "{bad}");
        }
    }
}
