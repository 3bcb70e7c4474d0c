//! A session's event writer: the session decodes event batches and hands them here; this task
//! commits them in groups and reports which batches are stored, for the session to acknowledge.
//!
//! Decoding and writing thus overlap. SQLite has one writer connection, so the writer's speed
//! bounds ingest; before, it stood idle while the session decoded the next frames.

use taskward_shared::events::EventBatch;
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::store::agents::Agent;
use crate::store::{now_ms, tasks};

/// Most updates applied in one transaction when several event batches are waiting: a task's
/// received/started/succeeded updates then usually collapse into one row write. Merging is
/// order-insensitive and idempotent, so concatenating batches changes nothing else.
const GROUP_COMMIT_UPDATES: usize = 20_000;

/// Batches decoded but not yet written. The agent keeps at most 16 unacknowledged, so this
/// only bounds a misbehaving agent.
const QUEUED_BATCHES: usize = 64;

/// The session's ends of the writer.
pub struct Writer {
    /// Decoded batches, in the order received.
    pub batches: mpsc::Sender<EventBatch>,
    /// Seqs of stored batches, in order; an error ends the session (the agent resends what
    /// was not acknowledged, and merging makes the resend harmless).
    pub stored: mpsc::Receiver<Result<Vec<u64>, String>>,
}

/// Starts the writer of one session. It stops when the session drops [`Writer::batches`],
/// after writing what was queued.
pub fn start(state: AppState, agent: Agent) -> Writer {
    let (batches, queued) = mpsc::channel(QUEUED_BATCHES);
    let (report, stored) = mpsc::channel(QUEUED_BATCHES);
    tokio::spawn(write_groups(state, agent, queued, report));
    Writer { batches, stored }
}

async fn write_groups(
    state: AppState,
    agent: Agent,
    mut queued: mpsc::Receiver<EventBatch>,
    report: mpsc::Sender<Result<Vec<u64>, String>>,
) {
    while let Some(first) = queued.recv().await {
        let mut seqs = vec![first.seq];
        let mut dropped = first.dropped_total;
        let mut updates = first.updates;
        while updates.len() < GROUP_COMMIT_UPDATES {
            let Ok(more) = queued.try_recv() else { break };
            seqs.push(more.seq);
            dropped = dropped.max(more.dropped_total);
            updates.extend(more.updates);
        }
        let (project_id, agent_id) = (agent.project_id.clone(), agent.id.clone());
        let events = updates.len() as u64;
        let written = state
            .store
            .write("ingest_events", move |conn| {
                tasks::apply_updates(conn, &project_id, &agent_id, &updates, now_ms())?;
                tasks::record_dropped(conn, &agent_id, dropped)
            })
            .await;
        let outcome = match written {
            Ok(()) => {
                state.metrics.record_ingest(&agent.name, events, dropped);
                Ok(seqs)
            }
            Err(e) => Err(format!("cannot store events: {e}")),
        };
        let failed = outcome.is_err();
        if report.send(outcome).await.is_err() || failed {
            return;
        }
    }
}
