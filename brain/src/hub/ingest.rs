//! A session's event writer: the session decodes event batches and hands them here; this task
//! commits them in groups and reports which batches are stored, for the session to acknowledge.
//!
//! Decoding and writing thus overlap. SQLite has one writer connection, so the writer's speed
//! bounds ingest; before, it stood idle while the session decoded the next frames.

use std::sync::Arc;

use taskward_shared::events::{EventBatch, Update};
use tokio::sync::mpsc;

use crate::app::AppState;
use crate::store::agents::{self, Agent};
use crate::store::{StoreError, now_ms, tasks};

/// Most updates applied in one transaction when several event batches are waiting: a task's
/// received/started/succeeded updates then usually collapse into one row write. Merging is
/// order-insensitive and idempotent, so concatenating batches changes nothing else.
const GROUP_COMMIT_UPDATES: usize = 20_000;

/// A group waits for more batches up to this long after its first, until it holds
/// [`GROUP_TARGET_UPDATES`]: per event, a transaction of a few hundred updates costs about twice
/// one of 10,000 (commit work, and a task's events split across transactions become an insert
/// and updates), so taking only what was already queued kept groups small and the writer
/// saturated at 50,000 events/s. Events become visible up to this much later.
const GROUP_LINGER: std::time::Duration = std::time::Duration::from_millis(100);

/// See [`GROUP_LINGER`].
const GROUP_TARGET_UPDATES: usize = 10_000;

/// Batches decoded but not yet written. The agent keeps at most 64 batches (and 40,000
/// updates) unacknowledged, so a conforming agent never fills it; past it the session stops
/// reading the socket until the writer catches up.
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
        let deadline = tokio::time::Instant::now() + GROUP_LINGER;
        while updates.len() < GROUP_COMMIT_UPDATES {
            let more = match queued.try_recv() {
                Ok(more) => more,
                Err(_) if updates.len() >= GROUP_TARGET_UPDATES => break,
                Err(_) => match tokio::time::timeout_at(deadline, queued.recv()).await {
                    Ok(Some(more)) => more,
                    Ok(None) | Err(_) => break,
                },
            };
            seqs.push(more.seq);
            dropped = dropped.max(more.dropped_total);
            updates.extend(more.updates);
        }
        for update in &mut updates {
            update.make_storable();
        }
        let mut refused = refuse_implausible(&state, &agent, &mut updates);
        let dropped = plausible_dropped(&agent, dropped);
        let events = updates.len() as u64;
        let outcome = match store_group(&state, &agent, updates, dropped).await {
            Ok(rejected) => {
                state.metrics.record_ingest(
                    &agent.name,
                    events - rejected.count,
                    dropped.unwrap_or_default(),
                );
                refused.add(rejected);
                record_refused(&state, &agent, refused).await.map(|()| seqs)
            }
            Err(e) => Err(format!("cannot store events: {e}")),
        };
        let failed = outcome.is_err();
        if report.send(outcome).await.is_err() || failed {
            return;
        }
    }
}

/// Stores a group in one transaction. When the store refuses it for its content (not for being
/// unreachable), the group is split in halves and each half stored alone, down to single
/// updates: an update refused even alone is skipped, counted and logged, so one bad value
/// cannot hold up everything its agent sends after it (the agent would resend the batch
/// forever). Costs a few extra transactions per bad update, and nothing when none is bad.
/// Returns how many updates were skipped; `Err` only when the store is unavailable (the agent
/// then resends, and merging makes the resend harmless).
async fn store_group(
    state: &AppState,
    agent: &Agent,
    updates: Vec<Update>,
    dropped: Option<u64>,
) -> Result<Refused, StoreError> {
    let updates = Arc::new(updates);
    let mut pending: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
    pending.push(0..updates.len());
    let mut rejected = Refused::default();
    while let Some(range) = pending.pop() {
        let (project_id, agent_id) = (agent.project_id.clone(), agent.id.clone());
        let group = updates.clone();
        let part = range.clone();
        let written = state
            .store
            .write("ingest_events", move |conn| {
                tasks::apply_updates(conn, &project_id, &agent_id, &group[part], now_ms())?;
                match dropped {
                    Some(dropped) => tasks::record_dropped(conn, &agent_id, dropped),
                    None => Ok(()),
                }
            })
            .await;
        match written {
            Ok(()) => {}
            Err(StoreError::Unavailable(why)) => return Err(StoreError::Unavailable(why)),
            Err(err) if range.len() == 1 => {
                let update = describe(&updates[range.start]);
                tracing::error!(agent = %agent.name, %update,
                    %err, "the store refused an update even alone; skipped");
                rejected.add(Refused {
                    count: 1,
                    latest: Some(format!("{update}: the store refused it")),
                });
            }
            Err(_) => {
                let middle = range.start + range.len() / 2;
                pending.push(middle..range.end);
                pending.push(range.start..middle);
            }
        }
    }
    if rejected.count > 0 {
        state.metrics.record_rejected(&agent.name, rejected.count);
    }
    Ok(rejected)
}

/// Updates of one group the brain refused to store: how many, and the reason of the last.
#[derive(Debug, Default)]
struct Refused {
    count: u64,
    latest: Option<String>,
}

impl Refused {
    fn add(&mut self, more: Refused) {
        self.count += more.count;
        if more.latest.is_some() {
            self.latest = more.latest;
        }
    }
}

/// Adds refused updates to the agent's tally (`rejected_events` and `last_rejection` in the
/// API and on the agents page), so an operator sees that something it sent was not recorded
/// without reading the brain's log. Nothing to write when nothing was refused.
async fn record_refused(state: &AppState, agent: &Agent, refused: Refused) -> Result<(), String> {
    let Some(reason) = refused.latest else {
        return Ok(());
    };
    let agent_id = agent.id.clone();
    state
        .store
        .write("record_rejected_events", move |conn| {
            agents::record_rejected(conn, &agent_id, refused.count, &reason)
        })
        .await
        .map_err(|e| format!("cannot record refused events: {e}"))
}

/// Removes the updates whose numbers cannot be true (see
/// [`taskward_shared::events::plausible`]): each is skipped and counted as rejected, and the
/// first reason of the group is logged (a flood of them must not flood the log).
fn refuse_implausible(state: &AppState, agent: &Agent, updates: &mut Vec<Update>) -> Refused {
    let now = now_ms();
    let before = updates.len();
    let mut first = None;
    updates.retain(|update| match update.implausible(now) {
        None => true,
        Some(why) => {
            first.get_or_insert_with(|| (describe(update), why));
            false
        }
    });
    let refused = (before - updates.len()) as u64;
    let Some((update, why)) = first else {
        return Refused::default();
    };
    tracing::warn!(agent = %agent.name, %update, %why, refused,
        "refused updates whose values cannot be true; skipped");
    state.metrics.record_rejected(&agent.name, refused);
    Refused {
        count: refused,
        latest: Some(format!("{update}: {why}")),
    }
}

/// The agent's cumulative dropped-event count, unless it is beyond what any agent can have
/// dropped (the store's column is signed 64-bit; a larger value once showed as 0). Such a
/// count is logged and left unrecorded.
fn plausible_dropped(agent: &Agent, dropped: u64) -> Option<u64> {
    if i64::try_from(dropped).is_ok() {
        return Some(dropped);
    }
    tracing::warn!(agent = %agent.name, dropped, "refused an impossible dropped-event count");
    None
}

/// Which update it was, for the log (never its field values, which may hold secrets).
fn describe(update: &Update) -> String {
    match update {
        Update::Task(task) => format!("task {}/{}", task.engine, task.task_id),
        Update::Worker(worker) => format!("worker {}", worker.name),
        Update::QueueDepth { queue, .. } => format!("queue {queue}"),
    }
}
