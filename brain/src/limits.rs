//! Per-caller rate limits on heavy or destructive routes (bulk retry, purge): a token bucket
//! per (route, caller), answering 429 with `Retry-After` when empty.

use std::collections::HashMap;
use std::sync::Mutex;
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
}
