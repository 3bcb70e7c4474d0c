//! The Celery adapter over Redis. This release reads events (tasks and workers) from the
//! broker's pub/sub; commands through pidbox come next, so until then they fail with a clear
//! reason instead of being attempted.

pub mod events;

use std::time::Duration;

use futures_util::StreamExt;
use taskward_shared::command::{Command, CommandKind, IssuedCommand};
use taskward_shared::events::Update;
use tokio::sync::mpsc;

use super::{BoxFuture, EngineAdapter};

/// The adapter.
pub struct CeleryAdapter {
    broker: String,
    keyprefix: String,
    queues: Vec<String>,
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
    ) -> Result<CeleryAdapter, String> {
        redis::Client::open(broker).map_err(|e| format!("broker URL {broker:?}: {e}"))?;
        Ok(CeleryAdapter {
            broker: broker.to_owned(),
            keyprefix: keyprefix.to_owned(),
            queues,
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
        false
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
        tokio::spawn(async move {
            loop {
                match subscribe(&broker, &pattern, &sink).await {
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
        _issued: &'a IssuedCommand,
    ) -> BoxFuture<'a, Result<String, String>> {
        let kind = command.kind();
        Box::pin(async move {
            Err(format!(
                "{kind} through Celery's remote control is not available in this release"
            ))
        })
    }
}

/// One subscription: reads messages as fast as Redis sends them and hands each to the parser;
/// the spool behind `sink` never makes this loop wait on the brain.
async fn subscribe(broker: &str, pattern: &str, sink: &mpsc::Sender<Update>) -> Result<(), String> {
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
            Ok(updates) => {
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
