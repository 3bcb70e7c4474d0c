//! The real arguments of tasks, kept on this host only: the brain gets the redacted form, and
//! a retry reads the originals here. Bounded by age and size (both configurable); an
//! append-only file (0600) keeps them across restarts and is compacted when it outgrows the
//! bound. Losing the last second of writes to a crash costs only the retryability of those
//! tasks, so writes are buffered and flushed every second rather than synced.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::now_ms;

/// What is known of one task's original call. Fields fill in as sources report them (the
/// received event's repr, then `query_task`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Original {
    /// Task id.
    pub task_id: String,
    /// When first seen, ms (the age bound counts from here).
    pub at_ms: i64,
    /// Task name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Positional arguments, as a JSON array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Value>,
    /// Keyword arguments, as a JSON object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kwargs: Option<Value>,
    /// The queue (routing key) it was published to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Its message priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Its workflow root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_id: Option<String>,
}

impl Original {
    /// Fills what `self` lacks from `newer`; newer arguments win.
    fn merge(&mut self, newer: Original) {
        fn fill<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        fill(&mut self.name, newer.name);
        fill(&mut self.args, newer.args);
        fill(&mut self.kwargs, newer.kwargs);
        fill(&mut self.queue, newer.queue);
        fill(&mut self.priority, newer.priority);
        fill(&mut self.root_id, newer.root_id);
    }

    /// Whether a retry can be built from this alone.
    pub fn has_arguments(&self) -> bool {
        self.args.as_ref().is_some_and(Value::is_array)
            && self.kwargs.as_ref().is_some_and(Value::is_object)
    }
}

/// The store.
pub struct Vault {
    inner: Mutex<Inner>,
}

struct Inner {
    path: PathBuf,
    file: BufWriter<File>,
    /// task id -> (entry as its JSON line, its insertion number). Kept serialized: parsed
    /// JSON values take several times the memory, and entries are read only on retries.
    entries: HashMap<String, (String, u64)>,
    /// (insertion number, first seen ms, task id), oldest first; stale numbers are skipped.
    order: VecDeque<(u64, i64, String)>,
    next: u64,
    live_bytes: u64,
    file_bytes: u64,
    max_age_ms: i64,
    max_bytes: u64,
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Vault {
    /// Opens (or creates) the vault at `path`, dropping what is past the bounds.
    pub fn open(path: &Path, max_age_hours: u64, max_bytes: u64) -> std::io::Result<Vault> {
        let mut inner = Inner {
            path: path.to_owned(),
            file: BufWriter::new(open_append(path)?),
            entries: HashMap::new(),
            order: VecDeque::new(),
            next: 0,
            live_bytes: 0,
            file_bytes: 0,
            max_age_ms: i64::try_from(max_age_hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX),
            max_bytes: max_bytes.max(4096),
        };
        let reader = BufReader::new(File::open(path)?);
        for line in reader.lines() {
            let line = line?;
            inner.file_bytes += line.len() as u64 + 1;
            // A torn last line (crash mid-write) is skipped.
            if let Ok(original) = serde_json::from_str::<Original>(&line) {
                inner.insert(original);
            }
        }
        inner.evict(now_ms());
        inner.compact()?;
        Ok(Vault {
            inner: Mutex::new(inner),
        })
    }

    /// Records (or completes) what is known of a task.
    pub fn put(&self, original: Original) {
        let mut inner = self.inner.lock().expect("vault lock");
        let line = inner.insert(original);
        if let Err(e) = inner.append(&line) {
            tracing::warn!(error = %e, "cannot write the arguments vault");
        }
        inner.evict(now_ms());
        if inner.file_bytes > inner.max_bytes
            && let Err(e) = inner.compact()
        {
            tracing::warn!(error = %e, "cannot compact the arguments vault");
        }
    }

    /// What is known of a task, if it is still within the bounds.
    pub fn get(&self, task_id: &str) -> Option<Original> {
        let inner = self.inner.lock().expect("vault lock");
        let (line, _) = inner.entries.get(task_id)?;
        serde_json::from_str(line).ok()
    }

    /// Writes buffered entries to the file.
    pub fn flush(&self) {
        if let Err(e) = self.inner.lock().expect("vault lock").file.flush() {
            tracing::warn!(error = %e, "cannot flush the arguments vault");
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("vault lock").entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// Merges into the in-memory map; returns the merged entry's JSON line.
    fn insert(&mut self, original: Original) -> String {
        let merged = match self.entries.remove(&original.task_id) {
            Some((line, _)) => {
                self.live_bytes -= line.len() as u64 + 1;
                let mut old: Original = serde_json::from_str(&line).unwrap_or_default();
                old.merge(original);
                old
            }
            None => original,
        };
        let line = serde_json::to_string(&merged).unwrap_or_default();
        self.next += 1;
        self.order
            .push_back((self.next, merged.at_ms, merged.task_id.clone()));
        self.live_bytes += line.len() as u64 + 1;
        self.entries
            .insert(merged.task_id, (line.clone(), self.next));
        line
    }

    fn append(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(line.as_bytes())?;
        self.file.write_all(b"\n")?;
        self.file_bytes += line.len() as u64 + 1;
        Ok(())
    }

    /// Drops entries older than the age bound, then the oldest while over half the size bound
    /// (so a compaction always frees at least half the file).
    fn evict(&mut self, now: i64) {
        while let Some((number, at_ms, task_id)) = self.order.front().cloned() {
            let current = self.entries.get(&task_id).map(|(_, n)| *n) == Some(number);
            if !current {
                self.order.pop_front();
                continue;
            }
            let too_old = now.saturating_sub(at_ms) > self.max_age_ms;
            if !too_old && self.live_bytes <= self.max_bytes / 2 {
                break;
            }
            self.order.pop_front();
            if let Some((line, _)) = self.entries.remove(&task_id) {
                self.live_bytes -= line.len() as u64 + 1;
            }
        }
    }

    /// Rewrites the file with only the live entries (write aside, then rename).
    fn compact(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let aside = self.path.with_extension("compacting");
        let _ = std::fs::remove_file(&aside);
        let mut out = BufWriter::new(
            OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&aside)?,
        );
        let mut bytes = 0;
        for (number, _, task_id) in &self.order {
            if let Some((line, n)) = self.entries.get(task_id)
                && n == number
            {
                out.write_all(line.as_bytes())?;
                out.write_all(b"\n")?;
                bytes += line.len() as u64 + 1;
            }
        }
        out.flush()?;
        out.get_ref().sync_all()?;
        std::fs::rename(&aside, &self.path)?;
        self.file = BufWriter::new(open_append(&self.path)?);
        self.file_bytes = bytes;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::DEFAULT_VAULT_MAX_BYTES;

    fn call(id: &str, at_ms: i64) -> Original {
        Original {
            task_id: id.into(),
            at_ms,
            name: Some("app.add".into()),
            args: Some(json!([1, "x".repeat(100)])),
            kwargs: Some(json!({"password": "hunter2"})),
            ..Original::default()
        }
    }

    #[test]
    fn originals_survive_a_restart_and_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let vault = Vault::open(&path, 1, DEFAULT_VAULT_MAX_BYTES).unwrap();
        vault.put(call("t1", now_ms()));
        vault.put(Original {
            task_id: "t1".into(),
            at_ms: now_ms(),
            queue: Some("emails".into()),
            priority: Some(6),
            ..Original::default()
        });
        vault.flush();
        drop(vault);
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let vault = Vault::open(&path, 1, DEFAULT_VAULT_MAX_BYTES).unwrap();
        let t1 = vault.get("t1").unwrap();
        assert!(t1.has_arguments());
        assert_eq!(t1.kwargs, Some(json!({"password": "hunter2"})));
        assert_eq!(
            (t1.queue.as_deref(), t1.priority),
            (Some("emails"), Some(6))
        );
    }

    #[test]
    fn past_the_age_bound_entries_are_gone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let vault = Vault::open(&path, 1, DEFAULT_VAULT_MAX_BYTES).unwrap();
        vault.put(call("old", now_ms() - 3_600_001));
        vault.put(call("new", now_ms() - 3_500_000));
        assert!(vault.get("old").is_none());
        assert!(vault.get("new").is_some());
    }

    #[test]
    fn the_file_stays_within_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault");
        let bound = 64 * 1024;
        let vault = Vault::open(&path, 24, bound).unwrap();
        for i in 0..5_000 {
            vault.put(call(&format!("t{i}"), now_ms()));
        }
        vault.flush();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= bound, "file {size} bytes > bound {bound}");
        assert!(vault.get("t4999").is_some(), "the newest are kept");
        assert!(vault.get("t0").is_none(), "the oldest went first");
        assert!(vault.len() > 100, "kept {}", vault.len());
        // What the file holds reloads to the same entries.
        let held = vault.len();
        drop(vault);
        assert_eq!(Vault::open(&path, 24, bound).unwrap().len(), held);
    }
}
