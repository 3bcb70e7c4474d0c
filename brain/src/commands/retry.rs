//! Retries resolved at issue time. The brain signs into the command what the agent needs to
//! run a task again — name, queue, priority, the arguments as the brain saw them (redacted on
//! the host; the agent prefers the originals it kept), the operator's `override_kwargs`, the
//! original id and root — so the agent never has to trust anything unsigned about it.

use serde_json::Value;
use taskward_shared::command::{BulkRetry, BulkRetrySpec, RetrySpec, RetryTask, Skipped};

use crate::refusal::Refusal;
use crate::store::tasks::{self, TaskRow};
use crate::store::{AnyConnection, StoreError, StoreResult};

/// A task as a retry spec. `Err` says why the task is not retryable: its name was never
/// reported, or the agent found its real arguments unavailable.
pub fn retry_spec(
    task: &TaskRow,
    overrides: Option<&serde_json::Map<String, Value>>,
) -> Result<RetrySpec, String> {
    let name = task.name.clone().ok_or("its name was never reported")?;
    if let Some(why) = &task.args_unavailable {
        return Err(why.clone());
    }
    // The stored form is JSON when the agent could read the repr, a JSON string otherwise.
    let seen = |stored: &Option<String>| {
        stored
            .as_deref()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
            .filter(|v| v.is_array() || v.is_object())
            .unwrap_or(Value::Null)
    };
    Ok(RetrySpec {
        name,
        queue: task.queue.clone(),
        priority: task.priority.clone(),
        args: seen(&task.args),
        kwargs: seen(&task.kwargs),
        override_kwargs: overrides.cloned(),
        original_task_id: task.task_id.clone(),
        root_id: task.root_task_id.clone(),
    })
}

/// A retry resolved at issue time: what the command signs, and the task rows it runs again
/// (marked as retried once the command is minted).
pub struct Resolved<S> {
    /// The signed spec.
    pub spec: S,
    /// Row ids of the originals it retries.
    pub rows: Vec<String>,
}

/// Resolves a retry-task: not found for an unknown task, a conflict when it is not retryable.
pub fn resolve_retry(
    conn: &mut AnyConnection,
    project_id: &str,
    retry: &RetryTask,
) -> Result<Resolved<RetrySpec>, Refusal> {
    let task = match tasks::find(conn, project_id, &retry.engine, &retry.task_id) {
        Err(StoreError::NotFound) => {
            return Err(Refusal::NotFound(format!(
                "task {}/{}",
                retry.engine, retry.task_id
            )));
        }
        other => other?,
    };
    let spec = retry_spec(&task, retry.override_kwargs.as_ref()).map_err(|why| {
        Refusal::Conflict(format!("task {} is not retryable: {why}", retry.task_id))
    })?;
    Ok(Resolved {
        spec,
        rows: vec![task.id],
    })
}

/// Resolves a bulk-retry at issue time (and for its dry run): up to `max` matching tasks that
/// are not in flight (and not retried before, unless the filter asks), each with its
/// arguments; the ones whose arguments cannot be read are counted as skipped.
pub fn resolve_bulk(
    conn: &mut AnyConnection,
    project_id: &str,
    bulk: &BulkRetry,
) -> StoreResult<Resolved<BulkRetrySpec>> {
    let matching = tasks::matching(conn, project_id, &bulk.filter, i64::from(bulk.max))?;
    let mut resolution = BulkRetrySpec {
        tasks: Vec::new(),
        skipped_not_retryable: Vec::new(),
    };
    let mut rows = Vec::new();
    for task in matching {
        match retry_spec(&task, None) {
            Ok(spec) => {
                resolution.tasks.push(spec);
                rows.push(task.id);
            }
            Err(reason) => resolution.skipped_not_retryable.push(Skipped {
                task_id: task.task_id,
                reason,
            }),
        }
    }
    Ok(Resolved {
        spec: resolution,
        rows,
    })
}

/// A bulk retry's dry run: how many tasks its filter matches in all, and what it would take.
pub fn preview_bulk(
    conn: &mut AnyConnection,
    project_id: &str,
    bulk: &BulkRetry,
) -> StoreResult<(i64, BulkRetrySpec)> {
    let matched = tasks::count_matching(conn, project_id, &bulk.filter)?;
    Ok((matched, resolve_bulk(conn, project_id, bulk)?.spec))
}
