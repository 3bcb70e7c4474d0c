//! The Commands API verbs on Celery: worker control through pidbox (`celery-wire.md` 5),
//! cancels that say what happened, retries that republish the original call (kept on this
//! host, `vault`), and purges of every priority bucket.

use serde_json::{Value, json};
use taskward_shared::command::{CancelTask, Command, IssuedCommand};

use super::{CeleryAdapter, bucket_key, bucket_keys, pidbox};

/// How long a cancel waits to learn where the task is before revoking it.
const LOCATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Why one task could not be retried.
enum RetryError {
    /// Its real arguments are not available (counted as skipped, not failed, in bulk).
    Unavailable(String),
    /// The republish itself failed.
    Failed(String),
}

impl RetryError {
    fn text(&self) -> &str {
        match self {
            RetryError::Unavailable(why) | RetryError::Failed(why) => why,
        }
    }
}

impl CeleryAdapter {
    /// One worker's answer to a control request, or why there is none.
    async fn control_one(
        &self,
        worker: &str,
        method: &str,
        arguments: Value,
    ) -> Result<String, String> {
        let replies = self
            .pidbox()?
            .call(method, arguments, Some(vec![worker.to_owned()]))
            .await?;
        match replies.iter().find(|(w, _)| w == worker) {
            Some((w, reply)) => pidbox::outcome(w, reply),
            None => Err(format!(
                "no reply from {worker} within {} s (is it running and consuming from this broker?)",
                pidbox::REPLY_TIMEOUT.as_secs()
            )),
        }
    }

    /// Runs one checked command.
    pub(super) async fn run(
        &self,
        command: &Command,
        issued: &IssuedCommand,
    ) -> Result<String, String> {
        match command {
            Command::RestartWorker(c) => {
                self.control_one(&c.worker_name, "pool_restart", json!({}))
                    .await
            }
            Command::PoolResize(c) => self.resize(&c.worker_name, c.delta).await,
            Command::AddConsumer(c) => {
                self.control_one(&c.worker_name, "add_consumer", json!({"queue": c.queue}))
                    .await
            }
            Command::CancelConsumer(c) => {
                self.control_one(&c.worker_name, "cancel_consumer", json!({"queue": c.queue}))
                    .await
            }
            Command::RateLimit(c) => {
                let arguments = json!({"task_name": c.task_name, "rate_limit": c.rate});
                match c.worker_name.as_deref().filter(|w| !w.is_empty()) {
                    Some(worker) => self.control_one(worker, "rate_limit", arguments).await,
                    None => {
                        tracing::error!(task = %c.task_name, rate = %c.rate, "CRITICAL: global rate limit on every worker");
                        let replies = self.pidbox()?.call("rate_limit", arguments, None).await?;
                        summarize(&replies)
                    }
                }
            }
            Command::CancelTask(c) => self.cancel(c).await,
            Command::PurgeQueue(c) => self.purge(&c.queue, c.force, issued).await,
            Command::RetryTask(_) => {
                let resolved = issued
                    .resolved
                    .as_ref()
                    .ok_or("the command carries no resolved task (issued by an older brain?)")?;
                let (id, queue) = self
                    .republish(resolved)
                    .await
                    .map_err(|e| e.text().to_owned())?;
                let original = resolved["original_task_id"].as_str().unwrap_or("?");
                Ok(format!("retried {original} as {id} on queue {queue}"))
            }
            Command::BulkRetry(_) => self.bulk_retry(issued).await,
            Command::PingWorkers(c) => self.ping(&c.worker_names).await,
        }
    }

    /// Pings the named workers (every worker when none are named) and fails naming those
    /// that did not answer within the reply timeout.
    async fn ping(&self, workers: &[String]) -> Result<String, String> {
        let destination = (!workers.is_empty()).then(|| workers.to_vec());
        let replies = self.pidbox()?.call("ping", json!({}), destination).await?;
        let mut answered: Vec<&str> = replies.iter().map(|(w, _)| w.as_str()).collect();
        answered.sort_unstable();
        answered.dedup();
        let missing: Vec<&str> = workers
            .iter()
            .map(String::as_str)
            .filter(|w| !answered.contains(w))
            .collect();
        let asked = if workers.is_empty() {
            answered.len()
        } else {
            workers.len()
        };
        let answers = format!(
            "{} of {asked} answered: {}",
            asked - missing.len(),
            if answered.is_empty() {
                "none".to_owned()
            } else {
                answered.join(", ")
            }
        );
        if !missing.is_empty() {
            Err(format!(
                "no answer within {} s from {}; {answers}",
                pidbox::REPLY_TIMEOUT.as_secs(),
                missing.join(", ")
            ))
        } else if answered.is_empty() {
            Err("no worker answered the ping".to_owned())
        } else {
            Ok(answers)
        }
    }

    /// Grows or shrinks a pool, then reads the size back from `stats` so the result says what
    /// the pool really is (a solo pool refuses, with Celery's reason).
    async fn resize(&self, worker: &str, delta: i32) -> Result<String, String> {
        let size = |stats: &[(String, Value)]| {
            stats
                .iter()
                .find(|(w, _)| w == worker)
                .and_then(|(_, s)| s["pool"]["processes"].as_array().map(Vec::len))
        };
        let pidbox = self.pidbox()?;
        let only = Some(vec![worker.to_owned()]);
        let before = size(&pidbox.call("stats", json!({}), only.clone()).await?);
        let method = if delta > 0 {
            "pool_grow"
        } else {
            "pool_shrink"
        };
        let answer = self
            .control_one(worker, method, json!({"n": delta.unsigned_abs()}))
            .await?;
        // Celery grows and shrinks asynchronously: give the pool a moment to settle.
        let mut after = before;
        for _ in 0..20 {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            after = size(&pidbox.call("stats", json!({}), only.clone()).await?);
            if after != before {
                break;
            }
        }
        let show = |n: Option<usize>| n.map_or("unknown".to_owned(), |n| n.to_string());
        Ok(format!(
            "{answer}; pool processes {} -> {}",
            show(before),
            show(after)
        ))
    }

    /// Revokes a task (optionally terminating it) and says what actually happened: where the
    /// task was when the revoke went out, and what the workers answered.
    async fn cancel(&self, c: &CancelTask) -> Result<String, String> {
        let pidbox = self.pidbox()?;
        let located = pidbox
            .call_within(
                "query_task",
                json!({"ids": [c.task_id]}),
                None,
                LOCATE_TIMEOUT,
            )
            .await
            .unwrap_or_default();
        let holder = located.iter().find_map(|(worker, tasks)| {
            tasks.get(&c.task_id).map(|pair| {
                (
                    worker.clone(),
                    pair[0].as_str().unwrap_or("held").to_owned(),
                )
            })
        });
        let finished = self
            .liveness
            .lock()
            .expect("liveness lock")
            .finished(&c.task_id);
        let mut arguments = json!({"task_id": c.task_id});
        if c.terminate {
            arguments["terminate"] = json!(true);
            arguments["signal"] = json!(c.signal());
        }
        // Every worker known alive answers, so the reply wait ends as soon as they have;
        // workers that start later learn the revoke from the others (mingle).
        let online = self.liveness.lock().expect("liveness lock").online();
        let destination = (!online.is_empty()).then_some(online);
        let replies = pidbox.call("revoke", arguments, destination).await?;
        let what = match (&holder, finished) {
            (Some((worker, state)), _) if state == "active" && c.terminate => format!(
                "terminated while running on {worker} ({})",
                c.signal()
            ),
            (Some((worker, state)), _) if state == "active" => format!(
                "revoked while running on {worker}: it runs to its end (terminate was not asked)"
            ),
            (Some((worker, state)), _) => {
                format!("revoked before start (it was {state} on {worker})")
            }
            (None, Some(state)) => format!(
                "already finished ({}); nothing was stopped",
                state.as_str()
            ),
            (None, None) => "revoked before start: no worker holds it yet, and workers discard it when it arrives".to_owned(),
        };
        let answers = if replies.is_empty() {
            Ok("no worker answered".to_owned())
        } else {
            summarize(&replies)
        };
        match answers {
            Ok(text) => Ok(format!("{what} [{text}]")),
            Err(text) => Err(format!("{what}; a worker refused: {text}")),
        }
    }

    /// Republishes each task the brain resolved; reports retried, skipped (not retryable, as
    /// the brain or this host found) and failed counts. Fails if any republish failed.
    async fn bulk_retry(&self, issued: &IssuedCommand) -> Result<String, String> {
        let resolved = issued
            .resolved
            .as_ref()
            .ok_or("the command carries no resolved tasks (issued by an older brain?)")?;
        let mut skipped = resolved["skipped_not_retryable"]
            .as_array()
            .map_or(0, Vec::len);
        let mut retried = 0;
        let mut failures = Vec::new();
        for spec in resolved["tasks"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            match self.republish(spec).await {
                Ok(_) => retried += 1,
                Err(RetryError::Unavailable(_)) => skipped += 1,
                Err(RetryError::Failed(e)) => {
                    failures.push(format!("{}: {e}", spec["original_task_id"]));
                }
            }
        }
        let summary = format!(
            "retried {retried}, skipped not retryable {skipped}, failed {}",
            failures.len()
        );
        if failures.is_empty() {
            Ok(summary)
        } else {
            Err(format!("{summary}: {}", failures.join("; ")))
        }
    }

    /// Publishes one resolved task again as a new message (new id, so a revoked original does
    /// not swallow it; `celery-wire.md` 3.4): the original arguments kept on this host (or,
    /// failing that, the brain's copy if nothing in it was redacted), `override_kwargs` merged
    /// over them, the original queue and priority bucket, and the original as parent so the
    /// retry sits under it in the task tree. Returns the new id and the queue.
    async fn republish(&self, spec: &Value) -> Result<(String, String), RetryError> {
        use base64::Engine;
        let original_id = spec["original_task_id"].as_str().unwrap_or_default();
        let kept = self.vault.get(original_id).filter(|o| o.has_arguments());
        let (args, mut kwargs) = match &kept {
            Some(o) => (
                o.args.clone().unwrap_or_default(),
                o.kwargs.clone().unwrap_or_default(),
            ),
            None if readable(&spec["args"], &spec["kwargs"]) => {
                (spec["args"].clone(), spec["kwargs"].clone())
            }
            None => {
                return Err(RetryError::Unavailable(format!(
                    "task {original_id} is not retryable: arguments unavailable on this host \
                     (not kept, or past the vault's age or size bound) and the brain's copy is \
                     redacted or unreadable"
                )));
            }
        };
        if let (Some(kwargs), Some(overrides)) =
            (kwargs.as_object_mut(), spec["override_kwargs"].as_object())
        {
            kwargs.extend(overrides.clone());
        }
        let name = kept
            .as_ref()
            .and_then(|o| o.name.clone())
            .or_else(|| spec["name"].as_str().map(str::to_owned))
            .ok_or_else(|| RetryError::Failed("the task has no name".into()))?;
        let queue = kept
            .as_ref()
            .and_then(|o| o.queue.clone())
            .or_else(|| spec["queue"].as_str().map(str::to_owned))
            .unwrap_or_else(|| "celery".to_owned());
        let priority = kept.as_ref().and_then(|o| o.priority).unwrap_or_else(|| {
            spec["priority"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or(0)
        });
        let root = spec["root_id"].as_str().unwrap_or(original_id);
        let id = pidbox::uuid_like();
        let body = json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let headers = json!({
            "lang": "py",
            "task": name,
            "id": id,
            "shadow": null,
            "eta": null,
            "expires": null,
            "group": null,
            "group_index": null,
            "retries": 0,
            "timelimit": [null, null],
            "root_id": root,
            "parent_id": original_id,
            "argsrepr": python_repr_args(&args),
            "kwargsrepr": python_repr(&kwargs),
            "origin": "taskward-agent",
            "ignore_result": false,
            "replaced_task_nesting": 0,
            "stamped_headers": null,
            "stamps": {},
        });
        let envelope = json!({
            "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": id,
                "reply_to": pidbox::uuid_like(),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": priority,
                "body_encoding": "base64",
                "delivery_tag": pidbox::uuid_like(),
            },
        });
        let failed = |e: redis::RedisError| RetryError::Failed(format!("broker: {e}"));
        let client = redis::Client::open(self.broker.as_str()).map_err(failed)?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(failed)?;
        let _: i64 = redis::cmd("LPUSH")
            .arg(bucket_key(&self.keyprefix, &queue, priority))
            .arg(envelope.to_string())
            .query_async(&mut conn)
            .await
            .map_err(failed)?;
        Ok((id, queue))
    }

    /// Purges every priority bucket of a queue in one transaction, refusing (unless forced)
    /// when the depth is not the one the operator confirmed.
    async fn purge(
        &self,
        queue: &str,
        force: bool,
        issued: &IssuedCommand,
    ) -> Result<String, String> {
        let client = redis::Client::open(self.broker.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let keys = bucket_keys(&self.keyprefix, queue);
        if !force {
            let bound: Option<u64> = issued.bound_depth.as_deref().and_then(|d| d.parse().ok());
            let mut pipe = redis::pipe();
            for key in &keys {
                pipe.cmd("LLEN").arg(key);
            }
            let lengths: Vec<u64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            let now: u64 = lengths.iter().sum();
            if Some(now) != bound {
                return Err(format!(
                    "refused: {queue} holds {now} messages, the purge was confirmed for {}",
                    bound.map_or("an unknown depth".to_owned(), |b| b.to_string())
                ));
            }
        } else {
            tracing::error!(%queue, "CRITICAL: forced purge");
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        for key in &keys {
            pipe.cmd("LLEN").arg(key).cmd("DEL").arg(key).ignore();
        }
        let lengths: Vec<u64> = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok(format!(
            "purged {} messages from {queue}",
            lengths.iter().sum::<u64>()
        ))
    }
}

/// Whether the brain's copy of the arguments can be run as is: a list and a mapping with
/// nothing redacted in them.
fn readable(args: &Value, kwargs: &Value) -> bool {
    fn clean(v: &Value) -> bool {
        match v {
            Value::String(s) => {
                !(s.starts_with(super::redact::REDACTED) || s == super::redact::EMAIL)
            }
            Value::Array(items) => items.iter().all(clean),
            Value::Object(map) => map.values().all(clean),
            _ => true,
        }
    }
    args.is_array() && kwargs.is_object() && clean(args) && clean(kwargs)
}

/// Python's repr of a JSON value (for the `argsrepr`/`kwargsrepr` headers monitors show).
fn python_repr(value: &Value) -> String {
    match value {
        Value::Null => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    python_repr(&Value::String(k.clone())),
                    python_repr(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The args tuple as Python shows it: `(1, 2)`, `('a',)`, `()`.
fn python_repr_args(args: &Value) -> String {
    match args.as_array() {
        Some(items) if items.len() == 1 => format!("({},)", python_repr(&items[0])),
        Some(items) => format!(
            "({})",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        None => python_repr(args),
    }
}

/// The workers' answers as one text; `Err` if any refused.
pub(super) fn summarize(replies: &[(String, Value)]) -> Result<String, String> {
    let outcomes: Vec<Result<String, String>> =
        replies.iter().map(|(w, r)| pidbox::outcome(w, r)).collect();
    let text = outcomes
        .iter()
        .map(|o| match o {
            Ok(t) | Err(t) => t.as_str(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if outcomes.iter().any(Result::is_err) {
        Err(text)
    } else {
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs_of_arguments() {
        assert_eq!(python_repr_args(&json!([1, "a"])), "(1, 'a')");
        assert_eq!(python_repr_args(&json!(["x"])), "('x',)");
        assert_eq!(python_repr_args(&json!([])), "()");
        assert_eq!(
            python_repr(&json!({"k": [true, null, "it's"]})),
            r#"{'k': [True, None, 'it\'s']}"#
        );
        // What Celery would show round-trips through the brain's repr reader.
        let repr = python_repr(&json!({"a": "b\\c", "n": 1.5}));
        assert_eq!(
            crate::engines::celery::pyrepr::parse(&repr).unwrap(),
            json!({"a": "b\\c", "n": 1.5})
        );
    }

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
