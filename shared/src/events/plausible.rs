//! Refusing updates whose numbers cannot be true, before they are stored.
//!
//! Making text storable ([`super::storable`]) keeps a stream flowing; this keeps nonsense out
//! of it. A timestamp of `i64::MAX` once showed as 1970 on the dashboard, and a negative
//! runtime or depth sorts before every real one. Such an update is refused with a reason
//! naming the field, instead of being stored silently: the brain skips it, counts it and logs
//! the reason. The bounds are wide on purpose (a worker host's clock may be off by hours), so
//! a real event is never refused.

use super::{TaskUpdate, Update, WorkerUpdate};

/// Earliest event time accepted: 2000-01-01T00:00:00Z, in ms since the epoch. Nothing the
/// engines report happened before it; a zero or negative time is a bug or an attack.
pub const EARLIEST_MS: i64 = 946_684_800_000;

/// How far ahead of the brain's clock an event time may be: one day, for skewed hosts.
pub const FUTURE_SLACK_MS: i64 = 24 * 3600 * 1000;

/// How far ahead an ETA may be: ten years (a countdown of years is odd, but Celery allows it).
pub const ETA_SLACK_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

/// Longest runtime accepted: one year, in ms.
pub const MAX_RUNTIME_MS: i64 = 365 * 24 * 3600 * 1000;

/// Largest count accepted (retries, concurrency, processed, queue depth): what the store's
/// signed 64-bit columns can hold, and far beyond any real value.
pub const MAX_COUNT: u64 = i64::MAX as u64;

impl Update {
    /// Why this update cannot be true as of `now_ms` (naming the field), or `None` if it can.
    pub fn implausible(&self, now_ms: i64) -> Option<String> {
        match self {
            Update::Task(task) => task.implausible(now_ms),
            Update::Worker(worker) => worker.implausible(now_ms),
            Update::QueueDepth { depth, at_ms, .. } => event_time(*at_ms, now_ms)
                .or_else(|| (*depth > MAX_COUNT).then(|| format!("depth {depth} is too large"))),
        }
    }
}

impl TaskUpdate {
    fn implausible(&self, now_ms: i64) -> Option<String> {
        if let Some(why) = event_time(self.at_ms, now_ms) {
            return Some(why);
        }
        if let Some(eta) = self.eta_ms
            && !(EARLIEST_MS..=now_ms.saturating_add(ETA_SLACK_MS)).contains(&eta)
        {
            return Some(format!(
                "eta_ms {eta} is outside 2000-01-01 to ten years ahead"
            ));
        }
        if let Some(runtime) = self.runtime_ms
            && !(0..=MAX_RUNTIME_MS).contains(&runtime)
        {
            return Some(format!("runtime_ms {runtime} is outside 0 to one year"));
        }
        if let Some(retries) = self.retries
            && retries < 0
        {
            return Some(format!("retries {retries} is negative"));
        }
        None
    }
}

impl WorkerUpdate {
    fn implausible(&self, now_ms: i64) -> Option<String> {
        if let Some(why) = event_time(self.at_ms, now_ms) {
            return Some(why);
        }
        if let Some(concurrency) = self.concurrency
            && concurrency < 0
        {
            return Some(format!("concurrency {concurrency} is negative"));
        }
        if let Some(processed) = self.processed
            && processed < 0
        {
            return Some(format!("processed {processed} is negative"));
        }
        None
    }
}

/// Why `at_ms` cannot be an event's time as of `now_ms`.
fn event_time(at_ms: i64, now_ms: i64) -> Option<String> {
    let latest = now_ms.saturating_add(FUTURE_SLACK_MS);
    (!(EARLIEST_MS..=latest).contains(&at_ms)).then(|| {
        format!("at_ms {at_ms} is outside 2000-01-01 to one day ahead of the brain's clock")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn task(edit: impl FnOnce(&mut TaskUpdate)) -> Update {
        let mut task = TaskUpdate {
            engine: "celery".into(),
            task_id: "t".into(),
            at_ms: NOW,
            ..TaskUpdate::default()
        };
        edit(&mut task);
        Update::Task(Box::new(task))
    }

    #[test]
    fn event_times_are_accepted_exactly_within_their_bounds() {
        for ok in [EARLIEST_MS, NOW, NOW + FUTURE_SLACK_MS] {
            assert_eq!(task(|t| t.at_ms = ok).implausible(NOW), None, "{ok}");
        }
        for bad in [
            EARLIEST_MS - 1,
            0,
            -1,
            i64::MIN,
            NOW + FUTURE_SLACK_MS + 1,
            i64::MAX,
        ] {
            let why = task(|t| t.at_ms = bad).implausible(NOW).expect("refused");
            assert!(why.starts_with("at_ms "), "{why}");
        }
        let depth = |at_ms, depth| Update::QueueDepth {
            queue: "q".into(),
            depth,
            at_ms,
        };
        assert_eq!(depth(NOW, MAX_COUNT).implausible(NOW), None);
        assert!(
            depth(NOW, MAX_COUNT + 1)
                .implausible(NOW)
                .unwrap()
                .starts_with("depth")
        );
        assert!(
            depth(i64::MAX, 1)
                .implausible(NOW)
                .unwrap()
                .starts_with("at_ms")
        );
        // The brain's clock near the end of time does not overflow.
        assert_eq!(task(|t| t.at_ms = NOW).implausible(i64::MAX), None);
    }

    #[test]
    fn task_numbers_are_checked_at_their_edges() {
        assert_eq!(task(|t| t.runtime_ms = Some(0)).implausible(NOW), None);
        assert_eq!(
            task(|t| t.runtime_ms = Some(MAX_RUNTIME_MS)).implausible(NOW),
            None
        );
        for bad in [-1, MAX_RUNTIME_MS + 1] {
            let why = task(|t| t.runtime_ms = Some(bad)).implausible(NOW).unwrap();
            assert!(why.starts_with("runtime_ms"), "{why}");
        }
        assert_eq!(
            task(|t| t.eta_ms = Some(NOW + ETA_SLACK_MS)).implausible(NOW),
            None
        );
        assert!(
            task(|t| t.eta_ms = Some(NOW + ETA_SLACK_MS + 1))
                .implausible(NOW)
                .is_some()
        );
        assert!(task(|t| t.eta_ms = Some(-5)).implausible(NOW).is_some());
        assert_eq!(task(|t| t.retries = Some(0)).implausible(NOW), None);
        assert!(
            task(|t| t.retries = Some(-1))
                .implausible(NOW)
                .unwrap()
                .starts_with("retries")
        );
    }

    #[test]
    fn worker_numbers_are_checked() {
        let worker = |concurrency, processed| {
            Update::Worker(WorkerUpdate {
                name: "celery@h".into(),
                online: true,
                at_ms: NOW,
                concurrency,
                processed,
                ..WorkerUpdate::default()
            })
        };
        assert_eq!(worker(Some(0), Some(0)).implausible(NOW), None);
        assert!(
            worker(Some(-1), None)
                .implausible(NOW)
                .unwrap()
                .starts_with("concurrency")
        );
        assert!(
            worker(None, Some(-1))
                .implausible(NOW)
                .unwrap()
                .starts_with("processed")
        );
    }
}
