//! The durable seen-store: every command id this agent accepted, and what became of it.
//!
//! An append-only file (`<state_dir>/seen.log`, one JSON record per line, each appended with
//! `fsync` before the agent acts on it). A command is recorded `claimed` *before* it runs, so a
//! second delivery of the same id is never run, and a `claimed` record without a result after a
//! crash means the command was interrupted: it is reported so and never run again. Results stay
//! here (`done`) until the brain acknowledges them (`acked`), so none is lost on the way.
//! Entries are kept until their command has long expired, then compacted away at start.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use taskward_shared::protocol::SignedResult;

/// How long after a command's expiry its id is remembered: far beyond any clock skew or
/// redelivery, so a late duplicate still finds it.
pub const RETAIN_AFTER_EXPIRY_MS: i64 = 24 * 60 * 60 * 1000;

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
enum Record {
    Claimed {
        id: String,
        row_hash: String,
        expires_at_ms: i64,
    },
    Done {
        id: String,
        expires_at_ms: i64,
        result: SignedResult,
    },
    Acked {
        id: String,
        expires_at_ms: i64,
    },
}

/// What is known about a command id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Accepted; running, or interrupted by a crash.
    Claimed {
        /// Hash of the command's row (results bind to it).
        row_hash: String,
        /// The command's expiry.
        expires_at_ms: i64,
    },
    /// Finished; the result waits for the brain's acknowledgement.
    Done {
        /// The signed result.
        result: SignedResult,
        /// The command's expiry.
        expires_at_ms: i64,
    },
    /// Finished and recorded by the brain.
    Acked {
        /// The command's expiry.
        expires_at_ms: i64,
    },
}

/// The store.
pub struct SeenStore {
    path: PathBuf,
    file: File,
    entries: HashMap<String, Entry>,
}

impl SeenStore {
    /// Opens (creating) the store, replaying the log and compacting away old entries. A torn
    /// last line (a crash mid-write) is ignored: its command had not started.
    pub fn open(state_dir: &Path, now_ms: i64) -> std::io::Result<SeenStore> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join("seen.log");
        let mut entries = HashMap::new();
        if path.exists() {
            for line in BufReader::new(File::open(&path)?).lines() {
                let line = line?;
                let Ok(record) = serde_json::from_str::<Record>(&line) else {
                    continue;
                };
                apply(&mut entries, record);
            }
        }
        entries.retain(|_, entry| match entry {
            Entry::Acked { expires_at_ms } => *expires_at_ms + RETAIN_AFTER_EXPIRY_MS > now_ms,
            _ => true,
        });
        // Compact: rewrite the live entries, then swap the file in atomically.
        let tmp = state_dir.join("seen.log.tmp");
        {
            let mut out = File::create(&tmp)?;
            for (id, entry) in &entries {
                let record = to_record(id, entry);
                out.write_all(
                    serde_json::to_string(&record)
                        .expect("records serialize")
                        .as_bytes(),
                )?;
                out.write_all(b"\n")?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        let file = OpenOptions::new().append(true).open(&path)?;
        Ok(SeenStore {
            path,
            file,
            entries,
        })
    }

    /// What is known about `id`.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// Records that `id` will run. `false` (and nothing written) if it was seen before.
    pub fn claim(&mut self, id: &str, row_hash: &str, expires_at_ms: i64) -> std::io::Result<bool> {
        if self.entries.contains_key(id) {
            return Ok(false);
        }
        self.append(Record::Claimed {
            id: id.to_owned(),
            row_hash: row_hash.to_owned(),
            expires_at_ms,
        })?;
        Ok(true)
    }

    /// Records a result (to be sent until acknowledged).
    pub fn finish(
        &mut self,
        id: &str,
        expires_at_ms: i64,
        result: SignedResult,
    ) -> std::io::Result<()> {
        self.append(Record::Done {
            id: id.to_owned(),
            expires_at_ms,
            result,
        })
    }

    /// Records that the brain stored the result.
    pub fn ack(&mut self, id: &str) -> std::io::Result<()> {
        let expires_at_ms = match self.entries.get(id) {
            Some(Entry::Done { expires_at_ms, .. }) => *expires_at_ms,
            _ => return Ok(()),
        };
        self.append(Record::Acked {
            id: id.to_owned(),
            expires_at_ms,
        })
    }

    /// Results the brain has not acknowledged yet.
    pub fn unacked(&self) -> Vec<SignedResult> {
        let mut results: Vec<SignedResult> = self
            .entries
            .values()
            .filter_map(|e| match e {
                Entry::Done { result, .. } => Some(result.clone()),
                _ => None,
            })
            .collect();
        results.sort_by(|a, b| a.result.finished_at_ms.cmp(&b.result.finished_at_ms));
        results
    }

    /// Commands claimed but never finished: interrupted by a crash.
    pub fn interrupted(&self) -> Vec<(String, String, i64)> {
        self.entries
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Claimed {
                    row_hash,
                    expires_at_ms,
                } => Some((id.clone(), row_hash.clone(), *expires_at_ms)),
                _ => None,
            })
            .collect()
    }

    /// Number of remembered ids.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Where the log lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn append(&mut self, record: Record) -> std::io::Result<()> {
        let mut line = serde_json::to_string(&record).expect("records serialize");
        line.push('\n');
        self.file.write_all(line.as_bytes())?;
        self.file.sync_data()?;
        apply(&mut self.entries, record);
        Ok(())
    }
}

fn apply(entries: &mut HashMap<String, Entry>, record: Record) {
    match record {
        Record::Claimed {
            id,
            row_hash,
            expires_at_ms,
        } => {
            entries.entry(id).or_insert(Entry::Claimed {
                row_hash,
                expires_at_ms,
            });
        }
        Record::Done {
            id,
            expires_at_ms,
            result,
        } => {
            entries.insert(
                id,
                Entry::Done {
                    result,
                    expires_at_ms,
                },
            );
        }
        Record::Acked { id, expires_at_ms } => {
            entries.insert(id, Entry::Acked { expires_at_ms });
        }
    }
}

fn to_record(id: &str, entry: &Entry) -> Record {
    match entry {
        Entry::Claimed {
            row_hash,
            expires_at_ms,
        } => Record::Claimed {
            id: id.to_owned(),
            row_hash: row_hash.clone(),
            expires_at_ms: *expires_at_ms,
        },
        Entry::Done {
            result,
            expires_at_ms,
        } => Record::Done {
            id: id.to_owned(),
            expires_at_ms: *expires_at_ms,
            result: result.clone(),
        },
        Entry::Acked { expires_at_ms } => Record::Acked {
            id: id.to_owned(),
            expires_at_ms: *expires_at_ms,
        },
    }
}

#[cfg(test)]
mod tests {
    use taskward_shared::crypto::generate_signing_key;
    use taskward_shared::protocol::{CommandResult, Outcome};

    use super::*;

    fn result(id: &str) -> SignedResult {
        SignedResult::sign(
            CommandResult {
                command_id: id.into(),
                row_hash: "h".into(),
                agent_id: "a".into(),
                session: 1,
                outcome: Outcome::Succeeded,
                detail: String::new(),
                finished_at_ms: "1".into(),
            },
            &generate_signing_key(),
        )
    }

    #[test]
    fn claims_survive_a_restart_and_are_never_granted_twice() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SeenStore::open(dir.path(), 0).unwrap();
        assert!(store.claim("c1", "h1", 1000).unwrap());
        assert!(!store.claim("c1", "h1", 1000).unwrap());
        assert!(store.claim("c2", "h2", 1000).unwrap());
        store.finish("c2", 1000, result("c2")).unwrap();
        drop(store);

        let mut store = SeenStore::open(dir.path(), 0).unwrap();
        assert!(
            !store.claim("c1", "h1", 1000).unwrap(),
            "seen before the restart"
        );
        assert_eq!(store.interrupted(), vec![("c1".into(), "h1".into(), 1000)]);
        assert_eq!(store.unacked().len(), 1);
        store.ack("c2").unwrap();
        assert!(store.unacked().is_empty());
    }

    #[test]
    fn a_torn_last_line_is_ignored_and_old_acked_ids_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SeenStore::open(dir.path(), 0).unwrap();
        store.claim("old", "h", 10).unwrap();
        store.finish("old", 10, result("old")).unwrap();
        store.ack("old").unwrap();
        store.claim("new", "h", 10_000_000_000).unwrap();
        drop(store);
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join("seen.log"))
            .unwrap();
        file.write_all(br#"{"state":"claimed","id":"tor"#).unwrap();
        let store = SeenStore::open(dir.path(), 10 + RETAIN_AFTER_EXPIRY_MS + 1).unwrap();
        assert!(store.get("old").is_none(), "acked and long expired");
        assert!(store.get("new").is_some());
        assert!(store.get("tor").is_none());
    }
}
