//! Retries: a task the brain resolved is published again as a new protocol-v2 message, with the
//! original arguments this host kept (`vault`), or the brain's copy when nothing in it was
//! redacted, and the operator's `override_kwargs` merged over them.

use serde_json::Value;
use taskward_shared::command::{IssuedCommand, RetrySpec};

use super::super::EngineError;
use super::task_message::{TaskCall, task_message};
use super::{CeleryAdapter, redact, uuid_like};

impl CeleryAdapter {
    /// Retries the one task the brain resolved; says which new id runs it where.
    pub(super) async fn retry(&self, issued: &IssuedCommand) -> Result<String, EngineError> {
        let spec = issued
            .retry_spec()
            .ok_or_else(|| {
                EngineError::Refused(
                    "the command carries no resolved task (issued by an older brain?)".into(),
                )
            })?
            .map_err(malformed)?;
        let (id, queue) = self.republish(&spec).await?;
        Ok(format!(
            "retried {} as {id} on queue {queue}",
            spec.original_task_id
        ))
    }

    /// Republishes each task the brain resolved; reports retried, skipped (not retryable, as
    /// the brain or this host found) and failed counts. Fails if any republish failed.
    pub(super) async fn bulk_retry(&self, issued: &IssuedCommand) -> Result<String, EngineError> {
        let bulk = issued
            .bulk_retry_spec()
            .ok_or_else(|| {
                EngineError::Refused(
                    "the command carries no resolved tasks (issued by an older brain?)".into(),
                )
            })?
            .map_err(malformed)?;
        let mut skipped = bulk.skipped_not_retryable.len();
        let mut retried = 0;
        let mut failures = Vec::new();
        for spec in &bulk.tasks {
            match self.republish(spec).await {
                Ok(_) => retried += 1,
                // Arguments gone on this host: not retryable, as the brain's skips are.
                Err(EngineError::Refused(_)) => skipped += 1,
                // The id quoted, as this detail has always shown it.
                Err(e) => failures.push(format!("{:?}: {e}", spec.original_task_id)),
            }
        }
        let summary = format!(
            "retried {retried}, skipped not retryable {skipped}, failed {}",
            failures.len()
        );
        if failures.is_empty() {
            Ok(summary)
        } else {
            Err(EngineError::Failed(format!(
                "{summary}: {}",
                failures.join("; ")
            )))
        }
    }

    /// Publishes one resolved task again as a new message (new id, so a revoked original does
    /// not swallow it; `celery-wire.md` 3.4): the original arguments kept on this host (or,
    /// failing that, the brain's copy if nothing in it was redacted), `override_kwargs` merged
    /// over them, the original queue and priority bucket, and the original as parent so the
    /// retry sits under it in the task tree. Returns the new id and the queue. `Refused` means
    /// the arguments are unavailable.
    async fn republish(&self, spec: &RetrySpec) -> Result<(String, String), EngineError> {
        let original_id = spec.original_task_id.as_str();
        let kept = self.vault.get(original_id).filter(|o| o.has_arguments());
        let (args, mut kwargs) = match &kept {
            Some(o) => (
                o.args.clone().unwrap_or_default(),
                o.kwargs.clone().unwrap_or_default(),
            ),
            None if readable(&spec.args, &spec.kwargs) => (spec.args.clone(), spec.kwargs.clone()),
            None => {
                return Err(EngineError::Refused(format!(
                    "task {original_id} is not retryable: arguments unavailable on this host \
                     (not kept, or past the vault's age or size bound) and the brain's copy is \
                     redacted or unreadable"
                )));
            }
        };
        if let (Some(kwargs), Some(overrides)) = (kwargs.as_object_mut(), &spec.override_kwargs) {
            kwargs.extend(overrides.clone());
        }
        let kept = kept.unwrap_or_default();
        let name = kept.name.unwrap_or_else(|| spec.name.clone());
        let queue = kept
            .queue
            .or_else(|| spec.queue.clone())
            .unwrap_or_else(|| "celery".to_owned());
        let priority = kept.priority.unwrap_or_else(|| {
            spec.priority
                .as_deref()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        });
        let id = uuid_like();
        let message = task_message(&TaskCall {
            name: &name,
            id: &id,
            args: &args,
            kwargs: &kwargs,
            root_id: spec.root_id.as_deref().unwrap_or(original_id),
            parent_id: original_id,
            queue: &queue,
            priority,
        });
        self.transport.publish_task(&message).await?;
        Ok((id, queue))
    }
}

fn malformed(error: serde_json::Error) -> EngineError {
    EngineError::Failed(format!(
        "the command's resolved retry is malformed: {error}"
    ))
}

/// Whether the brain's copy of the arguments can be run as is: a list and a mapping with
/// nothing redacted in them.
fn readable(args: &Value, kwargs: &Value) -> bool {
    fn clean(v: &Value) -> bool {
        match v {
            Value::String(s) => !(s.starts_with(redact::REDACTED) || s == redact::EMAIL),
            Value::Array(items) => items.iter().all(clean),
            Value::Object(map) => map.values().all(clean),
            _ => true,
        }
    }
    args.is_array() && kwargs.is_object() && clean(args) && clean(kwargs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacted_copies_are_never_run() {
        assert!(readable(&json!([1, "a"]), &json!({"k": "v"})));
        assert!(!readable(&json!([1]), &json!({"password": "<redacted>"})));
        assert!(!readable(&json!(["<email>"]), &json!({})));
        assert!(!readable(&json!([{"nested": "<redacted>"}]), &json!({})));
        assert!(!readable(&json!("(1, ...)"), &json!({})));
        assert!(!readable(&Value::Null, &Value::Null));
    }
}
