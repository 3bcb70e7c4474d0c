//! The Celery adapter over Redis: events (tasks, workers) from the broker's pub/sub, queue
//! depths, dead-worker detection, and the worker-control commands through Celery's remote
//! control (pidbox) plus purges. Retrying tasks (republishing their original message) comes
//! next; until then those kinds fail with a clear reason instead of being attempted.

pub mod events;
pub mod pidbox;
pub mod redact;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};
use tokio::sync::mpsc;

use super::{BoxFuture, EngineAdapter};

/// The adapter.
pub struct CeleryAdapter {
    broker: String,
    keyprefix: String,
    queues: Vec<String>,
    enable_events: bool,
    redactor: redact::Redactor,
}

/// A worker silent this long is offline (Celery heartbeats every 2 s: five missed), and the
/// tasks it had started are lost.
const OFFLINE_AFTER_MS: i64 = 10_000;

/// Workers seen alive and the tasks they have started, to tell a dead worker from a quiet one.
#[derive(Default)]
struct Liveness {
    last_seen: HashMap<String, i64>,
    started: HashMap<String, String>,
}

impl Liveness {
    /// Notes what an update says about liveness; returns the worker a heartbeat came from.
    fn observe(&mut self, update: &Update, now: i64) -> Option<String> {
        match update {
            Update::Worker(w) if w.online => {
                self.last_seen.insert(w.name.clone(), now);
                return Some(w.name.clone());
            }
            Update::Worker(w) => {
                self.last_seen.remove(&w.name);
            }
            Update::Task(t) => {
                if let Some(worker) = &t.worker {
                    self.last_seen.insert(worker.clone(), now);
                }
                match t.state {
                    Some(TaskState::Started) => {
                        if let Some(worker) = &t.worker {
                            self.started.insert(t.task_id.clone(), worker.clone());
                        }
                    }
                    Some(TaskState::Received) | None => {}
                    Some(_) => {
                        self.started.remove(&t.task_id);
                    }
                }
            }
            Update::QueueDepth { .. } => {}
        }
        None
    }

    /// Workers silent past the limit, with the updates that mark them offline and their
    /// started tasks lost.
    fn expire(&mut self, now: i64) -> Vec<Update> {
        let dead: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| now - **seen > OFFLINE_AFTER_MS)
            .map(|(name, _)| name.clone())
            .collect();
        let mut updates = Vec::new();
        for worker in dead {
            self.last_seen.remove(&worker);
            tracing::warn!(%worker, "worker missed its heartbeats: offline, its started tasks lost");
            updates.push(Update::Worker(WorkerUpdate {
                name: worker.clone(),
                online: false,
                at_ms: now,
                ..WorkerUpdate::default()
            }));
            let lost: Vec<String> = self
                .started
                .iter()
                .filter(|(_, w)| **w == worker)
                .map(|(task, _)| task.clone())
                .collect();
            for task in lost {
                self.started.remove(&task);
                updates.push(Update::Task(Box::new(TaskUpdate {
                    engine: "celery".into(),
                    task_id: task,
                    state: Some(TaskState::Lost),
                    at_ms: now,
                    exception: Some(format!("worker {worker} stopped sending heartbeats")),
                    ..TaskUpdate::default()
                })));
            }
        }
        updates
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How often queue depths are read.
const DEPTH_EVERY: Duration = Duration::from_secs(3);

/// kombu's priority buckets on Redis: the plain list is bucket 0, then `<queue>\x06\x16<n>`.
const PRIORITY_BUCKETS: [&str; 3] = ["3", "6", "9"];

impl CeleryAdapter {
    /// An adapter for the broker at `broker` (`redis://[:password@]host:port/db`, or
    /// `rediss://` for TLS), with kombu's `global_keyprefix` if the app sets one.
    pub fn new(
        broker: &str,
        keyprefix: &str,
        queues: Vec<String>,
        enable_events: bool,
        redactor: redact::Redactor,
    ) -> Result<CeleryAdapter, String> {
        redis::Client::open(broker).map_err(|e| format!("broker URL {broker:?}: {e}"))?;
        Ok(CeleryAdapter {
            broker: broker.to_owned(),
            keyprefix: keyprefix.to_owned(),
            queues,
            enable_events,
            redactor,
        })
    }

    /// The pattern that matches every event channel of the broker's db.
    fn events_pattern(&self) -> Result<String, String> {
        let client = redis::Client::open(self.broker.as_str()).map_err(|e| e.to_string())?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(format!("{}/{db}.celeryev/*", self.keyprefix))
    }
}

impl EngineAdapter for CeleryAdapter {
    fn name(&self) -> &'static str {
        "celery"
    }

    fn supports(&self, _kind: CommandKind) -> bool {
        true
    }

    /// Subscribes to every event channel and forwards updates; reconnects after errors (events
    /// published meanwhile are lost to every subscriber: Redis keeps none).
    fn start_events(&self, sink: mpsc::Sender<Update>) {
        let broker = self.broker.clone();
        let pattern = match self.events_pattern() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot read events: bad broker URL");
                return;
            }
        };
        let (depth_broker, prefix, queues, depth_sink) = (
            broker.clone(),
            self.keyprefix.clone(),
            self.queues.clone(),
            sink.clone(),
        );
        tokio::spawn(
            async move { report_depths(&depth_broker, &prefix, &queues, &depth_sink).await },
        );
        let liveness = Arc::new(Mutex::new(Liveness::default()));
        let redactor = self.redactor.clone();
        let events_switch = if self.enable_events {
            match self.pidbox() {
                Ok(pidbox) => Some(Arc::new(EventsSwitch {
                    pidbox,
                    asked: Mutex::new(HashSet::new()),
                    sink: sink.clone(),
                })),
                Err(e) => {
                    tracing::error!(error = %e, "cannot switch task events on");
                    None
                }
            }
        } else {
            None
        };
        let (watch, watch_sink) = (liveness.clone(), sink.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let expired = watch.lock().expect("liveness lock").expire(now_ms());
                for update in expired {
                    if watch_sink.send(update).await.is_err() {
                        return;
                    }
                }
            }
        });
        tokio::spawn(async move {
            loop {
                match subscribe(
                    &broker,
                    &pattern,
                    &sink,
                    &liveness,
                    events_switch.as_ref(),
                    &redactor,
                )
                .await
                {
                    Ok(()) => return, // the agent is stopping
                    Err(e) => tracing::warn!(error = %e, "event subscription lost; resubscribing"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move { self.run(command, issued).await })
    }
}

impl CeleryAdapter {
    fn pidbox(&self) -> Result<pidbox::Pidbox, String> {
        let client = redis::Client::open(self.broker.as_str()).map_err(|e| e.to_string())?;
        let db = client.get_connection_info().redis_settings().db();
        Ok(pidbox::Pidbox {
            client,
            prefix: self.keyprefix.clone(),
            db,
        })
    }

    /// One worker's answer to a control request, or why there is none.
    async fn control_one(
        &self,
        worker: &str,
        method: &str,
        arguments: serde_json::Value,
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

    async fn run(&self, command: &Command, issued: &IssuedCommand) -> Result<String, String> {
        use serde_json::json;
        match command {
            Command::RestartWorker(c) => {
                self.control_one(&c.worker_name, "pool_restart", json!({}))
                    .await
            }
            Command::PoolResize(c) => {
                let method = if c.delta > 0 {
                    "pool_grow"
                } else {
                    "pool_shrink"
                };
                self.control_one(&c.worker_name, method, json!({"n": c.delta.unsigned_abs()}))
                    .await
            }
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
            Command::CancelTask(c) => {
                let replies = self
                    .pidbox()?
                    .call("revoke", json!({"task_id": c.task_id}), None)
                    .await?;
                if replies.is_empty() {
                    Ok("revoke broadcast; no worker answered (the id is remembered by workers that start later through mingle)".into())
                } else {
                    summarize(&replies)
                }
            }
            Command::PurgeQueue(c) => self.purge(&c.queue, c.force, issued).await,
            Command::RetryTask(_) => self.republish(issued).await,
            Command::BulkRetry(_) => self.bulk_retry(issued).await,
        }
    }

    /// Runs a task again: publishes a new message (new id, so a revoked original does not
    /// swallow it) with the original name, queue and arguments the brain resolved and signed
    /// (`celery-wire.md` 3.4).
    async fn republish(&self, issued: &IssuedCommand) -> Result<String, String> {
        let resolved = issued
            .resolved
            .as_ref()
            .ok_or("the command carries no resolved task (issued by an older brain?)")?;
        let (id, queue) = self.republish_spec(resolved).await?;
        let original = resolved["original_task_id"].as_str().unwrap_or("?");
        Ok(format!("retried {original} as {id} on queue {queue}"))
    }

    /// Republishes each task the brain resolved; reports retried, skipped (not retryable, as
    /// the brain found) and failed counts. Fails if any republish failed.
    async fn bulk_retry(&self, issued: &IssuedCommand) -> Result<String, String> {
        let resolved = issued
            .resolved
            .as_ref()
            .ok_or("the command carries no resolved tasks (issued by an older brain?)")?;
        let skipped = resolved["skipped_not_retryable"]
            .as_array()
            .map_or(0, Vec::len);
        let mut retried = 0;
        let mut failures = Vec::new();
        for spec in resolved["tasks"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            match self.republish_spec(spec).await {
                Ok(_) => retried += 1,
                Err(e) => failures.push(format!("{}: {e}", spec["original_task_id"])),
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

    /// Publishes one resolved task as a new message; returns its new id and queue.
    async fn republish_spec(
        &self,
        resolved: &serde_json::Value,
    ) -> Result<(String, String), String> {
        use base64::Engine;
        let name = resolved["name"]
            .as_str()
            .ok_or("resolved task has no name")?;
        let queue = resolved["queue"].as_str().unwrap_or("celery");
        let args = resolved["args"].clone();
        let kwargs = resolved["kwargs"].clone();
        let id = pidbox::uuid_like();
        let body = serde_json::json!([args, kwargs, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]);
        let headers = serde_json::json!({
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
            "root_id": id,
            "parent_id": null,
            "argsrepr": python_repr_args(&args),
            "kwargsrepr": python_repr(&kwargs),
            "origin": "taskward-agent",
            "ignore_result": false,
            "replaced_task_nesting": 0,
            "stamped_headers": null,
            "stamps": {},
        });
        let envelope = serde_json::json!({
            "body": base64::engine::general_purpose::STANDARD.encode(body.to_string()),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": headers,
            "properties": {
                "correlation_id": id,
                "reply_to": pidbox::uuid_like(),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": pidbox::uuid_like(),
            },
        });
        let client = redis::Client::open(self.broker.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        let _: i64 = redis::cmd("LPUSH")
            .arg(format!("{}{queue}", self.keyprefix))
            .arg(envelope.to_string())
            .query_async(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        Ok((id, queue.to_owned()))
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
        let p = &self.keyprefix;
        let keys: Vec<String> = std::iter::once(format!("{p}{queue}"))
            .chain(
                PRIORITY_BUCKETS
                    .iter()
                    .map(|b| format!("{p}{queue}\x06\x16{b}")),
            )
            .collect();
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

/// Python's repr of a JSON value (for the `argsrepr`/`kwargsrepr` headers monitors show).
fn python_repr(value: &serde_json::Value) -> String {
    use serde_json::Value;
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
fn python_repr_args(args: &serde_json::Value) -> String {
    match args.as_array() {
        Some(items) if items.len() == 1 => format!("({},)", python_repr(&items[0])),
        Some(items) => format!(
            "({})",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        None => python_repr(args),
    }
}

fn summarize(replies: &[(String, serde_json::Value)]) -> Result<String, String> {
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

/// Workers started without `-E` send heartbeats but no task events; Celery's `enable_events`
/// switches them on at run time. Each worker is asked once; if it does not answer (its control
/// inbox may not be ready yet when it first says hello), a later heartbeat asks again.
struct EventsSwitch {
    pidbox: pidbox::Pidbox,
    asked: Mutex<HashSet<String>>,
    /// Where the worker's pool and queues (from `stats` and `active_queues`) are reported.
    sink: mpsc::Sender<Update>,
}

impl EventsSwitch {
    fn ask(self: &Arc<Self>, worker: String) {
        if !self
            .asked
            .lock()
            .expect("asked lock")
            .insert(worker.clone())
        {
            return;
        }
        let switch = self.clone();
        tokio::spawn(async move {
            let answer = switch
                .pidbox
                .call(
                    "enable_events",
                    serde_json::json!({}),
                    Some(vec![worker.clone()]),
                )
                .await;
            match answer.as_ref().map(|r| r.first()) {
                Ok(Some((w, reply))) => {
                    tracing::info!(worker = %w, reply = %reply, "asked the worker to send task events (enable_events)");
                    if let Some(update) = probe(&switch.pidbox, &worker).await {
                        let _ = switch.sink.send(update).await;
                    }
                }
                other => {
                    tracing::warn!(%worker, outcome = ?other, "enable_events got no answer; will ask again");
                    switch.asked.lock().expect("asked lock").remove(&worker);
                }
            }
        });
    }
}

/// A worker's pool kind, size and consumed queues, from `stats` and `active_queues`.
async fn probe(pidbox: &pidbox::Pidbox, worker: &str) -> Option<Update> {
    let only = Some(vec![worker.to_owned()]);
    let stats = pidbox
        .call("stats", serde_json::json!({}), only.clone())
        .await
        .ok()?;
    let queues = pidbox
        .call("active_queues", serde_json::json!({}), only)
        .await
        .ok()?;
    let stats = &stats.first()?.1;
    let implementation = stats["pool"]["implementation"].as_str().unwrap_or_default();
    // "celery.concurrency.prefork:TaskPool" -> "prefork"
    let pool = implementation
        .rsplit_once(':')
        .map(|(module, _)| module.rsplit('.').next().unwrap_or(module).to_owned());
    let concurrency = stats["pool"]["max-concurrency"].as_i64().map(|n| n as i32);
    let queue_names = queues.first().and_then(|(_, list)| {
        list.as_array().map(|qs| {
            qs.iter()
                .filter_map(|q| q["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
    });
    Some(Update::Worker(WorkerUpdate {
        name: worker.to_owned(),
        online: true,
        at_ms: now_ms(),
        pool,
        concurrency,
        queues: queue_names,
    }))
}

/// Replaces a task's argument reprs with their redacted form (see [`redact`]).
fn redact_task(redactor: &redact::Redactor, task: &mut TaskUpdate) {
    for field in [&mut task.args, &mut task.kwargs] {
        if let Some(serde_json::Value::String(repr)) = field.as_ref() {
            *field = Some(redactor.clean(repr));
        }
    }
}

/// One subscription: reads messages as fast as Redis sends them and hands each to the parser;
/// the spool behind `sink` never makes this loop wait on the brain.
async fn subscribe(
    broker: &str,
    pattern: &str,
    sink: &mpsc::Sender<Update>,
    liveness: &Mutex<Liveness>,
    events_switch: Option<&Arc<EventsSwitch>>,
    redactor: &redact::Redactor,
) -> Result<(), String> {
    let client = redis::Client::open(broker).map_err(|e| e.to_string())?;
    let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
    pubsub
        .psubscribe(pattern)
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(%pattern, "reading Celery events");
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        match events::parse_message(message.get_payload_bytes()) {
            Ok(mut updates) => {
                for update in &mut updates {
                    if let Update::Task(task) = update {
                        redact_task(redactor, task);
                    }
                }
                let newcomers: Vec<String> = {
                    let mut live = liveness.lock().expect("liveness lock");
                    let now = now_ms();
                    updates
                        .iter()
                        .filter_map(|u| live.observe(u, now))
                        .collect()
                };
                if let Some(switch) = events_switch {
                    for worker in newcomers {
                        switch.ask(worker);
                    }
                }
                for update in updates {
                    if sink.send(update).await.is_err() {
                        return Ok(());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, channel = %message.get_channel_name(), "unreadable event")
            }
        }
    }
    Err("the broker closed the subscription".into())
}

/// Reads every watched queue's depth (all priority buckets) every few seconds.
async fn report_depths(broker: &str, prefix: &str, queues: &[String], sink: &mpsc::Sender<Update>) {
    let Ok(client) = redis::Client::open(broker) else {
        return;
    };
    let mut tick = tokio::time::interval(DEPTH_EVERY);
    let mut conn = None;
    loop {
        tick.tick().await;
        if conn.is_none() {
            match client.get_multiplexed_async_connection().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read queue depths");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        for queue in queues {
            let mut pipe = redis::pipe();
            pipe.cmd("LLEN").arg(format!("{prefix}{queue}"));
            for bucket in PRIORITY_BUCKETS {
                pipe.cmd("LLEN")
                    .arg(format!("{prefix}{queue}\x06\x16{bucket}"));
            }
            let lengths: Result<Vec<u64>, _> = pipe.query_async(c).await;
            match lengths {
                Ok(lengths) => {
                    let update = Update::QueueDepth {
                        queue: queue.clone(),
                        depth: lengths.iter().sum(),
                        at_ms: std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as i64),
                    };
                    if sink.send(update).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "queue depth read failed; reconnecting");
                    conn = None;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_reprs_of_arguments() {
        use serde_json::json;
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
            taskward_shared::pyrepr::parse(&repr).unwrap(),
            json!({"a": "b\\c", "n": 1.5})
        );
    }

    fn started(task: &str, worker: &str) -> Update {
        Update::Task(Box::new(TaskUpdate {
            engine: "celery".into(),
            task_id: task.into(),
            state: Some(TaskState::Started),
            worker: Some(worker.into()),
            ..TaskUpdate::default()
        }))
    }

    #[test]
    fn silent_workers_go_offline_and_their_started_tasks_are_lost() {
        let mut live = Liveness::default();
        live.observe(&started("t1", "w1"), 0);
        live.observe(&started("t2", "w2"), 0);
        live.observe(
            &Update::Worker(WorkerUpdate {
                name: "w2".into(),
                online: true,
                at_ms: 0,
                ..WorkerUpdate::default()
            }),
            9_000,
        );
        assert!(
            live.expire(OFFLINE_AFTER_MS).is_empty(),
            "nobody is late yet"
        );
        let updates = live.expire(OFFLINE_AFTER_MS + 1);
        assert_eq!(updates.len(), 2, "{updates:?}");
        assert!(matches!(&updates[0], Update::Worker(w) if w.name == "w1" && !w.online));
        assert!(
            matches!(&updates[1], Update::Task(t) if t.task_id == "t1" && t.state == Some(TaskState::Lost))
        );
        assert!(
            live.expire(OFFLINE_AFTER_MS + 2).is_empty(),
            "reported once"
        );
    }
}
