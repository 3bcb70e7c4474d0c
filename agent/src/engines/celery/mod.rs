//! The Celery adapter over Redis: events (tasks, workers) from the broker's pub/sub, the real
//! arguments of tasks kept on this host (`vault`, filled from event reprs and `query_task`),
//! queue depths, dead-worker detection and missed-event counting (`liveness`), and every
//! command verb (`commands`) through Celery's remote control (pidbox), republishing and purges.

mod commands;
pub mod events;
pub mod liveness;
pub mod lookup;
pub mod pidbox;
pub mod pyrepr;
pub mod redact;
pub mod vault;
mod workers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::events::{TaskState, TaskUpdate, Update};
use tokio::sync::mpsc;

use super::{BoxFuture, EngineAdapter, EngineError};
use liveness::Liveness;
use lookup::Lookup;
use vault::{Original, Vault};

/// The adapter.
pub struct CeleryAdapter {
    broker: String,
    keyprefix: String,
    queues: Vec<String>,
    enable_events: bool,
    redactor: redact::Redactor,
    vault: Arc<Vault>,
    liveness: Arc<Mutex<Liveness>>,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// How often queue depths are read.
const DEPTH_EVERY: Duration = Duration::from_secs(3);

/// kombu's priority buckets on Redis beyond bucket 0 (the plain list): `<queue>\x06\x16<n>`.
const PRIORITY_BUCKETS: [u8; 3] = [3, 6, 9];

/// The list a message of `priority` waits in: the largest bucket step not above it
/// (`celery-wire.md` 2.3).
pub fn bucket_key(prefix: &str, queue: &str, priority: u8) -> String {
    match PRIORITY_BUCKETS
        .iter()
        .rev()
        .find(|step| **step <= priority)
    {
        Some(step) => format!("{prefix}{queue}\x06\x16{step}"),
        None => format!("{prefix}{queue}"),
    }
}

/// Every bucket list of a queue (what its depth and a purge cover).
pub fn bucket_keys(prefix: &str, queue: &str) -> Vec<String> {
    std::iter::once(0)
        .chain(PRIORITY_BUCKETS)
        .map(|step| bucket_key(prefix, queue, step))
        .collect()
}

/// A repr this long may have been cut by Celery's `saferepr` (about 1024 characters) even if
/// what is left still reads as a literal: only the worker's copy is trusted then.
const REPR_TRUST_MAX: usize = 1000;

impl CeleryAdapter {
    /// An adapter for the broker at `broker` (`redis://[:password@]host:port/db`, or
    /// `rediss://` for TLS), with kombu's `global_keyprefix` if the app sets one, keeping
    /// original arguments in `vault`.
    pub fn new(
        broker: &str,
        keyprefix: &str,
        queues: Vec<String>,
        enable_events: bool,
        redactor: redact::Redactor,
        vault: Vault,
    ) -> Result<CeleryAdapter, String> {
        redis::Client::open(broker).map_err(|e| format!("broker URL {broker:?}: {e}"))?;
        Ok(CeleryAdapter {
            broker: broker.to_owned(),
            keyprefix: keyprefix.to_owned(),
            queues,
            enable_events,
            redactor,
            vault: Arc::new(vault),
            liveness: Arc::new(Mutex::new(Liveness::default())),
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
    /// published meanwhile are lost to every subscriber: Redis keeps none), then reconciles
    /// in-flight tasks from the workers.
    fn start_events(&self, sink: mpsc::Sender<Update>) {
        let (pattern, pidbox) = match self.events_pattern().and_then(|p| Ok((p, self.pidbox()?))) {
            Ok(both) => both,
            Err(e) => {
                tracing::error!(error = %e, "cannot read events: bad broker URL");
                return;
            }
        };
        let (depth_broker, prefix, queues, depth_sink) = (
            self.broker.clone(),
            self.keyprefix.clone(),
            self.queues.clone(),
            sink.clone(),
        );
        tokio::spawn(
            async move { report_depths(&depth_broker, &prefix, &queues, &depth_sink).await },
        );
        let lookup = Lookup::new(
            pidbox.clone(),
            self.vault.clone(),
            self.redactor.clone(),
            sink.clone(),
        );
        lookup.start();
        let probe = workers::Probe::new(pidbox, self.enable_events, sink.clone());
        probe.refresh_every(self.liveness.clone());
        let (watch, watch_sink, vault) = (self.liveness.clone(), sink.clone(), self.vault.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                vault.flush();
                let expired = watch.lock().expect("liveness lock").expire(now_ms());
                for update in expired {
                    if watch_sink.send(update).await.is_err() {
                        return;
                    }
                }
            }
        });
        let reader = Reader {
            sink,
            liveness: self.liveness.clone(),
            lookup,
            probe,
            vault: self.vault.clone(),
            redactor: self.redactor.clone(),
        };
        let broker = self.broker.clone();
        tokio::spawn(async move {
            let mut gaps = 0u64;
            loop {
                match reader.subscribe(&broker, &pattern, gaps > 0).await {
                    Ok(()) => return, // the agent is stopping
                    Err(e) => {
                        gaps += 1;
                        tracing::warn!(error = %e, gaps, "event subscription lost; resubscribing (events published meanwhile are lost)");
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }

    fn lost_events(&self) -> u64 {
        self.liveness.lock().expect("liveness lock").missed_events
    }

    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move { self.run(command, issued).await.map_err(EngineError::Failed) })
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
}

/// What the event read loop works with.
struct Reader {
    sink: mpsc::Sender<Update>,
    liveness: Arc<Mutex<Liveness>>,
    lookup: Arc<Lookup>,
    probe: Arc<workers::Probe>,
    vault: Arc<Vault>,
    redactor: redact::Redactor,
}

impl Reader {
    /// Reads a received task's argument reprs: the originals go to the vault (or, when the
    /// reprs cannot be trusted, a `query_task` lookup is queued), the brain gets the redacted
    /// form. Returns an update to send as well (arguments found unavailable).
    fn capture(&self, task: &mut TaskUpdate) -> Option<Update> {
        if task.state != Some(TaskState::Received) {
            return None;
        }
        let read = |field: &Option<serde_json::Value>| match field {
            Some(serde_json::Value::String(repr)) if repr.len() < REPR_TRUST_MAX => {
                pyrepr::parse(repr).ok()
            }
            _ => None,
        };
        let (args, kwargs) = (read(&task.args), read(&task.kwargs));
        let readable = args.as_ref().is_some_and(serde_json::Value::is_array)
            && kwargs.as_ref().is_some_and(serde_json::Value::is_object);
        if readable {
            self.vault.put(Original {
                task_id: task.task_id.clone(),
                at_ms: now_ms(),
                name: task.name.clone(),
                args: args.clone(),
                kwargs: kwargs.clone(),
                root_id: task.root_id.clone(),
                ..Original::default()
            });
            task.args = args.map(|a| self.redactor.clean_value(a));
            task.kwargs = kwargs.map(|k| self.redactor.clean_value(k));
        } else {
            // Kept as text: a truncated repr may still read as a literal, and must never be
            // mistaken for the real arguments.
            for field in [&mut task.args, &mut task.kwargs] {
                if let Some(serde_json::Value::String(repr)) = field.as_ref() {
                    *field = Some(self.redactor.clean_text(repr));
                }
            }
        }
        let worker = task.worker.as_deref()?;
        // Readable arguments only lack the queue and priority: asked of workers known to
        // answer. Unreadable ones can only come from the worker: always asked.
        if !readable || self.probe.responsive(worker) {
            return self.lookup.want(worker, &task.task_id, !readable);
        }
        None
    }

    /// One subscription: reads messages as fast as Redis sends them and hands each to the
    /// parser; the spool behind `sink` never makes this loop wait on the brain. After a gap
    /// (`reconcile`), asks the workers which tasks are in flight.
    async fn subscribe(&self, broker: &str, pattern: &str, reconcile: bool) -> Result<(), String> {
        let client = redis::Client::open(broker).map_err(|e| e.to_string())?;
        let mut pubsub = client.get_async_pubsub().await.map_err(|e| e.to_string())?;
        pubsub
            .psubscribe(pattern)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(%pattern, "reading Celery events");
        if reconcile {
            let (lookup, liveness, sink) = (
                self.lookup.clone(),
                self.liveness.clone(),
                self.sink.clone(),
            );
            tokio::spawn(async move {
                for update in lookup.in_flight().await {
                    liveness
                        .lock()
                        .expect("liveness lock")
                        .observe(&update, now_ms());
                    if sink.send(update).await.is_err() {
                        return;
                    }
                }
            });
        }
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let mut updates = match events::parse_message(message.get_payload_bytes()) {
                Ok(updates) => updates,
                Err(e) => {
                    tracing::warn!(error = %e, channel = %message.get_channel_name(), "unreadable event");
                    continue;
                }
            };
            let mut extra = Vec::new();
            for update in &mut updates {
                if let Update::Task(task) = update {
                    extra.extend(self.capture(task));
                }
            }
            let newcomers: Vec<String> = {
                let mut live = self.liveness.lock().expect("liveness lock");
                let now = now_ms();
                updates
                    .iter()
                    .filter_map(|u| live.observe(u, now))
                    .collect()
            };
            for worker in newcomers {
                self.probe.greet(worker);
            }
            for update in updates.into_iter().chain(extra) {
                if self.sink.send(update).await.is_err() {
                    return Ok(());
                }
            }
        }
        Err("the broker closed the subscription".into())
    }
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
            for key in bucket_keys(prefix, queue) {
                pipe.cmd("LLEN").arg(key);
            }
            let lengths: Result<Vec<u64>, _> = pipe.query_async(c).await;
            match lengths {
                Ok(lengths) => {
                    let update = Update::QueueDepth {
                        queue: queue.clone(),
                        depth: lengths.iter().sum(),
                        at_ms: now_ms(),
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
    fn priorities_land_in_kombu_buckets() {
        assert_eq!(bucket_key("", "billing", 0), "billing");
        assert_eq!(bucket_key("", "billing", 2), "billing");
        assert_eq!(bucket_key("", "billing", 3), "billing\x06\x163");
        assert_eq!(bucket_key("", "billing", 5), "billing\x06\x163");
        assert_eq!(bucket_key("", "billing", 7), "billing\x06\x166");
        assert_eq!(bucket_key("p:", "billing", 9), "p:billing\x06\x169");
        assert_eq!(bucket_key("", "billing", 200), "billing\x06\x169");
    }
}
