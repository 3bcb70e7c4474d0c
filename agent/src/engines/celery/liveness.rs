//! What the event stream says about workers and their tasks, beyond each single event: which
//! workers went silent (offline, their started tasks lost), which tasks finished recently (so a
//! cancel can say "already finished"), and how many task events never arrived.
//!
//! Missed events are counted from Celery's heartbeats: `processed` is the number of tasks a
//! worker has started since it booted. If it runs ahead of the `task-started` events received
//! from that worker, the difference was lost (a subscriber gap, Redis cutting a slow
//! subscriber off, ...). Worker-side task events are buffered for up to a second or so before
//! they are sent, so each heartbeat is compared two heartbeats (~4 s) late; the count is a
//! lower bound (one event per task started unseen).

use std::collections::{HashMap, VecDeque};

use taskward_shared::events::{TaskState, TaskUpdate, Update, WorkerUpdate};

/// A worker silent this long is offline (Celery heartbeats every 2 s: five missed), and the
/// tasks it had started are lost.
pub const OFFLINE_AFTER_MS: i64 = 10_000;

/// Heartbeats of delay before a worker's `processed` is compared with the starts seen.
const HEARTBEAT_LAG: usize = 2;

/// Finished tasks remembered (for cancel's "already finished").
const FINISHED_MAX: usize = 100_000;

/// Per-worker count of started tasks versus what its heartbeats claim.
#[derive(Default)]
struct Tally {
    /// Task events have been seen from this worker (events are on; counting is meaningful).
    counting: bool,
    /// `processed` at the heartbeat counting starts from.
    base: i64,
    /// Recent `processed` values, oldest first.
    recent: VecDeque<i64>,
    /// `task-started` events seen since `base`.
    started: i64,
    /// Missed starts already reported.
    reported: i64,
}

impl Tally {
    fn rebase(&mut self, processed: i64) {
        self.base = processed;
        self.recent.clear();
        self.started = 0;
        self.reported = 0;
    }

    /// Takes a heartbeat's `processed`; returns newly detected missed starts.
    fn heartbeat(&mut self, processed: i64) -> u64 {
        if !self.counting || processed < self.base {
            // Events not flowing yet, or the worker restarted (its count began again).
            self.rebase(processed);
            return 0;
        }
        self.recent.push_back(processed);
        if self.recent.len() <= HEARTBEAT_LAG {
            return 0;
        }
        let lagged = self.recent.pop_front().unwrap_or(processed);
        let missed = lagged - self.base - self.started;
        if missed > self.reported {
            let new = missed - self.reported;
            self.reported = missed;
            u64::try_from(new).unwrap_or(0)
        } else {
            0
        }
    }
}

/// The liveness state of one adapter.
#[derive(Default)]
pub struct Liveness {
    last_seen: HashMap<String, i64>,
    started: HashMap<String, String>,
    tallies: HashMap<String, Tally>,
    finished: HashMap<String, TaskState>,
    finished_order: VecDeque<String>,
    /// Task events known to be missed, cumulative.
    pub missed_events: u64,
}

impl Liveness {
    /// Notes what an update says; returns the worker when it is a worker's sign of life.
    pub fn observe(&mut self, update: &Update, now: i64) -> Option<String> {
        match update {
            Update::Worker(w) if w.online => {
                self.last_seen.insert(w.name.clone(), now);
                if let Some(processed) = w.processed {
                    let missed = self
                        .tallies
                        .entry(w.name.clone())
                        .or_default()
                        .heartbeat(processed);
                    if missed > 0 {
                        self.missed_events += missed;
                        tracing::warn!(worker = %w.name, missed, total = self.missed_events,
                            "task events missed: the worker started tasks this agent never saw start");
                    }
                }
                return Some(w.name.clone());
            }
            Update::Worker(w) => {
                self.last_seen.remove(&w.name);
                self.tallies.remove(&w.name);
            }
            Update::Task(t) => self.observe_task(t, now),
            Update::QueueDepth { .. } => {}
        }
        None
    }

    fn observe_task(&mut self, t: &TaskUpdate, now: i64) {
        if let Some(worker) = &t.worker {
            self.last_seen.insert(worker.clone(), now);
            let tally = self.tallies.entry(worker.clone()).or_default();
            tally.counting = true;
            if t.state == Some(TaskState::Started) {
                tally.started += 1;
            }
        }
        match t.state {
            Some(TaskState::Started) => {
                if let Some(worker) = &t.worker {
                    self.started.insert(t.task_id.clone(), worker.clone());
                }
            }
            Some(TaskState::Received) | None => {}
            Some(state) => {
                self.started.remove(&t.task_id);
                if self.finished.insert(t.task_id.clone(), state).is_none() {
                    self.finished_order.push_back(t.task_id.clone());
                    if self.finished_order.len() > FINISHED_MAX
                        && let Some(old) = self.finished_order.pop_front()
                    {
                        self.finished.remove(&old);
                    }
                }
            }
        }
    }

    /// How a recently finished task ended, if this agent saw it end.
    pub fn finished(&self, task_id: &str) -> Option<TaskState> {
        self.finished.get(task_id).copied()
    }

    /// Workers currently considered online.
    pub fn online(&self) -> Vec<String> {
        let mut workers: Vec<String> = self.last_seen.keys().cloned().collect();
        workers.sort();
        workers
    }

    /// Workers silent past the limit, with the updates that mark them offline and their
    /// started tasks lost.
    pub fn expire(&mut self, now: i64) -> Vec<Update> {
        let dead: Vec<String> = self
            .last_seen
            .iter()
            .filter(|(_, seen)| now - **seen > OFFLINE_AFTER_MS)
            .map(|(name, _)| name.clone())
            .collect();
        let mut updates = Vec::new();
        for worker in dead {
            self.last_seen.remove(&worker);
            self.tallies.remove(&worker);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn task(task: &str, worker: &str, state: TaskState) -> Update {
        Update::Task(Box::new(TaskUpdate {
            engine: "celery".into(),
            task_id: task.into(),
            state: Some(state),
            worker: Some(worker.into()),
            ..TaskUpdate::default()
        }))
    }

    fn heartbeat(worker: &str, processed: Option<i64>) -> Update {
        Update::Worker(WorkerUpdate {
            name: worker.into(),
            online: true,
            processed,
            ..WorkerUpdate::default()
        })
    }

    #[test]
    fn silent_workers_go_offline_and_their_started_tasks_are_lost() {
        let mut live = Liveness::default();
        live.observe(&task("t1", "w1", TaskState::Started), 0);
        live.observe(&task("t2", "w2", TaskState::Started), 0);
        live.observe(&heartbeat("w2", None), 9_000);
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

    #[test]
    fn starts_the_heartbeats_claim_but_no_event_showed_are_counted_once() {
        let mut live = Liveness::default();
        // Before any task event (events off), heartbeats only move the base.
        live.observe(&heartbeat("w", Some(5)), 0);
        live.observe(&heartbeat("w", Some(9)), 0);
        live.observe(&task("a", "w", TaskState::Started), 0);
        live.observe(&heartbeat("w", Some(9)), 0);
        // The worker's count goes 9 -> 13 (four starts); the agent sees two of them.
        live.observe(&task("b", "w", TaskState::Started), 0);
        live.observe(&heartbeat("w", Some(13)), 0);
        live.observe(&heartbeat("w", Some(13)), 0);
        assert_eq!(live.missed_events, 0, "compared two heartbeats late");
        live.observe(&heartbeat("w", Some(13)), 0);
        live.observe(&heartbeat("w", Some(13)), 0);
        // 13 - 9 = 4 started, 2 seen: 2 missed.
        assert_eq!(live.missed_events, 2);
        live.observe(&heartbeat("w", Some(13)), 0);
        assert_eq!(live.missed_events, 2, "counted once");
        // A restarted worker counts from zero again, without a false alarm.
        live.observe(&heartbeat("w", Some(0)), 0);
        live.observe(&heartbeat("w", Some(1)), 0);
        live.observe(&task("c", "w", TaskState::Started), 0);
        for _ in 0..4 {
            live.observe(&heartbeat("w", Some(1)), 0);
        }
        assert_eq!(live.missed_events, 2);
    }

    #[test]
    fn finished_tasks_are_remembered() {
        let mut live = Liveness::default();
        live.observe(&task("t", "w", TaskState::Started), 0);
        assert_eq!(live.finished("t"), None);
        live.observe(&task("t", "w", TaskState::Succeeded), 0);
        assert_eq!(live.finished("t"), Some(TaskState::Succeeded));
    }
}
