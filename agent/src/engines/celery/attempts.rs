//! Which run (attempt) of a task each Celery event belongs to.
//!
//! Celery names the attempt only on `task-received` (`retries`: 0, then 1, 2…). A retry
//! republishes the task before the attempt that asked for it reports `task-retried`, so when
//! another worker takes the retry, its `task-received`, `task-started` and even `task-failed`
//! can reach the broker before the first worker's `task-retried`
//! (`../shared/docs/celery-wire.md`, section 4, "retry ×2 then fail"). Ordered by time alone, the
//! late `retried` would then overwrite the retry's outcome. So every task event is stamped with
//! its attempt, and the brain lets a later attempt win over an earlier one whatever the clocks.
//!
//! One worker runs one attempt of a task at a time, and its events reach the broker in the
//! order it sent them: an attempt's `task-started` follows its own `task-received`, and its
//! outcome (`retried`, `succeeded`, `failed`, `revoked`) follows its `task-started`. The next
//! attempt's `task-received` may come before or after this attempt's outcome, so the outcome
//! takes the attempt that was *started*, not the last one received.

use std::collections::HashMap;

use taskward_shared::events::{TaskState, TaskUpdate};

/// Tasks in flight tracked at most; past it the table starts over (the events of the tasks
/// then in flight go unstamped, and the brain orders them by time as before).
const TRACKED_MAX: usize = 100_000;

/// The attempts of one task on one worker.
#[derive(Debug, Clone, Copy)]
struct OnWorker {
    /// The last attempt this worker received.
    received: i32,
    /// The attempt this worker started last, if any.
    running: Option<i32>,
}

impl OnWorker {
    /// The attempt an outcome belongs to: the one started, or (revoked before it started)
    /// the one received.
    fn ending(self) -> i32 {
        self.running.unwrap_or(self.received)
    }

    /// Whether the worker holds no attempt beyond the one that just ended.
    fn idle_after(self) -> bool {
        self.running.is_none_or(|running| self.received <= running)
    }
}

/// Attempts by task and worker, for the tasks in flight.
#[derive(Debug, Default)]
pub struct Attempts {
    by_task: HashMap<(String, String), OnWorker>,
}

impl Attempts {
    /// Stamps `task` with its attempt (`retries`) where Celery left it out, and remembers what
    /// it says. Events without a worker, or of a task not received here, stay unstamped.
    pub fn stamp(&mut self, task: &mut TaskUpdate) {
        let (Some(state), Some(worker)) = (task.state, task.worker.as_ref()) else {
            return;
        };
        let key = (task.task_id.clone(), worker.clone());
        match state {
            TaskState::Received => {
                let Some(attempt) = task.retries else { return };
                if self.by_task.len() >= TRACKED_MAX && !self.by_task.contains_key(&key) {
                    self.by_task.clear();
                }
                self.by_task
                    .entry(key)
                    .and_modify(|on_worker| on_worker.received = attempt)
                    .or_insert(OnWorker {
                        received: attempt,
                        running: None,
                    });
            }
            TaskState::Started => {
                if let Some(on_worker) = self.by_task.get_mut(&key) {
                    on_worker.running = Some(on_worker.received);
                    task.retries.get_or_insert(on_worker.received);
                }
            }
            TaskState::Retried
            | TaskState::Succeeded
            | TaskState::Failed
            | TaskState::Cancelled
            | TaskState::Lost => {
                if let Some(on_worker) = self.by_task.get(&key).copied() {
                    task.retries.get_or_insert(on_worker.ending());
                    // Done on this worker, unless it already received a later attempt.
                    if on_worker.idle_after() {
                        self.by_task.remove(&key);
                    }
                }
            }
        }
    }

    /// Tasks tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_task.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: TaskState, worker: &str, retries: Option<i32>) -> TaskUpdate {
        TaskUpdate {
            engine: "celery".into(),
            task_id: "flaky-1".into(),
            state: Some(state),
            worker: Some(worker.into()),
            retries,
            ..TaskUpdate::default()
        }
    }

    fn stamped(attempts: &mut Attempts, mut task: TaskUpdate) -> Option<i32> {
        attempts.stamp(&mut task);
        task.retries
    }

    /// Stamps `events` in order on a fresh tracker: the attempt each was given, and how many
    /// tasks the tracker still holds after the last.
    fn stamp_all(events: impl IntoIterator<Item = TaskUpdate>) -> (Vec<Option<i32>>, usize) {
        let mut attempts = Attempts::default();
        let seen = events
            .into_iter()
            .map(|e| stamped(&mut attempts, e))
            .collect();
        (seen, attempts.len())
    }

    /// The order the issue saw: the retry ran and failed on worker B before worker A's
    /// `task-retried` for the first run arrived. Each event keeps the attempt it belongs to.
    #[test]
    fn a_late_retried_keeps_the_attempt_it_ended() {
        use TaskState::*;
        let (seen, held) = stamp_all([
            event(Received, "a", Some(0)),
            event(Started, "a", None),
            event(Received, "b", Some(1)),
            event(Started, "b", None),
            event(Failed, "b", None),
            event(Retried, "a", None),
        ]);
        assert_eq!(seen, [Some(0), Some(0), Some(1), Some(1), Some(1), Some(0)]);
        assert_eq!(held, 0, "both workers are done with it");
    }

    /// A run revoked before it started ends the attempt it received.
    #[test]
    fn a_revoked_run_ends_the_attempt_received() {
        use TaskState::*;
        let mut attempts = Attempts::default();
        stamped(&mut attempts, event(Received, "a", Some(2)));
        assert_eq!(stamped(&mut attempts, event(Cancelled, "a", None)), Some(2));
    }

    /// On one worker the retry's `task-received` may come before the first run's
    /// `task-retried`: the outcome still belongs to the run that was started.
    #[test]
    fn on_one_worker_the_outcome_belongs_to_the_started_run() {
        use TaskState::*;
        let (seen, held) = stamp_all([
            event(Received, "a", Some(0)),
            event(Started, "a", None),
            event(Received, "a", Some(1)),
            event(Retried, "a", None),
            event(Started, "a", None),
            event(Succeeded, "a", None),
        ]);
        assert_eq!(seen, [Some(0), Some(0), Some(1), Some(0), Some(1), Some(1)]);
        assert_eq!(held, 0, "a finished task is forgotten");
    }

    /// Events of a task this agent never saw received stay as Celery sent them.
    #[test]
    fn unknown_tasks_are_left_unstamped() {
        let mut attempts = Attempts::default();
        assert_eq!(
            stamped(&mut attempts, event(TaskState::Failed, "a", None)),
            None
        );
        assert_eq!(
            stamped(&mut attempts, event(TaskState::Started, "a", None)),
            None
        );
    }
}
