//! Whether the broker answers: a probe on the adapter's own connection, every few seconds while
//! it does and with a growing wait (to [`DOWN_MAX`]) while it does not, so a dead broker is
//! seen even when no command or event touches it. Each change is published once on a watch
//! channel (the link reports it to the brain) and logged once: one warning when the broker is
//! lost, one line when it is back.

use std::sync::Arc;
use std::time::Duration;

use taskward_shared::protocol::BrokerHealth;
use tokio::sync::watch;

use super::now_ms;
use super::transport::Transport;

/// The wait between checks while the broker answers.
const UP_EVERY: Duration = Duration::from_secs(2);
/// The first wait after a failed check; it doubles up to [`DOWN_MAX`].
const DOWN_FIRST: Duration = Duration::from_millis(500);
/// The longest wait between checks while the broker is down: recovery shows within this.
const DOWN_MAX: Duration = Duration::from_secs(5);
/// A check that takes longer fails (a broker behind a dropped route never refuses).
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A channel that starts at "up" (enroll reached the broker, and the first check follows at
/// once).
pub fn channel() -> (watch::Sender<BrokerHealth>, watch::Receiver<BrokerHealth>) {
    watch::channel(BrokerHealth {
        up: true,
        error: None,
        since_ms: now_ms(),
    })
}

/// Checks `transport` forever, publishing each change on `health`.
pub async fn watch(transport: Arc<dyn Transport>, health: watch::Sender<BrokerHealth>) {
    let mut down_wait = DOWN_FIRST;
    loop {
        let checked = match tokio::time::timeout(CHECK_TIMEOUT, transport.reach()).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!(
                "broker: no answer within {}s",
                CHECK_TIMEOUT.as_secs()
            )),
        };
        let wait = match checked {
            Ok(()) => {
                health.send_if_modified(|h| {
                    if h.up {
                        return false;
                    }
                    tracing::info!("the broker answers again");
                    *h = BrokerHealth {
                        up: true,
                        error: None,
                        since_ms: now_ms(),
                    };
                    true
                });
                down_wait = DOWN_FIRST;
                UP_EVERY
            }
            Err(error) => {
                health.send_if_modified(|h| {
                    if !h.up {
                        return false;
                    }
                    tracing::warn!(%error, "the broker does not answer; retrying with backoff");
                    *h = BrokerHealth {
                        up: false,
                        error: Some(error),
                        since_ms: now_ms(),
                    };
                    true
                });
                let wait = down_wait;
                down_wait = (down_wait * 2).min(DOWN_MAX);
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}
