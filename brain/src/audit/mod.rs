//! Checkpoints, verification and export of the audit log. The byte formats and the verifier
//! itself live in `taskward_shared::audit`, so auditors and agents use the same code.

pub mod export;
pub mod watch;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use taskward_shared::audit::verify::{ChainVerifier, Failure, Problem, Summary, TrustedKeys};
use taskward_shared::audit::{AuditRow, Checkpoint, PublicKeyInfo};

use crate::keys::Keys;
use crate::store::{Store, StoreError, StoreResult, audit as audit_store, now_ms};

/// Name of the append-only checkpoint file in the data directory.
pub const CHECKPOINT_FILE: &str = "checkpoints.log";

/// Format tag on the first line of an export.
pub const EXPORT_FORMAT: &str = "taskward-audit-export/v1";

/// Rows read per query while verifying or exporting: bounded memory at any log size.
pub const PAGE: i64 = 2000;

/// First line of an export: which chain, and the public keys that signed it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExportHeader {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// The chain exported.
    pub chain: String,
    /// Every public key of the brain, as `GET /api/v1/signing-keys` serves them.
    pub keys: Vec<PublicKeyInfo>,
}

/// Why no checkpoint was signed.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The chain does not verify: the brain does not sign over it.
    #[error("{0}")]
    Broken(watch::ChainBreak),
}

/// Verifies the chain from its last verified point (at worst its last checkpoint) to its
/// head, then signs a checkpoint of exactly what was verified, appends it to
/// `checkpoints.log` (fsync'ed) and records it. A broken chain is never checkpointed.
/// Blocking.
pub fn checkpoint_now(
    store: &Store,
    keys: &Keys,
    data_dir: &Path,
    watch: &watch::AuditWatch,
    chain: &str,
) -> Result<Checkpoint, CheckpointError> {
    let point = watch
        .advance(store, keys, chain)?
        .map_err(CheckpointError::Broken)?;
    Ok(write_checkpoint(
        store, keys, data_dir, watch, chain, point,
    )?)
}

/// Checkpoints every chain that grew since its last checkpoint, each at the point verified
/// just before; broken chains are skipped (the watch has reported them). Blocking.
pub fn checkpoint_grown_chains(
    store: &Store,
    keys: &Keys,
    data_dir: &Path,
    watch: &watch::AuditWatch,
) -> StoreResult<usize> {
    let heads = store.read_blocking(
        "audit_heads_to_checkpoint",
        audit_store::heads_needing_checkpoint,
    )?;
    let mut signed = 0;
    for head in &heads {
        match watch.advance(store, keys, &head.chain)? {
            Ok(point) if point.seq > head.checkpointed => {
                write_checkpoint(store, keys, data_dir, watch, &head.chain, point)?;
                signed += 1;
            }
            Ok(_) => {}
            Err(_broken) => {}
        }
    }
    Ok(signed)
}

fn write_checkpoint(
    store: &Store,
    keys: &Keys,
    data_dir: &Path,
    watch: &watch::AuditWatch,
    chain: &str,
    point: watch::incremental::Point,
) -> StoreResult<Checkpoint> {
    // Never dated before its head row (rows are dated no earlier than their predecessor, so
    // after a clock step back a row can be ahead of the clock), and signed by the key whose
    // window holds that time, as rows are.
    let head_time = match point.seq {
        0 => i64::MIN,
        seq => {
            let owned = chain.to_owned();
            store.read_blocking("audit_head_time", move |conn| {
                audit_store::row_time(conn, &owned, seq)
            })?
        }
    };
    let time = now_ms().max(head_time);
    let checkpoint = Checkpoint::sign(chain, point.seq, &point.hash, time, &keys.signer_at(time));
    append_line(&data_dir.join(CHECKPOINT_FILE), &checkpoint)
        .map_err(|e| StoreError::Unavailable(format!("cannot write {CHECKPOINT_FILE}: {e}")))?;
    watch.note_checkpoint(&checkpoint);
    let owned = chain.to_owned();
    let size = point.seq;
    store.write_blocking("audit_mark_checkpointed", move |conn| {
        audit_store::mark_checkpointed(conn, &owned, size)
    })?;
    Ok(checkpoint)
}

fn append_line(path: &Path, checkpoint: &Checkpoint) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let mut line = serde_json::to_string(checkpoint).expect("checkpoints serialize");
    line.push('\n');
    file.write_all(line.as_bytes())?;
    file.sync_data()
}

/// Reads every checkpoint for `chain` from a file holding one checkpoint (JSON) or many (JSON
/// Lines, such as `checkpoints.log`), in file order. Each one is held against the chain.
pub fn read_checkpoints(path: &Path, chain: &str) -> Result<Vec<Checkpoint>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if let Ok(single) = serde_json::from_str::<Checkpoint>(&text) {
        return Ok(if single.chain == chain {
            vec![single]
        } else {
            Vec::new()
        });
    }
    let mut found = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let checkpoint: Checkpoint = serde_json::from_str(line)
            .map_err(|e| format!("{} line {}: {e}", path.display(), n + 1))?;
        if checkpoint.chain == chain {
            found.push(checkpoint);
        }
    }
    Ok(found)
}

/// The largest checkpoint for `chain` in a checkpoint file (see [`read_checkpoints`]).
pub fn read_checkpoint(path: &Path, chain: &str) -> Result<Option<Checkpoint>, String> {
    Ok(read_checkpoints(path, chain)?
        .into_iter()
        .max_by_key(|c| c.size))
}

/// How a verification ended: verified, or the first bad row.
pub type Verdict = Result<Summary, Failure>;

/// How strictly `audit verify` holds a chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Excuse a brain key that kept signing up to this long after its window ended (brains
    /// before atomic rotation did, for up to about a second).
    pub key_grace_ms: i64,
    /// A checkpoint file kept outside the database: every checkpoint in it for the chain is
    /// held against the chain.
    pub checkpoint_file: Option<PathBuf>,
    /// A checkpoint file without a checkpoint for the chain is a failure (a cut-off or
    /// rewritten log would pass unseen) unless this is set; then it is only a warning.
    pub allow_missing_checkpoint: bool,
}

impl VerifyOptions {
    /// A verifier for `chain` holding the options' checkpoints; `Ok(Err(..))` when the chain
    /// fails before its first row (a bad or missing checkpoint). `warn` hears what is only
    /// a warning.
    pub fn verifier(
        &self,
        chain: &str,
        trusted: TrustedKeys,
        warn: &mut dyn FnMut(String),
    ) -> Result<Result<ChainVerifier, Failure>, String> {
        let checkpoints = match &self.checkpoint_file {
            None => Vec::new(),
            Some(path) => {
                let found = read_checkpoints(path, chain)?;
                if found.is_empty() {
                    if !self.allow_missing_checkpoint {
                        return Ok(Err(Failure {
                            seq: 0,
                            problem: Problem::NoCheckpoint,
                        }));
                    }
                    warn(format!(
                        "warning: {} has no checkpoint for {chain}; verified without one \
                         (--allow-missing-checkpoint)",
                        path.display()
                    ));
                }
                found
            }
        };
        Ok(ChainVerifier::with_key_grace(
            chain,
            trusted,
            checkpoints,
            self.key_grace_ms,
        ))
    }
}

/// Verifies a chain straight from the database, page by page, holding it to `checkpoints`.
/// `progress` is told the number of rows checked after each page.
pub fn verify_live(
    store: &Store,
    trusted: TrustedKeys,
    chain: &str,
    checkpoints: impl IntoIterator<Item = Checkpoint>,
    progress: impl FnMut(u64),
) -> StoreResult<Verdict> {
    match ChainVerifier::new(chain, trusted, checkpoints) {
        Ok(verifier) => verify_rows_live(store, verifier, chain, progress),
        Err(failure) => Ok(Err(failure)),
    }
}

/// Feeds a chain's rows from the database to `verifier`, page by page.
pub fn verify_rows_live(
    store: &Store,
    mut verifier: ChainVerifier,
    chain: &str,
    mut progress: impl FnMut(u64),
) -> StoreResult<Verdict> {
    let mut after = verifier.rows();
    loop {
        let owned = chain.to_owned();
        let rows = store.read_blocking("audit_page", move |conn| {
            audit_store::page(conn, &owned, after, PAGE)
        })?;
        let Some(last) = rows.last() else { break };
        after = last.seq;
        for row in &rows {
            if let Err(failure) = verifier.push(row) {
                return Ok(Err(failure));
            }
        }
        progress(verifier.rows());
    }
    Ok(verifier.finish())
}

/// Verifies an export (JSON Lines: an [`ExportHeader`], then one [`AuditRow`] per line) with
/// the given keys, or with the keys in its header when none are given.
pub fn verify_export(
    reader: impl BufRead,
    trusted: Option<TrustedKeys>,
    options: &VerifyOptions,
    warn: &mut dyn FnMut(String),
    mut progress: impl FnMut(u64),
) -> Result<Verdict, String> {
    let mut lines = reader.lines().enumerate();
    let header_line = lines
        .next()
        .ok_or("the export is empty")?
        .1
        .map_err(|e| e.to_string())?;
    let header: ExportHeader = serde_json::from_str(&header_line)
        .map_err(|e| format!("line 1 is not an export header: {e}"))?;
    if header.format != EXPORT_FORMAT {
        return Err(format!("unknown export format {:?}", header.format));
    }
    let trusted = match trusted {
        Some(keys) => keys,
        None => TrustedKeys::from_infos(&header.keys)?,
    };
    let mut verifier = match options.verifier(&header.chain, trusted, warn)? {
        Ok(v) => v,
        Err(failure) => return Ok(Err(failure)),
    };
    for (n, line) in lines {
        let line = line.map_err(|e| e.to_string())?;
        if line.trim().is_empty() {
            continue;
        }
        let row: AuditRow =
            serde_json::from_str(&line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Err(failure) = verifier.push(&row) {
            return Ok(Err(failure));
        }
        if verifier.rows() % 100_000 == 0 {
            progress(verifier.rows());
        }
    }
    Ok(verifier.finish())
}

/// The keys file format served by `GET /api/v1/signing-keys` and read by `audit verify --keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeysFile {
    /// Every public key.
    pub keys: Vec<PublicKeyInfo>,
}

/// Reads a keys file (`{"keys": [...]}` or a bare array).
pub fn read_keys_file(path: &Path) -> Result<TrustedKeys, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a keys file: not JSON: {e}", path.display()))?;
    let infos = match value {
        serde_json::Value::Array(_) => serde_json::from_value::<Vec<PublicKeyInfo>>(value),
        _ => serde_json::from_value::<KeysFile>(value).map(|f| f.keys),
    }
    .map_err(|e| {
        format!(
            "{}: not a keys file (expected {{\"keys\": [...]}} or a bare array of keys): {e}",
            path.display()
        )
    })?;
    TrustedKeys::from_infos(&infos)
}
