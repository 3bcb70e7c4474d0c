//! The closed set of commands an operator can send to an agent: one file per kind, each a
//! typed payload with its bounds. Unknown kinds and unknown fields are errors, never a dispatch
//! by name; there is no generic "exec" kind.

mod bulk_retry;
mod cancel_task;
mod consumer;
mod ping_workers;
mod pool_resize;
mod purge_queue;
mod rate_limit;
mod restart_worker;
mod retry;
mod retry_task;

use serde::{Deserialize, Serialize};

pub use bulk_retry::{BulkRetry, BulkRetryFilter};
pub use cancel_task::CancelTask;
pub use consumer::ConsumerChange;
pub use ping_workers::{MAX_PING_WORKERS, PingWorkers};
pub use pool_resize::PoolResize;
pub use purge_queue::PurgeQueue;
pub use rate_limit::RateLimit;
pub use restart_worker::RestartWorker;
pub use retry::{BulkRetrySpec, RetrySpec, Skipped};
pub use retry_task::RetryTask;

/// Longest engine-native name accepted (worker, queue, task name, task id): far above what
/// Celery produces, low enough to keep rows small.
pub const MAX_NAME_LEN: usize = 255;

/// A payload field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The JSON field at fault.
    pub field: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl FieldError {
    /// An error on `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> FieldError {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Reads a nested struct only from a JSON object. serde would also read a struct from an
/// array of its fields in order (`"filter": [null, null]`), a form no client means and the
/// API document does not allow; refused, it is a 400 naming the field like any bad type.
pub(crate) fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    use serde::Deserialize;
    use serde::de::{Error, Unexpected};
    let value = serde_json::Value::deserialize(deserializer)?;
    let unexpected = match &value {
        serde_json::Value::Object(_) => return T::deserialize(value).map_err(D::Error::custom),
        serde_json::Value::Array(_) => Unexpected::Seq,
        serde_json::Value::Null => Unexpected::Unit,
        serde_json::Value::Bool(b) => Unexpected::Bool(*b),
        serde_json::Value::Number(_) => Unexpected::Other("a number"),
        serde_json::Value::String(s) => Unexpected::Str(s),
    };
    Err(D::Error::invalid_type(unexpected, &"a JSON object"))
}

/// Checks an engine-native name: non-empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
pub fn check_name(field: &str, value: &str) -> Result<(), FieldError> {
    if value.trim().is_empty() {
        Err(FieldError::new(field, "must not be empty"))
    } else if value.len() > MAX_NAME_LEN {
        Err(FieldError::new(
            field,
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ))
    } else if value.chars().any(char::is_control) {
        Err(FieldError::new(
            field,
            "must not contain control characters",
        ))
    } else {
        Ok(())
    }
}

/// Checks an engine id such as `celery`: `^[a-z][a-z0-9_-]{0,31}$`.
pub fn check_engine(value: &str) -> Result<(), FieldError> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && value.len() <= 32;
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            "engine",
            "must match ^[a-z][a-z0-9_-]{0,31}$ (e.g. celery)",
        ))
    }
}

/// The kinds, spelled as in the API paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CommandKind {
    /// Re-run one task, optionally with new kwargs.
    RetryTask,
    /// Revoke one task.
    CancelTask,
    /// Re-run up to `max` tasks matching a filter.
    BulkRetry,
    /// Drop every message in a queue.
    PurgeQueue,
    /// Gracefully restart a worker.
    RestartWorker,
    /// Grow or shrink a worker's pool.
    PoolResize,
    /// Make a worker consume a queue.
    AddConsumer,
    /// Make a worker stop consuming a queue.
    CancelConsumer,
    /// Set or clear a task's rate limit.
    RateLimit,
    /// Ask workers whether they are alive (health checks).
    PingWorkers,
}

impl CommandKind {
    /// Every kind.
    pub const ALL: [CommandKind; 10] = [
        CommandKind::RetryTask,
        CommandKind::CancelTask,
        CommandKind::BulkRetry,
        CommandKind::PurgeQueue,
        CommandKind::RestartWorker,
        CommandKind::PoolResize,
        CommandKind::AddConsumer,
        CommandKind::CancelConsumer,
        CommandKind::RateLimit,
        CommandKind::PingWorkers,
    ];

    /// How long the brain waits for this kind's result before marking it `timed_out` (never
    /// longer than the command's signed expiry). Restarting a worker waits for its tasks;
    /// a bulk retry republishes up to 10,000 messages.
    pub fn result_deadline_secs(self) -> u64 {
        match self {
            CommandKind::RestartWorker => 120,
            CommandKind::BulkRetry => 300,
            _ => 60,
        }
    }

    /// The wire and path spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::RetryTask => "retry-task",
            CommandKind::CancelTask => "cancel-task",
            CommandKind::BulkRetry => "bulk-retry",
            CommandKind::PurgeQueue => "purge-queue",
            CommandKind::RestartWorker => "restart-worker",
            CommandKind::PoolResize => "pool-resize",
            CommandKind::AddConsumer => "add-consumer",
            CommandKind::CancelConsumer => "cancel-consumer",
            CommandKind::RateLimit => "rate-limit",
            CommandKind::PingWorkers => "ping-workers",
        }
    }
}

crate::spelled_enum!(CommandKind, |s| format!("unknown command kind {s:?}"));

/// A command's validated payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "payload", rename_all = "kebab-case")]
pub enum Command {
    /// See [`RetryTask`].
    RetryTask(RetryTask),
    /// See [`CancelTask`].
    CancelTask(CancelTask),
    /// See [`BulkRetry`].
    BulkRetry(BulkRetry),
    /// See [`PurgeQueue`].
    PurgeQueue(PurgeQueue),
    /// See [`RestartWorker`].
    RestartWorker(RestartWorker),
    /// See [`PoolResize`].
    PoolResize(PoolResize),
    /// See [`ConsumerChange`].
    AddConsumer(ConsumerChange),
    /// See [`ConsumerChange`].
    CancelConsumer(ConsumerChange),
    /// See [`RateLimit`].
    RateLimit(RateLimit),
    /// See [`PingWorkers`].
    PingWorkers(PingWorkers),
}

impl Command {
    /// The kind.
    pub fn kind(&self) -> CommandKind {
        match self {
            Command::RetryTask(_) => CommandKind::RetryTask,
            Command::CancelTask(_) => CommandKind::CancelTask,
            Command::BulkRetry(_) => CommandKind::BulkRetry,
            Command::PurgeQueue(_) => CommandKind::PurgeQueue,
            Command::RestartWorker(_) => CommandKind::RestartWorker,
            Command::PoolResize(_) => CommandKind::PoolResize,
            Command::AddConsumer(_) => CommandKind::AddConsumer,
            Command::CancelConsumer(_) => CommandKind::CancelConsumer,
            Command::RateLimit(_) => CommandKind::RateLimit,
            Command::PingWorkers(_) => CommandKind::PingWorkers,
        }
    }

    /// Reads `payload` as the arguments of `kind` (not validated): what an auditor checks a
    /// signed `command.issued` row's kind and payload agree with. Reads the payload in place,
    /// without building the tagged form.
    pub fn from_parts(
        kind: CommandKind,
        payload: &serde_json::Value,
    ) -> Result<Command, serde_json::Error> {
        Ok(match kind {
            CommandKind::RetryTask => Command::RetryTask(RetryTask::deserialize(payload)?),
            CommandKind::CancelTask => Command::CancelTask(CancelTask::deserialize(payload)?),
            CommandKind::BulkRetry => Command::BulkRetry(BulkRetry::deserialize(payload)?),
            CommandKind::PurgeQueue => Command::PurgeQueue(PurgeQueue::deserialize(payload)?),
            CommandKind::RestartWorker => {
                Command::RestartWorker(RestartWorker::deserialize(payload)?)
            }
            CommandKind::PoolResize => Command::PoolResize(PoolResize::deserialize(payload)?),
            CommandKind::AddConsumer => Command::AddConsumer(ConsumerChange::deserialize(payload)?),
            CommandKind::CancelConsumer => {
                Command::CancelConsumer(ConsumerChange::deserialize(payload)?)
            }
            CommandKind::RateLimit => Command::RateLimit(RateLimit::deserialize(payload)?),
            CommandKind::PingWorkers => Command::PingWorkers(PingWorkers::deserialize(payload)?),
        })
    }

    /// Checks every bound of the payload.
    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            Command::RetryTask(c) => c.validate(),
            Command::CancelTask(c) => c.validate(),
            Command::BulkRetry(c) => c.validate(),
            Command::PurgeQueue(c) => c.validate(),
            Command::RestartWorker(c) => c.validate(),
            Command::PoolResize(c) => c.validate(),
            Command::AddConsumer(c) | Command::CancelConsumer(c) => c.validate(),
            Command::RateLimit(c) => c.validate(),
            Command::PingWorkers(c) => c.validate(),
        }
    }

    /// The payload alone, as JSON.
    pub fn payload(&self) -> serde_json::Value {
        let tagged = serde_json::to_value(self).expect("commands serialize");
        tagged["payload"].clone()
    }

    /// Commands that destroy data or change every worker at once, flagged critical in the log.
    pub fn is_critical(&self) -> bool {
        match self {
            Command::PurgeQueue(p) => p.force,
            Command::RateLimit(r) => r.is_global(),
            _ => false,
        }
    }
}

/// What a signed `command.issued` row says about the command, under `payload.command`: exactly
/// what an agent checks before running it. Times and depths are decimal strings (RFC 8785
/// statements carry no integers that might exceed 2^53).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuedCommand {
    /// Command id.
    pub id: String,
    /// The project.
    pub project_id: String,
    /// The agent that must run it; every other agent refuses it.
    pub audience: String,
    /// The kind.
    pub kind: CommandKind,
    /// The validated payload of the kind.
    pub payload: serde_json::Value,
    /// Mint time, ms since the epoch.
    pub issued_at_ms: String,
    /// After this the agent refuses it, ms since the epoch.
    pub expires_at_ms: String,
    /// A forced purge or a global throttle.
    pub critical: bool,
    /// A rate limit for every worker.
    pub global_throttle: bool,
    /// The queue depth a confirmed purge is bound to.
    pub bound_depth: Option<String>,
    /// The issuer's idempotency key.
    pub idempotency_key: Option<String>,
    /// What the brain resolved for the agent at issue time, signed with the rest: a
    /// [`RetrySpec`] for retry-task (the original task's name, queue, priority and arguments as
    /// the brain saw them, and `override_kwargs` apart: the agent merges them over the
    /// originals it kept), a [`BulkRetrySpec`] for bulk-retry. Untyped here so the signed bytes
    /// of every existing row stay what they were; [`IssuedCommand::retry_spec`] and
    /// [`IssuedCommand::bulk_retry_spec`] read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<serde_json::Value>,
}

impl IssuedCommand {
    /// The typed command, validated again (the agent does not trust the brain's validation).
    pub fn command(&self) -> Result<Command, FieldError> {
        let tagged = serde_json::json!({"kind": self.kind, "payload": self.payload});
        let command: Command = serde_json::from_value(tagged)
            .map_err(|e| FieldError::new("payload", e.to_string()))?;
        command.validate()?;
        Ok(command)
    }

    /// `resolved` as a retry-task's spec: `None` if there is none, `Err` if it is malformed.
    pub fn retry_spec(&self) -> Option<Result<RetrySpec, serde_json::Error>> {
        self.resolved.as_ref().map(RetrySpec::deserialize)
    }

    /// `resolved` as a bulk-retry's spec: `None` if there is none, `Err` if it is malformed.
    pub fn bulk_retry_spec(&self) -> Option<Result<BulkRetrySpec, serde_json::Error>> {
        self.resolved.as_ref().map(BulkRetrySpec::deserialize)
    }

    /// `expires_at_ms` as a number.
    pub fn expires_at(&self) -> Option<i64> {
        self.expires_at_ms.parse().ok()
    }

    /// `issued_at_ms` as a number.
    pub fn issued_at(&self) -> Option<i64> {
        self.issued_at_ms.parse().ok()
    }
}
