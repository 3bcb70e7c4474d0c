//! The Commands API verbs on Celery: worker control through pidbox (`celery-wire.md` 5),
//! cancels that say what happened, pool resizes read back from `stats`, and purges bound to
//! the depth the operator confirmed. Retries are in `retry`.

use serde_json::{Value, json};
use taskward_shared::command::{CancelTask, Command, IssuedCommand};

use super::super::EngineError;
use super::{CeleryAdapter, pidbox};

/// How long a cancel waits to learn where the task is before revoking it.
const LOCATE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

impl CeleryAdapter {
    /// One worker's answer to a control request, or why there is none.
    async fn control_one(
        &self,
        worker: &str,
        method: &str,
        arguments: Value,
    ) -> Result<String, EngineError> {
        let replies = self
            .pidbox
            .call(method, arguments, Some(vec![worker.to_owned()]))
            .await?;
        match replies.iter().find(|(w, _)| w == worker) {
            Some((w, reply)) => pidbox::outcome(w, reply),
            None => Err(EngineError::Timeout(format!(
                "no reply from {worker} within {} s (is it running and consuming from this broker?)",
                pidbox::REPLY_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Runs one checked command.
    pub(super) async fn run(
        &self,
        command: &Command,
        issued: &IssuedCommand,
    ) -> Result<String, EngineError> {
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
                        // A global throttle is worth noticing in any log pipeline, but it is an order
                        // carried out, not a failure: WARN, not ERROR.
                        tracing::warn!(task = %c.task_name, rate = %c.rate, "critical command: global rate limit on every worker");
                        let replies = self.pidbox.call("rate_limit", arguments, None).await?;
                        summarize(&replies).map_err(EngineError::Rejected)
                    }
                }
            }
            Command::CancelTask(c) => self.cancel(c).await,
            Command::PurgeQueue(c) => self.purge(&c.queue, c.force, issued).await,
            Command::RetryTask(_) => self.retry(issued).await,
            Command::BulkRetry(_) => self.bulk_retry(issued).await,
            Command::PingWorkers(c) => self.ping(&c.worker_names).await,
        }
    }

    /// Pings the named workers (every worker when none are named) and fails naming those
    /// that did not answer within the reply timeout.
    async fn ping(&self, workers: &[String]) -> Result<String, EngineError> {
        let destination = (!workers.is_empty()).then(|| workers.to_vec());
        let replies = self.pidbox.call("ping", json!({}), destination).await?;
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
            Err(EngineError::Timeout(format!(
                "no answer within {} s from {}; {answers}",
                pidbox::REPLY_TIMEOUT.as_secs(),
                missing.join(", ")
            )))
        } else if answered.is_empty() {
            Err(EngineError::Timeout(
                "no worker answered the ping".to_owned(),
            ))
        } else {
            Ok(answers)
        }
    }

    /// Grows or shrinks a pool, then reads the size back from `stats` so the result says what
    /// the pool really is (a solo pool refuses, with Celery's reason).
    async fn resize(&self, worker: &str, delta: i32) -> Result<String, EngineError> {
        let size = |stats: &[(String, Value)]| {
            stats
                .iter()
                .find(|(w, _)| w == worker)
                .and_then(|(_, s)| s["pool"]["processes"].as_array().map(Vec::len))
        };
        let pidbox = &self.pidbox;
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
    async fn cancel(&self, c: &CancelTask) -> Result<String, EngineError> {
        let pidbox = &self.pidbox;
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
            Err(text) => Err(EngineError::Rejected(format!(
                "{what}; a worker refused: {text}"
            ))),
        }
    }

    /// Purges every priority bucket of a queue in one step, refusing (unless forced) when the
    /// depth is not the one the operator confirmed.
    async fn purge(
        &self,
        queue: &str,
        force: bool,
        issued: &IssuedCommand,
    ) -> Result<String, EngineError> {
        if !force {
            let bound: Option<u64> = issued.bound_depth.as_deref().and_then(|d| d.parse().ok());
            let now = self.transport.queue_depth(queue).await?;
            if Some(now) != bound {
                return Err(EngineError::Refused(format!(
                    "refused: {queue} holds {now} messages, the purge was confirmed for {}",
                    bound.map_or("an unknown depth".to_owned(), |b| b.to_string())
                )));
            }
        } else {
            tracing::warn!(%queue, "critical command: forced purge");
        }
        let purged = self.transport.purge(queue).await?;
        Ok(format!("purged {purged} messages from {queue}"))
    }
}

/// The workers' answers as one text; `Err` if any refused. The text is the same either way:
/// `Err` only says it is a refusal.
fn summarize(replies: &[(String, Value)]) -> Result<String, String> {
    let outcomes: Vec<Result<String, EngineError>> =
        replies.iter().map(|(w, r)| pidbox::outcome(w, r)).collect();
    let text = outcomes
        .iter()
        .map(|o| match o {
            Ok(t) => t.clone(),
            Err(e) => e.to_string(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if outcomes.iter().any(Result::is_err) {
        Err(text)
    } else {
        Ok(text)
    }
}
