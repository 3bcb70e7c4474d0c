//! Time as the brain keeps it: stored as milliseconds since the Unix epoch (one integer column
//! on both backends, compared and indexed cheaply), shown as RFC 3339 UTC at the edges and in
//! signed audit statements.

use chrono::{DateTime, Utc};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// A stored time as a UTC instant (out-of-range values read as the epoch rather than failing a
/// whole page).
pub fn timestamp(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
