//! Per-caller rate limits on heavy or destructive routes (bulk retry, purge): a token bucket
//! per (route, caller), answering 429 with `Retry-After` when empty. And slow lanes, for a
//! limit that must brake a script without locking people out (sign-in per address).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bucket's shape.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    /// Requests allowed back to back.
    pub burst: u32,
    /// Requests regained per minute.
    pub per_minute: u32,
}

impl Default for Limit {
    /// Ten back to back, then one every six seconds: plenty for a person, a brake for a script
    /// stuck in a loop.
    fn default() -> Limit {
        Limit {
            burst: 10,
            per_minute: 10,
        }
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Keyed token buckets.
pub struct RateLimiter {
    limit: Limit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

/// Buckets idle this long are full again and can be forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl RateLimiter {
    /// A limiter with one shape for every key.
    pub fn new(limit: Limit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `key`, or says how long until one is available.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let rate_per_sec = f64::from(self.limit.per_minute) / 60.0;
        let burst = f64::from(self.limit.burst);
        let mut buckets = self.buckets.lock().expect("limiter lock");
        if buckets.len() > 10_000 {
            buckets.retain(|_, b| now.duration_since(b.updated) < FORGET_AFTER);
        }
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate_per_sec).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else if rate_per_sec <= 0.0 {
            Err(Duration::from_secs(60))
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / rate_per_sec,
            ))
        }
    }
}

/// One lane per key: attempts in it pass one at a time, each held for a fixed pace, and one
/// that cannot get in within the longest wait is refused. A flood from one key then gets at most
/// one attempt per pace through, while a single honest attempt among it still passes.
pub struct SlowLanes {
    pace: Duration,
    longest_wait: Duration,
    lanes: Semaphores,
}

/// A turn in a lane: the next attempt of the key waits until it is dropped.
pub struct Turn(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl SlowLanes {
    /// Lanes holding each attempt for `pace`; an attempt waits at most `longest_wait` for
    /// its turn.
    pub fn new(pace: Duration, longest_wait: Duration) -> SlowLanes {
        SlowLanes {
            pace,
            longest_wait,
            lanes: Semaphores::new(1),
        }
    }

    /// Waits for `key`'s lane and the pace; `None` when the lane stayed busy too long.
    pub async fn enter(&self, key: &str) -> Option<Turn> {
        let lane = self.lanes.of(key);
        let permit = tokio::time::timeout(self.longest_wait, lane.acquire_owned())
            .await
            .ok()?
            .ok()?;
        tokio::time::sleep(self.pace).await;
        Some(Turn(permit))
    }
}

/// At most so many caller-shaped reads (lists, exports) per caller at once, so one caller
/// cannot take every connection of the store's pool while the others wait: the ninth of eight
/// slow filters is refused at once instead of queueing for a connection.
pub struct ConcurrentReads {
    per_caller: usize,
    callers: Semaphores,
}

/// A caller's read slot, given back when dropped (an export holds it until its stream ends).
pub struct ReadSlot(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl ConcurrentReads {
    /// `per_caller` reads at once for each caller.
    pub fn new(per_caller: usize) -> ConcurrentReads {
        ConcurrentReads {
            per_caller,
            callers: Semaphores::new(per_caller),
        }
    }

    /// A slot for `caller`, or `Err(per_caller)` when all of its slots are taken.
    pub fn enter(&self, caller: &str) -> Result<ReadSlot, usize> {
        let slots = self.callers.of(caller);
        slots
            .try_acquire_owned()
            .map(ReadSlot)
            .map_err(|_| self.per_caller)
    }
}

/// A semaphore per key with `permits` each, made on first use. Past 10,000 keys the ones
/// nobody holds or waits on are forgotten (such a semaphore is only its map entry), so callers
/// inventing keys cannot grow the map without bound.
struct Semaphores {
    permits: usize,
    by_key: Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>,
}

impl Semaphores {
    fn new(permits: usize) -> Semaphores {
        Semaphores {
            permits,
            by_key: Mutex::new(HashMap::new()),
        }
    }

    /// `key`'s semaphore.
    fn of(&self, key: &str) -> Arc<tokio::sync::Semaphore> {
        let mut by_key = self.by_key.lock().expect("semaphores lock");
        if by_key.len() > 10_000 {
            by_key.retain(|_, semaphore| Arc::strong_count(semaphore) > 1);
        }
        by_key
            .entry(key.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.permits)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_with_a_wait_per_key() {
        let limiter = RateLimiter::new(Limit {
            burst: 2,
            per_minute: 60,
        });
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        let wait = limiter.check("a").unwrap_err();
        assert!(wait <= Duration::from_secs(1) && wait > Duration::ZERO);
        assert!(limiter.check("b").is_ok(), "keys are independent");
    }

    #[tokio::test]
    async fn a_lane_lets_one_attempt_through_at_a_time_and_refuses_a_long_wait() {
        let pace = Duration::from_millis(50);
        let lanes = Arc::new(SlowLanes::new(pace, Duration::from_millis(300)));
        let start = std::time::Instant::now();
        let first = lanes.enter("address:a").await.expect("an empty lane");
        assert!(start.elapsed() >= pace, "held for the pace");
        let other = lanes.enter("address:b").await;
        assert!(other.is_some(), "lanes are independent");
        drop(other);
        // While the first turn is held, a second attempt waits, and is refused in the end.
        assert!(lanes.enter("address:a").await.is_none());
        drop(first);
        assert!(lanes.enter("address:a").await.is_some(), "free again");
    }

    #[test]
    fn a_caller_gets_its_slots_and_no_more_while_others_get_theirs() {
        let reads = ConcurrentReads::new(2);
        let a1 = reads.enter("a").unwrap();
        let _a2 = reads.enter("a").unwrap();
        assert_eq!(reads.enter("a").err(), Some(2));
        assert!(reads.enter("b").is_ok(), "another caller is not affected");
        drop(a1);
        assert!(reads.enter("a").is_ok(), "a slot given back is free again");
    }
}
