//! The event stream to the brain: adapter updates are batched into the on-disk spool, and a
//! session sends spooled batches under a window of unacknowledged ones, resuming after the last
//! batch the brain acknowledged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use taskward_shared::events::Update;
use tokio::sync::{Notify, mpsc};

use crate::engines::EngineAdapter;
use crate::spool::Spool;

use super::wire::{Sink, send_text};

/// Most updates in one batch.
const BATCH_MAX: usize = 2000;
/// How long a batch waits for more updates before it is spooled.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// Batches sent and not yet acknowledged, at most, and the updates in them, at most: enough that
/// the brain receives and decodes the next batches while it writes a group (up to 20,000
/// updates), so its one SQLite writer never waits for the agent; bounded so the brain's queue
/// of decoded updates stays a few tens of MiB and a reconnect resends little. With 16 batches
/// the writer idled between groups: at 50,000 events/s over 90 s ingest fell 9 s behind.
const EVENT_WINDOW: usize = 64;
/// See [`EVENT_WINDOW`].
const EVENT_WINDOW_UPDATES: usize = 40_000;
/// Updates buffered between the adapter and the spool.
pub(super) const EVENT_CHANNEL: usize = 20_000;

/// The event batches a session has sent and the brain not yet acknowledged.
pub(super) struct Window {
    /// Last batch sent.
    sent_upto: u64,
    /// Seq and update count of each unacknowledged batch, oldest first.
    unacked: VecDeque<(u64, usize)>,
    /// Updates in `unacked`.
    updates: usize,
}

impl Window {
    /// A session's window: it resumes after the last acknowledged batch.
    pub fn after(acked: u64) -> Window {
        Window {
            sent_upto: acked,
            unacked: Default::default(),
            updates: 0,
        }
    }

    fn sent(&mut self, seq: u64, updates: usize) {
        self.sent_upto = seq;
        self.unacked.push_back((seq, updates));
        self.updates += updates;
    }

    /// Whether another batch may go: always when none is unacknowledged, else while under
    /// both bounds of [`EVENT_WINDOW`].
    fn may_send(&self) -> bool {
        self.unacked.is_empty()
            || (self.unacked.len() < EVENT_WINDOW && self.updates < EVENT_WINDOW_UPDATES)
    }

    /// Forgets the batches up to `acked` (acks are cumulative).
    fn acked(&mut self, acked: u64) {
        self.sent_upto = self.sent_upto.max(acked);
        while let Some(&(seq, updates)) = self.unacked.front() {
            if seq > acked {
                break;
            }
            self.unacked.pop_front();
            self.updates -= updates;
        }
    }
}

/// Collects adapter updates into batches (up to [`BATCH_MAX`], waiting at most
/// [`BATCH_LINGER`] for more) and spools them; the link sends from the spool. Events the
/// engine reports lost join the spool's dropped count before each batch.
pub(super) async fn batcher(
    mut rx: mpsc::Receiver<Update>,
    spool: Arc<Mutex<Spool>>,
    spooled: Arc<Notify>,
    engine: Arc<dyn EngineAdapter>,
) {
    let mut buf = Vec::with_capacity(BATCH_MAX);
    let mut lost_counted = 0;
    loop {
        if rx.recv_many(&mut buf, BATCH_MAX).await == 0 {
            return;
        }
        let linger = tokio::time::sleep(BATCH_LINGER);
        tokio::pin!(linger);
        while buf.len() < BATCH_MAX {
            let room = BATCH_MAX - buf.len();
            tokio::select! {
                n = rx.recv_many(&mut buf, room) => if n == 0 { break },
                _ = &mut linger => break,
            }
        }
        let batch = std::mem::replace(&mut buf, Vec::with_capacity(BATCH_MAX));
        let lost = engine.lost_events().saturating_sub(lost_counted);
        lost_counted += lost;
        let spool = spool.clone();
        let written = tokio::task::spawn_blocking(move || {
            let mut spool = spool.lock().expect("spool lock");
            if lost > 0 {
                spool.count_lost(lost)?;
            }
            spool.append(batch)
        })
        .await;
        match written {
            Ok(Ok(_)) => spooled.notify_one(),
            Ok(Err(e)) => tracing::error!(error = %e, "cannot write the event spool; events lost"),
            Err(e) => tracing::error!(error = %e, "spool writer failed"),
        }
    }
}

/// Sends spooled batches after the window's last, keeping at most [`EVENT_WINDOW`] batches
/// and [`EVENT_WINDOW_UPDATES`] updates unacknowledged (always at least one batch).
pub(super) async fn send_events(
    spool: &Mutex<Spool>,
    sink: &mut Sink,
    window: &mut Window,
) -> Result<(), String> {
    let batches = {
        let mut spool = spool.lock().expect("spool lock");
        window.acked(spool.acked());
        if !window.may_send() {
            return Ok(());
        }
        spool
            .batches_after(window.sent_upto, EVENT_WINDOW - window.unacked.len())
            .map_err(|e| format!("cannot read the spool: {e}"))?
    };
    for batch in batches {
        if !window.may_send() {
            break;
        }
        send_text(
            sink,
            taskward_shared::protocol::events_frame_text(&batch.json),
        )
        .await?;
        window.sent(batch.seq, batch.updates);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_window_bounds_batches_and_updates() {
        let mut window = Window::after(10);
        assert!(window.may_send());
        // One batch bigger than the update bound still goes when nothing is in flight.
        window.sent(11, EVENT_WINDOW_UPDATES + 1);
        assert!(!window.may_send());
        window.acked(11);
        assert!(window.may_send());
        window.sent(12, EVENT_WINDOW_UPDATES / 2);
        window.sent(13, EVENT_WINDOW_UPDATES / 2 - 1);
        assert!(window.may_send(), "one update below the bound");
        window.sent(14, 1);
        assert!(!window.may_send());
        // Acks are cumulative: acking 13 frees 12 and 13.
        window.acked(13);
        assert_eq!((window.unacked.len(), window.updates), (1, 1));
        for seq in 15..(15 + EVENT_WINDOW as u64 - 1) {
            assert!(window.may_send());
            window.sent(seq, 1);
        }
        assert!(!window.may_send(), "{EVENT_WINDOW} small batches in flight");
        window.acked(10_000);
        assert_eq!((window.unacked.len(), window.updates), (0, 0));
        assert_eq!(window.sent_upto, 10_000);
    }
}
