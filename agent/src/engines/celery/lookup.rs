//! What task events do not say, asked of the workers themselves (`celery-wire.md` 5):
//! `query_task` gives a received task's real arguments (event reprs are truncated near 1 KiB
//! and need not be literals), its queue and its priority; after a gap in the event stream,
//! `active` and `reserved` say which tasks are in flight. Lookups are batched: one request per
//! tick to the workers holding pending tasks, so a busy cluster costs a few control messages a
//! second, never one per task.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use taskward_shared::events::{TaskState, TaskUpdate, Update};
use tokio::sync::mpsc;

use super::pidbox::{Pidbox, REPLY_TIMEOUT};
use super::redact::Redactor;
use super::vault::{Original, Vault};

/// How often pending lookups go out.
const TICK: Duration = Duration::from_millis(250);
/// How long one lookup waits for the workers' replies.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Task ids per request.
const BATCH_MAX: usize = 1_000;
/// Lookups held at most; past it new ones are skipped (and logged) rather than queued.
const PENDING_MAX: usize = 50_000;

/// One task to look up.
struct Wanted {
    task_id: String,
    worker: String,
    /// The event's argument reprs could not be read: only the worker can give them.
    args_unreadable: bool,
}

/// The lookup service of one adapter.
pub struct Lookup {
    pidbox: Pidbox,
    vault: Arc<Vault>,
    redactor: Redactor,
    sink: mpsc::Sender<Update>,
    pending: Mutex<Vec<Wanted>>,
}

/// The update that marks a task not retryable, with the reason shown to operators.
pub fn unavailable(task_id: &str, why: String) -> Update {
    Update::Task(Box::new(TaskUpdate {
        engine: "celery".into(),
        task_id: task_id.to_owned(),
        at_ms: super::now_ms(),
        args_unavailable: Some(format!("arguments unavailable: {why}")),
        ..TaskUpdate::default()
    }))
}

impl Lookup {
    /// A lookup service reporting into `sink` and keeping originals in `vault`.
    pub fn new(
        pidbox: Pidbox,
        vault: Arc<Vault>,
        redactor: Redactor,
        sink: mpsc::Sender<Update>,
    ) -> Arc<Lookup> {
        Arc::new(Lookup {
            pidbox,
            vault,
            redactor,
            sink,
            pending: Mutex::new(Vec::new()),
        })
    }

    /// Queues a received task for lookup (cheap: called from the event read loop). When the
    /// queue is full and the task's arguments are unreadable, returns the update that says so.
    pub fn want(&self, worker: &str, task_id: &str, args_unreadable: bool) -> Option<Update> {
        let mut pending = self.pending.lock().expect("lookup lock");
        if pending.len() >= PENDING_MAX {
            return args_unreadable.then(|| {
                unavailable(
                    task_id,
                    "the event's repr was unreadable and the agent's lookup queue was full".into(),
                )
            });
        }
        pending.push(Wanted {
            task_id: task_id.to_owned(),
            worker: worker.to_owned(),
            args_unreadable,
        });
        None
    }

    /// Runs lookups every tick until the sink closes.
    pub fn start(self: &Arc<Self>) {
        let lookup = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let batch: Vec<Wanted> = {
                    let mut pending = lookup.pending.lock().expect("lookup lock");
                    let n = pending.len().min(BATCH_MAX);
                    pending.drain(..n).collect()
                };
                if !batch.is_empty() && !lookup.query(batch).await {
                    return;
                }
            }
        });
    }

    /// One `query_task` to the workers of `batch`; returns false once the sink is closed.
    async fn query(&self, batch: Vec<Wanted>) -> bool {
        let workers: BTreeSet<&str> = batch.iter().map(|w| w.worker.as_str()).collect();
        let ids: Vec<&str> = batch.iter().map(|w| w.task_id.as_str()).collect();
        let replies = self
            .pidbox
            .call_within(
                "query_task",
                json!({ "ids": ids }),
                Some(workers.iter().map(|w| (*w).to_owned()).collect()),
                LOOKUP_TIMEOUT,
            )
            .await;
        let mut found: HashMap<String, Value> = HashMap::new();
        let mut answered: BTreeSet<String> = BTreeSet::new();
        match replies {
            Ok(replies) => {
                for (worker, answer) in replies {
                    answered.insert(worker);
                    if let Value::Object(tasks) = answer {
                        for (id, pair) in tasks {
                            // `{"<id>": ["active" | "reserved" | ..., {request}]}`
                            found.insert(id, pair[1].clone());
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "query_task failed"),
        }
        tracing::debug!(
            asked = batch.len(),
            found = found.len(),
            workers = ?workers,
            answered = ?answered,
            "query_task lookup"
        );
        for wanted in batch {
            let update = match found.get(&wanted.task_id) {
                Some(request) => {
                    let Some((original, update)) =
                        from_request(request, None, &self.redactor, wanted.args_unreadable)
                    else {
                        continue;
                    };
                    self.vault.put(original);
                    Update::Task(Box::new(update))
                }
                None if wanted.args_unreadable => {
                    let why = if answered.contains(&wanted.worker) {
                        format!(
                            "the event's repr was truncated or not a Python literal, and {} no \
                             longer held the task when asked (query_task)",
                            wanted.worker
                        )
                    } else {
                        format!(
                            "the event's repr was truncated or not a Python literal, and {} did \
                             not answer query_task",
                            wanted.worker
                        )
                    };
                    unavailable(&wanted.task_id, why)
                }
                None => continue,
            };
            if self.sink.send(update).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Every task in flight on any worker (`active`: started, `reserved`: received), with
    /// their originals kept: what reconciles the brain after a gap in the event stream.
    pub async fn in_flight(&self) -> Vec<Update> {
        let mut updates = Vec::new();
        for (method, state) in [
            ("active", TaskState::Started),
            ("reserved", TaskState::Received),
        ] {
            let replies = match self.pidbox.call(method, json!({}), None).await {
                Ok(replies) => replies,
                Err(e) => {
                    tracing::warn!(error = %e, %method, "cannot reconcile in-flight tasks");
                    continue;
                }
            };
            for (_, requests) in replies {
                for request in requests.as_array().map(Vec::as_slice).unwrap_or_default() {
                    if let Some((original, update)) =
                        from_request(request, Some(state), &self.redactor, true)
                    {
                        self.vault.put(original);
                        updates.push(Update::Task(Box::new(update)));
                    }
                }
            }
        }
        tracing::info!(
            tasks = updates.len(),
            timeout_s = REPLY_TIMEOUT.as_secs(),
            "reconciled in-flight tasks after a gap in the event stream"
        );
        updates
    }
}

/// A worker's request object (`active`, `reserved`, `query_task`) as the original call and
/// the update the brain gets: queue, priority, worker, and (when `with_args`) the redacted
/// arguments. `state` is set when the request says where the task is (reconciliation).
pub fn from_request(
    request: &Value,
    state: Option<TaskState>,
    redactor: &Redactor,
    with_args: bool,
) -> Option<(Original, TaskUpdate)> {
    let task_id = request["id"].as_str()?.to_owned();
    let now = super::now_ms();
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let delivery = &request["delivery_info"];
    let priority = delivery["priority"]
        .as_u64()
        .map(|p| u8::try_from(p.min(255)).unwrap_or(u8::MAX));
    let original = Original {
        task_id: task_id.clone(),
        at_ms: now,
        name: text(&request["name"]),
        args: Some(request["args"].clone()).filter(Value::is_array),
        kwargs: Some(request["kwargs"].clone()).filter(Value::is_object),
        queue: text(&delivery["routing_key"]),
        priority,
        root_id: None,
    };
    let at_ms = request["time_start"]
        .as_f64()
        .map_or(now, |s| (s * 1000.0).round() as i64);
    let update = TaskUpdate {
        engine: "celery".into(),
        task_id,
        state,
        at_ms,
        name: original.name.clone(),
        queue: original.queue.clone(),
        worker: text(&request["hostname"]),
        priority: priority.map(|p| p.to_string()),
        args: with_args
            .then(|| original.args.clone().map(|a| redactor.clean_value(a)))
            .flatten(),
        kwargs: with_args
            .then(|| original.kwargs.clone().map(|k| redactor.clean_value(k)))
            .flatten(),
        ..TaskUpdate::default()
    };
    Some((original, update))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_body(name: &str) -> Value {
        let path = format!(
            "{}/../../shared/fixtures/celery/redis/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        fixture["body"].clone()
    }

    #[test]
    fn query_task_replies_give_arguments_queue_and_priority() {
        let body = fixture_body("pidbox-reply-query-task.json");
        let (_, tasks) = body.as_object().unwrap().iter().next().unwrap();
        let (_, pair) = tasks.as_object().unwrap().iter().next().unwrap();
        let (original, update) = from_request(&pair[1], None, &Redactor::default(), true).unwrap();
        assert!(original.has_arguments());
        assert_eq!(original.args, Some(json!([40])));
        assert_eq!(original.queue.as_deref(), Some("celery"));
        assert_eq!(original.priority, Some(0));
        assert_eq!(update.queue.as_deref(), Some("celery"));
        assert_eq!(update.priority.as_deref(), Some("0"));
        assert_eq!(update.worker.as_deref(), Some("worker1@vm"));
        assert_eq!(update.state, None, "query_task only fills in");
    }

    #[test]
    fn active_replies_reconcile_as_started_with_redacted_arguments() {
        let body = fixture_body("pidbox-reply-active.json");
        let (_, requests) = body.as_object().unwrap().iter().next().unwrap();
        let mut request = requests[0].clone();
        request["kwargs"] = json!({"password": "hunter2"});
        let (original, update) = from_request(
            &request,
            Some(TaskState::Started),
            &Redactor::default(),
            true,
        )
        .unwrap();
        assert_eq!(update.state, Some(TaskState::Started));
        assert!(
            update.at_ms > 1_700_000_000_000,
            "time_start is the event time"
        );
        assert_eq!(update.kwargs, Some(json!({"password": "<redacted>"})));
        assert_eq!(original.kwargs, Some(json!({"password": "hunter2"})));
    }
}
