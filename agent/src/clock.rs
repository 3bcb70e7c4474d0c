//! The wall clock as the protocol and the local files carry it: milliseconds since the Unix
//! epoch. One definition, so every part of the agent stamps time the same way (a clock before
//! 1970 reads as 0 rather than failing).

/// Now, in ms since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
