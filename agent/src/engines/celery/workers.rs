//! Getting to know workers: each new worker is asked to send task events (`enable_events`,
//! when the config allows; workers started without `-E` send heartbeats only) and probed for
//! its pool and queues (`stats`, `active_queues`); every online worker is probed again each
//! minute, so pool resizes and consumer changes show up.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use taskward_shared::events::{Update, WorkerUpdate};
use tokio::sync::mpsc;

use super::liveness::Liveness;
use super::pidbox::Pidbox;

/// How often online workers are probed again.
const REFRESH_EVERY: Duration = Duration::from_secs(60);

/// The probe service of one adapter.
pub struct Probe {
    pidbox: Pidbox,
    enable_events: bool,
    /// Workers greeted (or being greeted); a worker that did not answer is removed, so a later
    /// heartbeat greets it again (its control inbox may not be ready when it first says hello).
    greeted: Mutex<HashSet<String>>,
    /// Workers that answered a probe: real Celery workers on this broker.
    responsive: Mutex<HashSet<String>>,
    sink: mpsc::Sender<Update>,
}

impl Probe {
    /// A probe service reporting worker details into `sink`.
    pub fn new(pidbox: Pidbox, enable_events: bool, sink: mpsc::Sender<Update>) -> Arc<Probe> {
        Arc::new(Probe {
            pidbox,
            enable_events,
            greeted: Mutex::new(HashSet::new()),
            responsive: Mutex::new(HashSet::new()),
            sink,
        })
    }

    /// Whether the worker has answered a probe.
    pub fn responsive(&self, worker: &str) -> bool {
        self.responsive
            .lock()
            .expect("responsive lock")
            .contains(worker)
    }

    /// Greets a worker once (cheap when already greeted: called for every heartbeat).
    pub fn greet(self: &Arc<Self>, worker: String) {
        if !self
            .greeted
            .lock()
            .expect("greeted lock")
            .insert(worker.clone())
        {
            return;
        }
        let probe = self.clone();
        tokio::spawn(async move {
            if probe.enable_events {
                let answer = probe
                    .pidbox
                    .call("enable_events", json!({}), Some(vec![worker.clone()]))
                    .await;
                match answer.as_ref().map(|r| r.first()) {
                    Ok(Some((w, reply))) => {
                        tracing::info!(worker = %w, reply = %reply, "asked the worker to send task events (enable_events)");
                    }
                    other => {
                        tracing::warn!(%worker, outcome = ?other, "enable_events got no answer; will ask again");
                        probe.greeted.lock().expect("greeted lock").remove(&worker);
                        return;
                    }
                }
            }
            if !probe.refresh(&worker).await {
                probe.greeted.lock().expect("greeted lock").remove(&worker);
            }
        });
    }

    /// Probes every online worker each [`REFRESH_EVERY`].
    pub fn refresh_every(self: &Arc<Self>, liveness: Arc<Mutex<Liveness>>) {
        let probe = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REFRESH_EVERY);
            tick.tick().await;
            loop {
                tick.tick().await;
                let online = liveness.lock().expect("liveness lock").online();
                for worker in online {
                    probe.refresh(&worker).await;
                }
                if probe.sink.is_closed() {
                    return;
                }
            }
        });
    }

    /// Reports a worker's pool kind, size and queues; false if it did not answer.
    async fn refresh(&self, worker: &str) -> bool {
        let Some(update) = probe(&self.pidbox, worker).await else {
            return false;
        };
        self.responsive
            .lock()
            .expect("responsive lock")
            .insert(worker.to_owned());
        let _ = self.sink.send(update).await;
        true
    }
}

/// A worker's pool kind, size and consumed queues, from `stats` and `active_queues`.
async fn probe(pidbox: &Pidbox, worker: &str) -> Option<Update> {
    let only = Some(vec![worker.to_owned()]);
    let stats = pidbox.call("stats", json!({}), only.clone()).await.ok()?;
    let queues = pidbox.call("active_queues", json!({}), only).await.ok()?;
    let stats = &stats.first()?.1;
    let implementation = stats["pool"]["implementation"].as_str().unwrap_or_default();
    // "celery.concurrency.prefork:TaskPool" -> "prefork"
    let pool = implementation
        .rsplit_once(':')
        .map(|(module, _)| module.rsplit('.').next().unwrap_or(module).to_owned());
    // The pool's processes now (pool_grow/pool_shrink change it), else the configured size.
    let concurrency = stats["pool"]["processes"]
        .as_array()
        .map(|p| p.len() as i32)
        .or_else(|| stats["pool"]["max-concurrency"].as_i64().map(|n| n as i32));
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
        at_ms: super::now_ms(),
        pool,
        concurrency,
        queues: queue_names,
        processed: None,
    }))
}
