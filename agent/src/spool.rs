//! The on-disk event spool: numbered batches of engine updates, kept until the brain
//! acknowledges them, so a brain restart or a cut link loses nothing.
//!
//! Batches are appended (one JSON line each, fsync'ed) to segment files `<seq>.seg` in
//! `<state_dir>/spool/`, named by their first batch. An acknowledgement deletes whole segments.
//! The spool is bounded: past `max_bytes` the oldest segment is deleted even if unacknowledged,
//! and the events in it are **counted** as dropped; the cumulative count travels in every batch
//! so the brain and `/metrics` see it.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use taskward_shared::events::{EventBatch, Update};

/// Default bound on the spool's size on disk.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024 * 1024;

/// A segment is closed and a new one started past this size, so acknowledged data can be
/// deleted in reasonable steps.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// Largest batch line written: a batch over it is split in two, and again, so every frame
/// stays well under the link's 16 MiB cap (one update is at most a few hundred KiB once its
/// fields are capped, see `taskward_shared::events::storable`).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Batches kept in memory for sending (and read back from disk at a time after a long
/// disconnect): at 2,000 updates a batch, a few tens of MiB at most.
const MEMORY_BATCHES: usize = 32;

struct Segment {
    first_seq: u64,
    last_seq: u64,
    path: PathBuf,
    bytes: u64,
    events: u64,
}

/// A spooled batch as the JSON text of its [`EventBatch`], the line written to disk: the link
/// sends it as is (see [`taskward_shared::protocol::events_frame_text`]) instead of serializing
/// the updates a second time.
#[derive(Debug, Clone)]
pub struct SpooledBatch {
    /// Batch sequence number.
    pub seq: u64,
    /// Updates in it.
    pub updates: usize,
    /// The batch, JSON.
    pub json: Arc<str>,
}

/// The spool.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segments: VecDeque<Segment>,
    current: Option<File>,
    next_seq: u64,
    acked: u64,
    dropped_total: u64,
    /// Recent batches, for sending without reading the disk.
    recent: VecDeque<SpooledBatch>,
    /// Older batches read back from disk (after a long disconnect), a window at a time.
    replay: VecDeque<SpooledBatch>,
}

impl Spool {
    /// Opens the spool, resuming numbering after what is on disk.
    pub fn open(state_dir: &Path, max_bytes: u64) -> std::io::Result<Spool> {
        let dir = state_dir.join("spool");
        std::fs::create_dir_all(&dir)?;
        let acked = read_number(&dir.join("acked"))?;
        let dropped_total = read_number(&dir.join("dropped"))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let Some(first_seq) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let (mut last_seq, mut events) = (first_seq.saturating_sub(1), 0);
            for line in BufReader::new(File::open(&path)?).lines() {
                // A torn last line (crash mid-append) ends the segment.
                let Ok(batch) = serde_json::from_str::<EventBatch>(&line?) else {
                    break;
                };
                last_seq = batch.seq;
                events += batch.updates.len() as u64;
            }
            let bytes = std::fs::metadata(&path)?.len();
            segments.push(Segment {
                first_seq,
                last_seq,
                path,
                bytes,
                events,
            });
        }
        segments.sort_by_key(|s| s.first_seq);
        let next_seq = segments.last().map_or(acked, |s| s.last_seq.max(acked)) + 1;
        let mut spool = Spool {
            dir,
            max_bytes,
            segments: segments.into(),
            current: None,
            next_seq,
            acked,
            dropped_total,
            recent: VecDeque::new(),
            replay: VecDeque::new(),
        };
        spool.ack(acked)?;
        Ok(spool)
    }

    /// Makes every update storable (NUL bytes replaced, oversized fields cut and marked), then
    /// numbers, writes and syncs it as one batch, or as several when it would exceed
    /// [`MAX_BATCH_BYTES`]. Returns the seq of the last batch written.
    pub fn append(&mut self, mut updates: Vec<Update>) -> std::io::Result<u64> {
        let cut = updates
            .iter_mut()
            .map(Update::make_storable)
            .filter(|changed| *changed)
            .count();
        if cut > 0 {
            tracing::debug!(
                updates = cut,
                "cut oversized or NUL-carrying fields before sending"
            );
        }
        self.append_bounded(updates)
    }

    fn append_bounded(&mut self, mut updates: Vec<Update>) -> std::io::Result<u64> {
        let batch = EventBatch {
            seq: self.next_seq,
            dropped_total: self.dropped_total,
            updates,
        };
        let mut line = serde_json::to_string(&batch).expect("batches serialize");
        if line.len() > MAX_BATCH_BYTES && batch.updates.len() > 1 {
            updates = batch.updates;
            let second = updates.split_off(updates.len() / 2);
            self.append_bounded(updates)?;
            return self.append_bounded(second);
        }
        line.push('\n');
        let needs_new = match self.segments.back() {
            Some(last) => self.current.is_none() || last.bytes >= SEGMENT_BYTES,
            None => true,
        };
        if needs_new {
            let path = self.dir.join(format!("{:020}.seg", batch.seq));
            self.current = Some(OpenOptions::new().create(true).append(true).open(&path)?);
            self.segments.push_back(Segment {
                first_seq: batch.seq,
                last_seq: batch.seq - 1,
                path,
                bytes: 0,
                events: 0,
            });
        }
        let file = self.current.as_mut().expect("a segment is open");
        file.write_all(line.as_bytes())?;
        file.sync_data()?;
        let segment = self.segments.back_mut().expect("a segment exists");
        segment.last_seq = batch.seq;
        segment.bytes += line.len() as u64;
        segment.events += batch.updates.len() as u64;
        self.next_seq += 1;
        let seq = batch.seq;
        line.pop();
        self.recent.push_back(SpooledBatch {
            seq,
            updates: batch.updates.len(),
            json: line.into(),
        });
        if self.recent.len() > MEMORY_BATCHES {
            self.recent.pop_front();
        }
        self.enforce_bound()?;
        Ok(seq)
    }

    /// Counts events lost before they reached the spool (the engine adapter noticed them
    /// missing); they travel in the same cumulative dropped count.
    pub fn count_lost(&mut self, events: u64) -> std::io::Result<()> {
        self.dropped_total += events;
        write_number(&self.dir.join("dropped"), self.dropped_total)
    }

    /// Drops the oldest segments while over the bound, counting their events as dropped.
    fn enforce_bound(&mut self) -> std::io::Result<()> {
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let oldest = self.segments.pop_front().expect("more than one segment");
            std::fs::remove_file(&oldest.path)?;
            if oldest.last_seq > self.acked {
                self.dropped_total += oldest.events;
                tracing::error!(
                    events = oldest.events,
                    dropped_total = self.dropped_total,
                    "spool full: dropped the oldest unacknowledged events"
                );
                self.acked = oldest.last_seq;
                write_number(&self.dir.join("acked"), self.acked)?;
                write_number(&self.dir.join("dropped"), self.dropped_total)?;
            }
        }
        Ok(())
    }

    /// The brain stored every batch up to `seq`: delete what is covered.
    pub fn ack(&mut self, seq: u64) -> std::io::Result<()> {
        if seq > self.acked {
            self.acked = seq;
            write_number(&self.dir.join("acked"), seq)?;
        }
        while let Some(first) = self.segments.front() {
            let is_current = self.segments.len() == 1 && self.current.is_some();
            if first.last_seq > self.acked || is_current {
                break;
            }
            let done = self.segments.pop_front().expect("checked");
            std::fs::remove_file(&done.path)?;
        }
        while self.recent.front().is_some_and(|b| b.seq <= self.acked) {
            self.recent.pop_front();
        }
        while self.replay.front().is_some_and(|b| b.seq <= self.acked) {
            self.replay.pop_front();
        }
        Ok(())
    }

    /// Up to `limit` batches after `after`, in order: from memory when they are recent,
    /// otherwise read back from disk a window of [`MEMORY_BATCHES`] at a time (so catching up
    /// after a long disconnect reads each segment about once).
    pub fn batches_after(
        &mut self,
        after: u64,
        limit: usize,
    ) -> std::io::Result<Vec<SpooledBatch>> {
        let after = after.max(self.acked);
        let covers = |q: &VecDeque<SpooledBatch>| {
            q.front().is_some_and(|b| b.seq <= after + 1) && q.back().is_some_and(|b| b.seq > after)
        };
        if self.recent.front().is_some_and(|b| b.seq <= after + 1) {
            return Ok(take_after(&self.recent, after, limit));
        }
        if !covers(&self.replay) {
            self.replay = self.read_disk(after, MEMORY_BATCHES)?.into();
        }
        Ok(take_after(&self.replay, after, limit))
    }

    fn read_disk(&self, after: u64, limit: usize) -> std::io::Result<Vec<SpooledBatch>> {
        let mut out = Vec::new();
        for segment in self.segments.iter().filter(|s| s.last_seq > after) {
            for line in BufReader::new(File::open(&segment.path)?).lines() {
                let line = line?;
                // Skip old lines by their leading seq without parsing them.
                if quick_seq(&line).is_some_and(|seq| seq <= after) {
                    continue;
                }
                let Ok(batch) = serde_json::from_str::<EventBatch>(&line) else {
                    break;
                };
                if batch.seq > after {
                    out.push(SpooledBatch {
                        seq: batch.seq,
                        updates: batch.updates.len(),
                        json: line.into(),
                    });
                    if out.len() >= limit {
                        return Ok(out);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Highest acknowledged batch.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Highest batch written.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Events dropped so far.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }
}

fn take_after(batches: &VecDeque<SpooledBatch>, after: u64, limit: usize) -> Vec<SpooledBatch> {
    batches
        .iter()
        .filter(|b| b.seq > after)
        .take(limit)
        .cloned()
        .collect()
}

/// The seq of a spooled line (`{"seq":N,...}`, as [`EventBatch`] serializes), read without
/// parsing the line.
fn quick_seq(line: &str) -> Option<u64> {
    let rest = line.strip_prefix("{\"seq\":")?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

fn read_number(path: &Path) -> std::io::Result<u64> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.trim().parse().unwrap_or(0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

fn write_number(path: &Path, value: u64) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, value.to_string())?;
    std::fs::rename(tmp, path)
}

#[cfg(test)]
mod tests {
    use taskward_shared::events::Update;

    use super::*;

    fn updates(n: usize) -> Vec<Update> {
        (0..n)
            .map(|i| Update::QueueDepth {
                queue: format!("q{i}"),
                depth: i as u64,
                at_ms: 0,
            })
            .collect()
    }

    #[test]
    fn batches_survive_a_restart_until_acked() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        for _ in 0..5 {
            spool.append(updates(3)).unwrap();
        }
        spool.ack(2).unwrap();
        drop(spool);
        let mut spool = Spool::open(dir.path(), DEFAULT_MAX_BYTES).unwrap();
        let pending = spool.batches_after(0, 100).unwrap();
        assert_eq!(
            quick_seq(r#"{"seq":42,"dropped_total":0,"updates":[]}"#),
            Some(42)
        );
        assert_eq!(pending.iter().map(|b| b.seq).collect::<Vec<_>>(), [3, 4, 5]);
        assert_eq!(spool.append(updates(1)).unwrap(), 6, "numbering resumes");
    }

    #[test]
    fn past_the_bound_the_oldest_data_is_dropped_and_counted() {
        let dir = tempfile::tempdir().unwrap();
        // Tiny segments would need a smaller SEGMENT_BYTES; instead write batches big enough
        // that each fills a segment.
        let mut spool = Spool::open(dir.path(), 20 * 1024 * 1024).unwrap();
        let big: Vec<Update> = (0..120_000)
            .map(|i| Update::QueueDepth {
                queue: format!("queue-{i:08}"),
                depth: 1,
                at_ms: 0,
            })
            .collect();
        for _ in 0..4 {
            spool.append(big.clone()).unwrap();
        }
        assert!(spool.bytes() <= 20 * 1024 * 1024 + 8 * 1024 * 1024);
        assert!(
            spool.dropped_total() >= 120_000,
            "dropped {}",
            spool.dropped_total()
        );
        // Each 120,000-update append is over MAX_BATCH_BYTES, so it is written as two batches
        // of 60,000; whole batches are dropped.
        assert_eq!(spool.dropped_total() % 60_000, 0);
        let next = spool.append(updates(1)).unwrap();
        let last = spool.batches_after(0, 1000).unwrap().pop().unwrap();
        assert_eq!(last.seq, next);
        let last: EventBatch = serde_json::from_str(&last.json).unwrap();
        assert_eq!(last.seq, next);
        assert_eq!(
            last.dropped_total,
            spool.dropped_total(),
            "the count travels with the data"
        );
    }
}
