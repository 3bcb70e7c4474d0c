//! Which brain the next session is opened with, and how long to wait first. With several brain
//! addresses (brains on one database) each reconnect tries the next one, and the backoff grows
//! once per round through all of them, so a dead brain costs one jittered delay before the next
//! is tried, and with one brain up the agent finds it within one round.

use std::time::Duration;

use taskward_shared::crypto::random_bytes;

use crate::brain_url::BrainUrl;

/// First reconnect delay; doubles per round of failed attempts.
const BACKOFF_BASE: Duration = Duration::from_millis(200);

/// The brain addresses in order, the one in use, and the failures since the last session that
/// was established.
pub(super) struct Rotation {
    brains: Vec<BrainUrl>,
    current: usize,
    attempt: u32,
}

impl Rotation {
    /// Starts with the first of `brains` (at least one).
    pub fn new(brains: Vec<BrainUrl>) -> Rotation {
        assert!(!brains.is_empty(), "the config names at least one brain");
        Rotation {
            brains,
            current: 0,
            attempt: 0,
        }
    }

    /// The brain the next session is opened with.
    pub fn current(&self) -> &BrainUrl {
        &self.brains[self.current]
    }

    /// Moves to the next brain after a session ended (the same one when there is one) and
    /// returns the delay before trying it: full jitter up to `cap`, growing per failed round
    /// and starting over after a session that was `established`.
    pub fn next(&mut self, established: bool, cap: Duration) -> Duration {
        self.attempt = if established {
            0
        } else {
            self.attempt.saturating_add(1)
        };
        self.current = (self.current + 1) % self.brains.len();
        backoff(self.attempt / self.brains.len() as u32, cap)
    }
}

/// Full jitter: a random delay up to `min(cap, base * 2^rounds)`.
fn backoff(rounds: u32, cap: Duration) -> Duration {
    let ceiling = BACKOFF_BASE
        .saturating_mul(2u32.saturating_pow(rounds.min(16)))
        .min(cap);
    let random = u64::from_le_bytes(random_bytes::<8>());
    let millis = ceiling.as_millis() as u64;
    Duration::from_millis(if millis == 0 {
        0
    } else {
        random % (millis + 1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let cap = Duration::from_secs(30);
        for attempt in 0..40 {
            let d = backoff(attempt, cap);
            assert!(d <= cap, "{attempt}: {d:?}");
        }
        let samples: std::collections::HashSet<u128> =
            (0..50).map(|_| backoff(10, cap).as_millis()).collect();
        assert!(samples.len() > 10, "no jitter");
        assert!(backoff(0, cap) <= BACKOFF_BASE);
    }

    #[test]
    fn each_reconnect_tries_the_next_brain_and_the_backoff_grows_per_round() {
        let brains = ["http://127.0.0.1:1", "http://127.0.0.1:2"]
            .map(|url| BrainUrl::parse(url, false).expect("loopback is allowed"));
        let mut rotation = Rotation::new(brains.to_vec());
        let cap = Duration::from_secs(30);
        assert_eq!(rotation.current().base(), brains[0].base());
        // The first failure of a round waits at most the base delay.
        assert!(rotation.next(false, cap) <= BACKOFF_BASE);
        assert_eq!(rotation.current().base(), brains[1].base());
        rotation.next(false, cap);
        assert_eq!(rotation.current().base(), brains[0].base());
        assert_eq!(rotation.attempt, 2);
        rotation.next(true, cap);
        assert_eq!(rotation.attempt, 0, "an established session starts over");
    }
}
