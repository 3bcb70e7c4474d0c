//! The Celery adapter: events (tasks, workers) from the broker, the real arguments of tasks
//! kept on this host (`vault`, filled from event reprs and `query_task`), queue depths,
//! dead-worker detection and missed-event counting (`liveness`), and every command verb
//! (`commands`, `retry`) through Celery's remote control (pidbox), republishing and purges.
//!
//! Celery's meaning is written once, over the broker seam in [`transport`]; a broker is one
//! file there (Redis and AMQP/RabbitMQ).
//!
//! # Layout
//! - [`transport`]: the `Transport` trait (events, control calls, publish, depth, purge),
//!   kombu's envelope, and the Redis and AMQP transports.
//! - [`events`]: event bodies into task and worker updates (borrowed fields, no JSON tree).
//! - [`pidbox`]: remote-control requests, ticketed replies and what a reply means.
//! - [`task_message`]: the protocol-v2 task message (headers, body, properties).
//! - `commands`, `retry`: the command verbs.
//! - [`lookup`], `workers`: what events do not say, asked of the workers (`query_task`,
//!   `active`/`reserved`, `stats`/`active_queues`, `enable_events`).
//! - `health`: whether the broker answers, checked on its own and reported on change.
//! - [`liveness`]: dead workers, recently finished tasks, missed events.
//! - [`vault`], [`redact`], [`pyrepr`]: original arguments kept here, cleaned for the brain,
//!   read from Python reprs.

mod attempts;
mod commands;
pub mod events;
#[cfg(test)]
mod fixtures;
mod health;
pub mod liveness;
pub mod lookup;
pub mod pidbox;
pub mod pyrepr;
pub mod redact;
mod retry;
pub mod task_message;
pub mod transport;
pub mod vault;
mod workers;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::crypto::random_bytes;
use taskward_shared::events::{TaskState, TaskUpdate, Update};
use taskward_shared::protocol::BrokerHealth;
use tokio::sync::mpsc;

use super::{BoxFuture, EngineAdapter, EngineError};
use crate::config::BrokerTls;
use liveness::Liveness;
use lookup::Lookup;
use pidbox::Pidbox;
use transport::Transport;
use vault::{Original, Vault};

/// The adapter.
pub struct CeleryAdapter {
    /// The broker; every part of the adapter shares it (and its connections).
    transport: Arc<dyn Transport>,
    pidbox: Pidbox,
    queues: Vec<String>,
    enable_events: bool,
    redactor: redact::Redactor,
    vault: Arc<Vault>,
    liveness: Arc<Mutex<Liveness>>,
    /// Whether the broker answers; the sender until `start_events` hands it to the checker.
    health_tx: Mutex<Option<tokio::sync::watch::Sender<BrokerHealth>>>,
    health: tokio::sync::watch::Receiver<BrokerHealth>,
}

pub(crate) use crate::clock::now_ms;

/// A random UUID-shaped id (task ids, reply keys, tickets, delivery tags).
pub fn uuid_like() -> String {
    let h = hex::encode(random_bytes::<16>());
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// How often queue depths are read.
const DEPTH_EVERY: Duration = Duration::from_secs(3);

/// A repr this long may have been cut by Celery's `saferepr` (about 1024 characters) even if
/// what is left still reads as a literal: only the worker's copy is trusted then.
const REPR_TRUST_MAX: usize = 1000;

impl CeleryAdapter {
    /// An adapter for the broker at `broker` (`redis://[:password@]host:port/db`,
    /// `rediss://` for TLS, or `amqp://user:password@host:port/vhost`), with kombu's `global_keyprefix` if the app sets one, keeping
    /// original arguments in `vault`.
    pub fn new(
        broker: &str,
        tls: &BrokerTls,
        keyprefix: &str,
        queues: Vec<String>,
        enable_events: bool,
        redactor: redact::Redactor,
        vault: Vault,
    ) -> Result<CeleryAdapter, String> {
        let transport = transport::open(broker, keyprefix, tls)?;
        let (health_tx, health) = health::channel();
        Ok(CeleryAdapter {
            health_tx: Mutex::new(Some(health_tx)),
            health,
            pidbox: Pidbox::new(transport.clone()),
            transport,
            queues,
            enable_events,
            redactor,
            vault: Arc::new(vault),
            liveness: Arc::new(Mutex::new(Liveness::default())),
        })
    }
}

/// Checks a broker URL and connects to it once: `enroll` calls this before it spends the
/// token, so a typo, a wrong password or a missing vhost is an error naming the broker, not a
/// dead `run` after enrollment.
pub async fn reach_broker(broker: &str, keyprefix: &str, tls: &BrokerTls) -> Result<(), String> {
    let transport = transport::open(broker, keyprefix, tls)?;
    transport.reach().await.map_err(|e| {
        // rustls names the failure (`UnknownIssuer`, …); say which setting decides it.
        let text = e.to_string();
        let hint = if text.contains("invalid peer certificate") {
            match &tls.ca_file {
                Some(ca) => format!(
                    " (the broker's certificate does not chain to --broker-ca-file {})",
                    ca.display()
                ),
                None => " (the broker's certificate does not chain to the web PKI roots; name \
                          its CA with --broker-ca-file)"
                    .to_owned(),
            }
        } else {
            String::new()
        };
        format!(
            "--broker {:?} cannot be reached: {text}{hint}",
            transport::without_password(broker)
        )
    })
}

impl EngineAdapter for CeleryAdapter {
    fn name(&self) -> &'static str {
        "celery"
    }

    fn supports(&self, _kind: CommandKind) -> bool {
        true
    }

    /// Subscribes to every event and forwards updates; resubscribes after errors (events
    /// published meanwhile are lost to every subscriber: brokers keep none for a consumer that
    /// is gone), then reconciles in-flight tasks from the workers.
    fn start_events(&self, sink: mpsc::Sender<Update>) {
        let (transport, queues, depth_sink) =
            (self.transport.clone(), self.queues.clone(), sink.clone());
        tokio::spawn(async move { report_depths(&*transport, &queues, &depth_sink).await });
        if let Some(tx) = self.health_tx.lock().expect("health lock").take() {
            tokio::spawn(health::watch(self.transport.clone(), tx));
        }
        let lookup = Lookup::new(
            self.pidbox.clone(),
            self.vault.clone(),
            self.redactor.clone(),
            sink.clone(),
        );
        lookup.start();
        let probe = workers::Probe::new(self.pidbox.clone(), self.enable_events, sink.clone());
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
            attempts: Mutex::new(attempts::Attempts::default()),
        };
        let transport = self.transport.clone();
        tokio::spawn(async move {
            let mut gaps = 0u64;
            loop {
                match reader.subscribe(&*transport, gaps > 0).await {
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

    fn broker_health(&self) -> Option<tokio::sync::watch::Receiver<BrokerHealth>> {
        Some(self.health.clone())
    }

    /// Task events known missed (from heartbeats) plus event messages the broker dropped
    /// because the agent fell behind. A start lost to overflow may count in both (an
    /// overcount, never a silent loss).
    fn lost_events(&self) -> u64 {
        self.liveness.lock().expect("liveness lock").missed_events + self.transport.overflowed()
    }

    fn execute<'a>(
        &'a self,
        command: &'a Command,
        issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, EngineError>> {
        Box::pin(async move { self.run(command, issued).await })
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
    attempts: Mutex<attempts::Attempts>,
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

    /// One subscription: reads messages as fast as the broker sends them and hands each to the
    /// parser; the spool behind `sink` never makes this loop wait on the brain. After a gap
    /// (`reconcile`), asks the workers which tasks are in flight.
    async fn subscribe(&self, transport: &dyn Transport, reconcile: bool) -> Result<(), String> {
        let mut bodies = transport.events().await.map_err(|e| e.to_string())?;
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
        while let Some(body) = bodies.next().await {
            let parsed = match body {
                Ok(body) => events::parse_body(&body).map_err(|e| e.to_string()),
                Err(unreadable) => Err(unreadable.to_string()),
            };
            let updates = match parsed {
                Ok(updates) => updates,
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable event");
                    continue;
                }
            };
            if !self.hand_on(updates).await {
                return Ok(());
            }
        }
        Err("the broker closed the subscription".into())
    }

    /// Stamps each task event with its attempt, captures arguments, tracks liveness and greets
    /// new workers for one message's updates, then sends them on; false once the sink is
    /// closed (the agent is stopping).
    async fn hand_on(&self, mut updates: Vec<Update>) -> bool {
        let mut extra = Vec::new();
        {
            let mut attempts = self.attempts.lock().expect("attempts lock");
            for update in &mut updates {
                if let Update::Task(task) = update {
                    attempts.stamp(task);
                }
            }
        }
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
                return false;
            }
        }
        true
    }
}

/// Reads every watched queue's depth (all priorities) every few seconds.
async fn report_depths(transport: &dyn Transport, queues: &[String], sink: &mpsc::Sender<Update>) {
    let mut tick = tokio::time::interval(DEPTH_EVERY);
    loop {
        tick.tick().await;
        for queue in queues {
            match transport.queue_depth(queue).await {
                Ok(depth) => {
                    let update = Update::QueueDepth {
                        queue: queue.clone(),
                        depth,
                        at_ms: now_ms(),
                    };
                    if sink.send(update).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read queue depths");
                    break;
                }
            }
        }
    }
}
