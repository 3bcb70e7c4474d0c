//! The retry contract between brain and agent: what the brain resolves about a task at issue
//! time and signs into the command (`IssuedCommand::resolved`), and what the agent reads back.
//! The JSON is part of signed audit rows, so field names, nulls and shapes must stay exactly
//! what the brain has always written: every `Option` serializes as `null` (never skipped), and
//! arguments stay untyped JSON because the brain stores whatever the agent could read.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One task to run again (`retry-task`, and each task of a `bulk-retry`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrySpec {
    /// The registered task name.
    pub name: String,
    /// The queue it was published to, if an event or lookup said.
    #[serde(default)]
    pub queue: Option<String>,
    /// Its message priority as a decimal string, if known.
    #[serde(default)]
    pub priority: Option<String>,
    /// The positional arguments as the brain saw them (redacted on the host): a JSON array
    /// when the agent could read them, `null` otherwise. The agent prefers the originals it
    /// kept.
    #[serde(default)]
    pub args: Value,
    /// The keyword arguments as the brain saw them: a JSON object, or `null`.
    #[serde(default)]
    pub kwargs: Value,
    /// The operator's replacements, merged over the original kwargs by the agent (the brain
    /// never merges: it does not hold the unredacted originals).
    #[serde(default)]
    pub override_kwargs: Option<Map<String, Value>>,
    /// The task being retried; the retry runs under it in the task tree.
    pub original_task_id: String,
    /// Its workflow root, if reported.
    #[serde(default)]
    pub root_id: Option<String>,
}

/// What a `bulk-retry` resolves to: the tasks to run again, and those the brain already found
/// not retryable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BulkRetrySpec {
    /// Tasks to republish.
    pub tasks: Vec<RetrySpec>,
    /// Tasks matched but not retryable, with the brain's reason.
    pub skipped_not_retryable: Vec<Skipped>,
}

/// A task a bulk retry leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The task.
    pub task_id: String,
    /// Why it is not retryable (arguments unavailable, name never reported).
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the brain's `retry_spec` (`brain/src/commands/retry.rs`) signs, as JSON, for
    /// a task with every field and one with every optional field missing.
    fn brain_specs() -> Vec<Value> {
        vec![
            json!({
                "name": "app.add",
                "queue": "billing",
                "priority": "5",
                "args": [2, {"a": "<redacted>"}],
                "kwargs": {"to": "<email>", "n": 1.5},
                "override_kwargs": {"n": 3, "deep": {"x": [null]}},
                "original_task_id": "b55edc2c-0440-42c4-b0ca-b11056fe1062",
                "root_id": "b55edc2c-0440-42c4-b0ca-b11056fe1062",
            }),
            json!({
                "name": "app.fail",
                "queue": null,
                "priority": null,
                "args": null,
                "kwargs": null,
                "override_kwargs": null,
                "original_task_id": "t-2",
                "root_id": null,
            }),
        ]
    }

    /// Signed rows hash RFC 8785 bytes, so the typed form must give the brain's bytes back.
    fn canonical(value: &impl Serialize) -> Vec<u8> {
        serde_json_canonicalizer::to_vec(value).unwrap()
    }

    #[test]
    fn specs_round_trip_the_brains_json_byte_for_byte() {
        for json in brain_specs() {
            let spec: RetrySpec = serde_json::from_value(json.clone()).unwrap();
            assert_eq!(serde_json::to_value(&spec).unwrap(), json);
            assert_eq!(canonical(&spec), canonical(&json));
        }
        let bulk = json!({
            "tasks": brain_specs(),
            "skipped_not_retryable": [{"task_id": "t-3", "reason": "its name was never reported"}],
        });
        let typed: BulkRetrySpec = serde_json::from_value(bulk.clone()).unwrap();
        assert_eq!(typed.tasks.len(), 2);
        assert_eq!(typed.skipped_not_retryable[0].task_id, "t-3");
        assert_eq!(canonical(&typed), canonical(&bulk));
        let empty = json!({"tasks": [], "skipped_not_retryable": []});
        let typed: BulkRetrySpec = serde_json::from_value(empty.clone()).unwrap();
        assert_eq!(canonical(&typed), canonical(&empty));
    }
}
