//! Continuous verification of the audit log while the brain runs: each chain's new rows are
//! verified soon after they are appended ([`incremental`]), and a slow sweep re-verifies every
//! chain from genesis at a bounded rate ([`sweep`]), so a row altered long after it was written
//! is found too. A break is reported once (an ERROR line), kept (`/readyz`, `/metrics`, the
//! dashboard banner) and stops checkpoints of that chain; everything else keeps serving.
//!
//! The keys trusted are the brain's own keyring. Each chain starts from its last checkpoint
//! in `checkpoints.log` (the database must still hold that head), or from genesis.

pub mod incremental;
pub mod signed_here;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use serde::Serialize;
use taskward_shared::audit::verify::{ChainVerifier, Failure, Problem, TrustedKeys};
use taskward_shared::audit::{AuditRow, Checkpoint, genesis_hash, parse_hash};
use utoipa::ToSchema;

use self::incremental::Point;
use self::sweep::{Found, RowSource, Sweep};
use super::{CHECKPOINT_FILE, PAGE};
use crate::keys::Keys;
use crate::store::{Store, StoreError, StoreResult, audit as audit_store, audit_watch as queries};

/// A broken chain: where it first goes wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChainBreak {
    /// Chain name.
    pub chain: String,
    /// The first bad row found (for a truncation, the first missing one).
    pub first_bad_seq: u64,
    /// What is wrong with it.
    pub why: String,
}

impl std::fmt::Display for ChainBreak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "audit chain {} is broken at row {}: {}",
            self.chain, self.first_bad_seq, self.why
        )
    }
}

/// The verification state of every chain, shared by the background jobs, the checkpoint
/// signer and the readers of the status.
pub struct AuditWatch {
    data_dir: PathBuf,
    /// Each chain's verified point. Held while a chain is being advanced, so the background
    /// job and a checkpoint request never verify the same rows twice.
    progress: Mutex<HashMap<String, Point>>,
    sweep: Mutex<Sweep>,
    breaks: RwLock<BTreeMap<String, ChainBreak>>,
    broken: AtomicBool,
    /// The last checkpoint of each chain with a valid signature: read from `checkpoints.log`
    /// once, then kept up to date as the brain signs.
    checkpoints: Mutex<Option<HashMap<String, Checkpoint>>>,
}

impl AuditWatch {
    /// A watch over the chains of the brain whose data directory is `data_dir`.
    pub fn new(data_dir: &Path) -> AuditWatch {
        AuditWatch {
            data_dir: data_dir.to_owned(),
            progress: Mutex::default(),
            sweep: Mutex::default(),
            breaks: RwLock::default(),
            broken: AtomicBool::new(false),
            checkpoints: Mutex::default(),
        }
    }

    /// Whether any chain is broken (one atomic load: the dashboard asks on every page).
    pub fn any_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// The broken chains, by name.
    pub fn breaks(&self) -> Vec<ChainBreak> {
        self.breaks
            .read()
            .expect("breaks lock")
            .values()
            .cloned()
            .collect()
    }

    /// The break of one chain, if it is broken.
    pub fn break_of(&self, chain: &str) -> Option<ChainBreak> {
        self.breaks.read().expect("breaks lock").get(chain).cloned()
    }

    /// Every chain the watch has verified a point of, with its status (for the gauges).
    pub fn chains(&self) -> Vec<(String, Option<u64>)> {
        let mut names: Vec<String> = self
            .progress
            .lock()
            .expect("progress lock")
            .keys()
            .cloned()
            .collect();
        let breaks = self.breaks.read().expect("breaks lock");
        names.extend(breaks.keys().cloned());
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|chain| {
                let bad = breaks.get(&chain).map(|b| b.first_bad_seq);
                (chain, bad)
            })
            .collect()
    }

    /// Records a break; logs it once (again only if an earlier bad row turns up).
    pub fn record_break(&self, chain: &str, failure: &Failure) {
        let mut breaks = self.breaks.write().expect("breaks lock");
        if breaks
            .get(chain)
            .is_some_and(|known| known.first_bad_seq <= failure.seq)
        {
            return;
        }
        let found = ChainBreak {
            chain: chain.to_owned(),
            first_bad_seq: failure.seq,
            why: failure.problem.to_string(),
        };
        tracing::error!(chain = %found.chain, first_bad_seq = found.first_bad_seq, why = %found.why,
            "audit chain broken: the database no longer holds the log the brain signed; \
             checkpoints of this chain stop until it is investigated");
        breaks.insert(chain.to_owned(), found);
        self.broken.store(true, Ordering::Relaxed);
    }

    /// Verifies the rows `chain` gained since its verified point, up to its head, and returns
    /// the new verified point, or the chain's break. Blocking.
    pub fn advance(
        &self,
        store: &Store,
        keys: &Keys,
        chain: &str,
    ) -> StoreResult<Result<Point, ChainBreak>> {
        if let Some(known) = self.break_of(chain) {
            return Ok(Err(known));
        }
        let mut progress = self.progress.lock().expect("progress lock");
        let mut point = match progress.get(chain) {
            Some(point) => *point,
            None => match self.starting_point(store, keys, chain)? {
                Ok(point) => point,
                Err(failure) => {
                    self.record_break(chain, &failure);
                    return Ok(Err(self.break_of(chain).expect("just recorded")));
                }
            },
        };
        let mut reloaded = false;
        loop {
            let owned = chain.to_owned();
            let after = point.seq;
            let rows = store.read_blocking("audit_watch_page", move |conn| {
                audit_store::page(conn, &owned, after, PAGE)
            })?;
            if rows.is_empty() {
                break;
            }
            match incremental::verify_rows(chain, &trusted(keys)?, point, &rows) {
                Ok(next) => point = next,
                Err(failure)
                    if matches!(failure.problem, Problem::UnknownKey(_))
                        && !reloaded
                        && keys.reload_if_changed().unwrap_or(false) =>
                {
                    // Rotated by another process a moment ago: check again with the new ring.
                    reloaded = true;
                    continue;
                }
                Err(failure) => {
                    progress.insert(chain.to_owned(), point);
                    drop(progress);
                    self.record_break(chain, &failure);
                    return Ok(Err(self.break_of(chain).expect("just recorded")));
                }
            }
            signed_here::forget_through(chain, point.seq);
            if (rows.len() as i64) < PAGE {
                break;
            }
        }
        progress.insert(chain.to_owned(), point);
        Ok(Ok(point))
    }

    /// Advances every chain that grew. Returns the breaks found.
    pub fn advance_all(&self, store: &Store, keys: &Keys) -> StoreResult<Vec<ChainBreak>> {
        let heads = store.read_blocking("audit_watch_heads", queries::heads)?;
        let mut broken = Vec::new();
        for (chain, size) in heads {
            let verified = self
                .progress
                .lock()
                .expect("progress lock")
                .get(&chain)
                .map(|p| p.seq);
            if verified.is_some_and(|seq| seq >= size) {
                continue;
            }
            if let Err(found) = self.advance(store, keys, &chain)? {
                broken.push(found);
            }
        }
        Ok(broken)
    }

    /// Sweeps up to `rows` rows of the whole log from genesis (continuing the last step).
    /// Returns the chains swept to their head in this step. Blocking.
    pub fn sweep(&self, store: &Store, keys: &Keys, rows: u64) -> StoreResult<Vec<String>> {
        let ring = keys.public_keys();
        let found = {
            let mut sweep = self.sweep.lock().expect("sweep lock");
            let checkpoints = self.known_checkpoints(keys)?;
            sweep.step(
                &mut StoreRows(store),
                &ring,
                |chain| checkpoints.get(chain).cloned(),
                rows,
            )?
        };
        let mut verified = Vec::new();
        for item in found {
            match item {
                Found::Verified(chain) => verified.push(chain),
                Found::Broken(chain, failure) => self.record_break(&chain, &failure),
            }
        }
        Ok(verified)
    }

    /// Tells the watch about a checkpoint the brain signed (the sweep checks its head).
    pub fn note_checkpoint(&self, checkpoint: &Checkpoint) {
        if let Some(known) = self.checkpoints.lock().expect("checkpoints lock").as_mut() {
            known.insert(checkpoint.chain.clone(), checkpoint.clone());
        }
    }

    /// Where a chain's incremental verification starts: its last checkpoint, if the database
    /// still holds that head, else genesis.
    fn starting_point(
        &self,
        store: &Store,
        keys: &Keys,
        chain: &str,
    ) -> StoreResult<Result<Point, Failure>> {
        let checkpoint = self.known_checkpoints(keys)?.get(chain).cloned();
        let Some(checkpoint) = checkpoint.filter(|cp| cp.size > 0) else {
            return Ok(Ok(Point {
                seq: 0,
                hash: genesis_hash(chain),
            }));
        };
        let (owned, size) = (chain.to_owned(), checkpoint.size);
        let row: Option<AuditRow> = match store.read_blocking("audit_watch_row", move |conn| {
            audit_store::row_at(conn, &owned, size)
        }) {
            Ok(row) => Some(row),
            Err(StoreError::NotFound) => None,
            Err(other) => return Err(other),
        };
        let head = parse_hash(&checkpoint.head).expect("checked checkpoints have a hex head");
        Ok(match row {
            None => Err(Failure {
                seq: size,
                problem: Problem::Truncated {
                    rows: size.saturating_sub(1),
                    size,
                },
            }),
            Some(row) if parse_hash(&row.hash) != Some(head) || row.chain != chain => {
                Err(Failure {
                    seq: size,
                    problem: Problem::CheckpointMismatch { size },
                })
            }
            Some(_) => Ok(Point {
                seq: size,
                hash: head,
            }),
        })
    }

    /// The last validly signed checkpoint of every chain, read from `checkpoints.log` on first
    /// use (streamed: the file grows for as long as the brain runs).
    fn known_checkpoints(&self, keys: &Keys) -> StoreResult<HashMap<String, Checkpoint>> {
        let mut guard = self.checkpoints.lock().expect("checkpoints lock");
        let known = match guard.as_ref() {
            Some(known) => known,
            None => guard.insert(read_last_checkpoints(
                &self.data_dir.join(CHECKPOINT_FILE),
                &trusted(keys)?,
            )),
        };
        Ok(known.clone())
    }
}

fn trusted(keys: &Keys) -> StoreResult<TrustedKeys> {
    TrustedKeys::from_infos(&keys.public_keys()).map_err(StoreError::Unavailable)
}

/// The last checkpoint of each chain whose signature verifies; unreadable lines and bad
/// signatures are skipped with a warning (the sweep then starts that chain from genesis).
fn read_last_checkpoints(path: &Path, trusted: &TrustedKeys) -> HashMap<String, Checkpoint> {
    let mut last: HashMap<String, Checkpoint> = HashMap::new();
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return last,
        Err(err) => {
            tracing::warn!(path = %path.display(), %err, "cannot read the checkpoint log");
            return last;
        }
    };
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let Ok(line) = line else { break };
        if line.trim().is_empty() {
            continue;
        }
        let Ok(checkpoint) = serde_json::from_str::<Checkpoint>(&line) else {
            tracing::warn!(path = %path.display(), line = n + 1, "unreadable checkpoint skipped");
            continue;
        };
        if ChainVerifier::new(&checkpoint.chain, trusted.clone(), Some(checkpoint.clone())).is_err()
        {
            tracing::warn!(path = %path.display(), line = n + 1, chain = %checkpoint.chain,
                "checkpoint with a bad signature skipped");
            continue;
        }
        if last
            .get(&checkpoint.chain)
            .is_none_or(|known| checkpoint.size >= known.size)
        {
            last.insert(checkpoint.chain.clone(), checkpoint);
        }
    }
    last
}

struct StoreRows<'a>(&'a Store);

impl RowSource for StoreRows<'_> {
    fn chains(&mut self) -> StoreResult<Vec<String>> {
        Ok(self
            .0
            .read_blocking("audit_watch_heads", queries::heads)?
            .into_iter()
            .map(|(chain, _)| chain)
            .collect())
    }

    fn page(&mut self, chain: &str, after: u64, limit: i64) -> StoreResult<Vec<AuditRow>> {
        let owned = chain.to_owned();
        self.0.read_blocking("audit_watch_sweep_page", move |conn| {
            audit_store::page(conn, &owned, after, limit)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(seq: u64) -> Failure {
        Failure {
            seq,
            problem: Problem::HashMismatch,
        }
    }

    #[test]
    fn a_break_is_kept_once_and_only_an_earlier_row_replaces_it() {
        let dir = tempfile::tempdir().unwrap();
        let watch = AuditWatch::new(dir.path());
        assert!(!watch.any_broken());
        watch.record_break("project:a", &failure(7));
        watch.record_break("project:a", &failure(7));
        watch.record_break("project:a", &failure(9));
        assert_eq!(watch.breaks().len(), 1);
        assert_eq!(watch.break_of("project:a").unwrap().first_bad_seq, 7);
        watch.record_break("project:a", &failure(3));
        assert_eq!(watch.break_of("project:a").unwrap().first_bad_seq, 3);
        assert!(watch.any_broken());
        assert_eq!(watch.chains(), [("project:a".to_owned(), Some(3))]);
    }
}
