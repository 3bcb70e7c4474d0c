//! Verifying a chain with nothing but trusted public keys (and optionally checkpoints kept
//! outside the database).
//!
//! Rows are pushed in sequence order. Each row must be, byte for byte, what an honest brain
//! writes: lowercase hex ([`format`]), a canonical statement, the hash of its own bytes linked
//! to the row before, times that never go back, signed by a trusted key inside that key's
//! validity window. Its meaning is held to the rows before it ([`commands`]): an agent's signed
//! result must verify with the key the agent enrolled earlier and say what the row says.
//! Checkpoints ([`checkpoints`]) must each match the row at their size. Signatures (the
//! brain's and the agents') are checked in batches on worker threads ([`signatures`]); before
//! any failure is reported the queued signatures are checked too, so the failure reported is
//! always the earliest bad row.

mod checkpoints;
mod commands;
mod format;
mod keys;
mod kinds;
mod signatures;

use ed25519_dalek::Signature;

pub use keys::{TrustedKeys, Window};
pub use signatures::BATCH;

use super::{
    AuditRow, Checkpoint, Hash, Statement, genesis_hash, parse_hash, row_hash, signature_message,
};
use checkpoints::Expected;
use commands::Ledger;
use signatures::{Pending, Signatures, Signer};

/// Checks one row on its own (not its place in a chain): its hash recomputes from its bytes,
/// it is signed strictly by a trusted key, and its statement names its position. For readers
/// that hold single rows: agents checking commands, the API showing signature status.
pub fn check_row(keys: &TrustedKeys, row: &AuditRow) -> Result<Statement, String> {
    let prev = parse_hash(&row.prev_hash).ok_or("row has a malformed prev_hash")?;
    let hash = row_hash(row.seq, &prev, row.statement.as_bytes());
    if parse_hash(&row.hash) != Some(hash) {
        return Err("row hash does not match its content".into());
    }
    let key = keys
        .get(&row.key_id)
        .ok_or_else(|| format!("signed by key {} that is not trusted", row.key_id))?;
    let signature = hex::decode(&row.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or("malformed signature")?;
    key.verify_strict(&signature_message(&row.key_id, &hash), &signature)
        .map_err(|_| "bad brain signature".to_owned())?;
    let statement: Statement =
        serde_json::from_str(&row.statement).map_err(|e| format!("malformed statement: {e}"))?;
    if statement.seq != row.seq.to_string() || statement.chain != row.chain {
        return Err("statement does not match its row".into());
    }
    Ok(statement)
}

/// What is wrong with a row (or with the log as a whole).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// A row belongs to another chain.
    #[error("row belongs to chain {found:?}, not {expected:?}")]
    WrongChain {
        /// The chain being verified.
        expected: String,
        /// The row's chain.
        found: String,
    },
    /// Rows are missing before this one.
    #[error("expected row {expected} next, found row {found} (rows were removed or reordered)")]
    Gap {
        /// The seq that should come next.
        expected: u64,
        /// The seq that came.
        found: u64,
    },
    /// A seq repeats or goes backwards.
    #[error(
        "out of order: expected row {expected}, found row {found} (rows duplicated or reordered)"
    )]
    OutOfOrder {
        /// The seq that should come next.
        expected: u64,
        /// The seq that came.
        found: u64,
    },
    /// The statement names another position than the row sits at.
    #[error("reordered: the row at {position} carries the statement of {statement}")]
    Moved {
        /// Where the row sits (chain/seq).
        position: String,
        /// What its statement says (chain/seq).
        statement: String,
    },
    /// The statement or a field cannot be read.
    #[error("malformed row: {0}")]
    Malformed(String),
    /// A hash, signature or key id is not lowercase hex of its length.
    #[error("{0} is not lowercase hex of the right length (the row was re-encoded)")]
    NotLowerHex(&'static str),
    /// The statement's bytes are not its canonical (RFC 8785) encoding.
    #[error("the statement is not in canonical form (its bytes were re-encoded or edited)")]
    NotCanonical,
    /// `prev_hash` is not the previous row's hash.
    #[error(
        "prev_hash does not match the previous row (a row before it was altered, removed or inserted)"
    )]
    BrokenLink,
    /// The stored hash is not the hash of this row's contents.
    #[error("hash mismatch (the row's statement or position was altered)")]
    HashMismatch,
    /// An index column disagrees with the statement.
    #[error(
        "column {column} is {found} but the statement says {expected} (the column was altered)"
    )]
    ColumnMismatch {
        /// Which column.
        column: &'static str,
        /// The statement's value.
        expected: String,
        /// The column's value.
        found: String,
    },
    /// The row's time is before the previous row's.
    #[error("time goes back: {time} is before the previous row's {previous} (back-dated)")]
    TimeWentBack {
        /// The previous row's time.
        previous: String,
        /// This row's time.
        time: String,
    },
    /// A kind the protocol does not define: nothing it says can be checked.
    #[error("unknown kind {0:?} (the protocol defines no such row)")]
    UnknownKind(String),
    /// A known kind in the wrong place: on the other chain, or with or without a command id
    /// against the rules.
    #[error("{0}")]
    Kind(String),
    /// The row names an actor that never writes its kind.
    #[error("actor: {0}")]
    Actor(String),
    /// The payload does not have exactly the members (and types) its kind defines.
    #[error("payload: {0}")]
    Payload(String),
    /// A `key.rotated` row disagrees with the trusted keys or with itself.
    #[error("key rotation: {0}")]
    KeyRotation(String),
    /// The signing key is not trusted.
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    /// The signing key was not allowed to sign at the row's time.
    #[error("signed by key {key_id} at {time}, {why}")]
    KeyOutsideWindow {
        /// The key.
        key_id: String,
        /// The row's time.
        time: String,
        /// Where the time falls.
        why: String,
    },
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The agent's signature on the result the row carries does not verify.
    #[error("bad agent signature: the enrolled agent did not sign this result")]
    BadAgentSignature,
    /// The agent's result does not say what the row says, or cannot be checked.
    #[error("agent result: {0}")]
    AgentResult(String),
    /// A command row does not fit the command's earlier rows.
    #[error("command: {0}")]
    Command(String),
    /// A second late outcome for one command.
    #[error("a second late outcome for command {0} (at most one is recorded)")]
    SecondLate(String),
    /// The checkpoint is not validly signed by a trusted key, or is for another chain.
    #[error("checkpoint is invalid: {0}")]
    BadCheckpoint(String),
    /// Checkpoints were required but none is for this chain.
    #[error("no checkpoint for this chain: the export could be cut off or rewritten unseen")]
    NoCheckpoint,
    /// The log ends before the checkpoint's size.
    #[error("truncated: the log has {rows} rows but a checkpoint covers {size}")]
    Truncated {
        /// Rows in the log.
        rows: u64,
        /// Rows the checkpoint covers.
        size: u64,
    },
    /// The row at the checkpoint's size has another hash than the checkpoint's head.
    #[error("rewritten: row {size} does not have the checkpoint's head hash")]
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// The checkpoint is dated before the row it names as head: it cannot have been taken
    /// of this chain (a row was back-dated, or the checkpoint forged with an old time).
    #[error("the checkpoint of size {size} is dated before its head row")]
    CheckpointBeforeHead {
        /// The checkpoint's size.
        size: u64,
    },
}

/// The first bad row and why (`seq` 0: the chain as a whole, e.g. no checkpoint for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The seq of the first bad row (for a truncation: the first missing row).
    pub seq: u64,
    /// What is wrong.
    pub problem: Problem,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.seq == 0 {
            write!(f, "{}", self.problem)
        } else {
            write!(f, "row {}: {}", self.seq, self.problem)
        }
    }
}

impl std::error::Error for Failure {}

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows verified.
    pub rows: u64,
    /// Hex hash of the last row (the genesis hash for an empty chain).
    pub head: String,
    /// The largest size a checkpoint held against the chain covered (`None`: no checkpoint).
    pub checkpoint_covers: Option<u64>,
    /// Rows signed after their key's window that only `--key-grace-ms` let pass.
    pub excused_by_grace: u64,
}

/// Verifies one chain, row by row.
pub struct ChainVerifier {
    chain: String,
    keys: TrustedKeys,
    key_grace_ms: i64,
    /// Checked checkpoints by size; `next_checkpoint` is the first not yet reached.
    checkpoints: Vec<Expected>,
    next_checkpoint: usize,
    next_seq: u64,
    prev: Hash,
    /// The previous row's time (ms, text).
    last_time: Option<(i64, String)>,
    ledger: Ledger,
    signatures: Signatures,
    /// Keys retired by a scheduled switch (a `key.rotated` row with `switch_at_ms`) seen
    /// earlier: a brain that schedules switches never signs late, so no grace applies to them.
    scheduled_retired: Vec<String>,
    excused_by_grace: u64,
}

impl ChainVerifier {
    /// Starts verifying `chain` from its first row. Every checkpoint given (`None`, one, or
    /// a whole `checkpoints.log` worth for this chain) must be signed by a trusted key valid at
    /// its time, and the chain must match each.
    pub fn new(
        chain: &str,
        keys: TrustedKeys,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
    ) -> Result<ChainVerifier, Failure> {
        ChainVerifier::with_key_grace(chain, keys, checkpoints, 0)
    }

    /// [`ChainVerifier::new`] excusing a key that kept signing up to `grace_ms` after its
    /// window ended (a brain before atomic rotation did, for up to about a second). The
    /// checkpoints are checked with the same grace.
    pub fn with_key_grace(
        chain: &str,
        keys: TrustedKeys,
        checkpoints: impl IntoIterator<Item = Checkpoint>,
        grace_ms: i64,
    ) -> Result<ChainVerifier, Failure> {
        let checkpoints = checkpoints::check_all(chain, &keys, grace_ms, checkpoints)?;
        let mut verifier = ChainVerifier::start(chain, keys, 0, genesis_hash(chain), true);
        verifier.key_grace_ms = grace_ms;
        verifier.checkpoints = checkpoints;
        verifier.pass_empty_checkpoints();
        Ok(verifier)
    }

    /// Continues verifying `chain` after row `after_seq`, whose hash is `prev` (a point already
    /// verified, such as a checked checkpoint). What lies before is taken as given: a resumed
    /// verifier checks each later row's bytes, position, link, hash, columns, key window and
    /// signature, but cannot hold a row to facts from before it (the previous row's time, a
    /// command issued or an agent enrolled earlier; results for those are not checked).
    pub fn resume(chain: &str, keys: TrustedKeys, after_seq: u64, prev: Hash) -> ChainVerifier {
        ChainVerifier::start(chain, keys, after_seq, prev, after_seq == 0)
    }

    fn start(
        chain: &str,
        keys: TrustedKeys,
        after_seq: u64,
        prev: Hash,
        complete: bool,
    ) -> ChainVerifier {
        ChainVerifier {
            chain: chain.to_owned(),
            keys,
            key_grace_ms: 0,
            checkpoints: Vec::new(),
            next_checkpoint: 0,
            next_seq: after_seq + 1,
            prev,
            last_time: None,
            ledger: Ledger::new(chain, complete),
            signatures: Signatures::new(),
            scheduled_retired: Vec::new(),
            excused_by_grace: 0,
        }
    }

    /// Checkpoints of size 0 are matched at the start (their head was checked to be genesis).
    fn pass_empty_checkpoints(&mut self) {
        while self
            .checkpoints
            .get(self.next_checkpoint)
            .is_some_and(|cp| cp.size == 0)
        {
            self.next_checkpoint += 1;
        }
    }

    /// Whether any checkpoint is held against the chain.
    pub fn has_checkpoint(&self) -> bool {
        !self.checkpoints.is_empty()
    }

    /// Rows verified so far (signatures of the last few may still be pending).
    pub fn rows(&self) -> u64 {
        self.next_seq - 1
    }

    /// Checks the next row.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), Failure> {
        if let Err(problem) = self.check_row(row) {
            return Err(self.signature_failure().unwrap_or(Failure {
                seq: row.seq,
                problem,
            }));
        }
        if self.signatures.failed() {
            return Err(self
                .signature_failure()
                .expect("a known bad signature is found again"));
        }
        Ok(())
    }

    /// Checks every signature queued so far and returns where the chain stands: for a
    /// verifier kept alive to check rows as they are appended.
    pub fn sync(&mut self) -> Result<Summary, Failure> {
        match self.signature_failure() {
            Some(failure) => Err(failure),
            None => Ok(Summary {
                rows: self.rows(),
                head: hex::encode(self.prev),
                checkpoint_covers: self.checkpoints.last().map(|cp| cp.size),
                excused_by_grace: self.excused_by_grace,
            }),
        }
    }

    /// Finishes: checks the remaining signatures and that every checkpoint was reached.
    pub fn finish(mut self) -> Result<Summary, Failure> {
        let summary = self.sync()?;
        if let Some(largest) = self.checkpoints.last()
            && self.next_checkpoint < self.checkpoints.len()
        {
            return Err(Failure {
                seq: summary.rows + 1,
                problem: Problem::Truncated {
                    rows: summary.rows,
                    size: largest.size,
                },
            });
        }
        Ok(summary)
    }

    /// The earliest bad signature queued, as a failure.
    fn signature_failure(&mut self) -> Option<Failure> {
        self.signatures.drain().map(|(seq, signer)| Failure {
            seq,
            problem: match signer {
                Signer::Brain => Problem::BadSignature,
                Signer::Agent => Problem::BadAgentSignature,
            },
        })
    }

    /// The key may sign at `time`: inside its window, or (for a key not retired by a
    /// scheduled switch) within the grace the auditor allowed, which is counted.
    fn check_window(&mut self, key_id: &str, time: i64, text: &str) -> Result<(), Problem> {
        let grace = match self.scheduled_retired.iter().any(|k| k == key_id) {
            true => 0,
            false => self.key_grace_ms,
        };
        match self.keys.window(key_id, time, grace) {
            Some(Window::Inside) | None => {
                if grace > 0
                    && matches!(
                        self.keys.window(key_id, time, 0),
                        Some(Window::After { .. })
                    )
                {
                    self.excused_by_grace += 1;
                }
                Ok(())
            }
            Some(outside) => Err(Problem::KeyOutsideWindow {
                key_id: key_id.to_owned(),
                time: text.to_owned(),
                why: outside.describe(),
            }),
        }
    }

    fn check_row(&mut self, row: &AuditRow) -> Result<(), Problem> {
        if row.chain != self.chain {
            return Err(Problem::WrongChain {
                expected: self.chain.clone(),
                found: row.chain.clone(),
            });
        }
        if row.seq > self.next_seq {
            return Err(Problem::Gap {
                expected: self.next_seq,
                found: row.seq,
            });
        }
        if row.seq < self.next_seq {
            return Err(Problem::OutOfOrder {
                expected: self.next_seq,
                found: row.seq,
            });
        }
        let hex = format::row_hex(row)?;
        let statement = format::canonical_statement(&row.statement)?;
        if statement.chain != row.chain || statement.seq != row.seq.to_string() {
            return Err(Problem::Moved {
                position: format!("{}/{}", row.chain, row.seq),
                statement: format!("{}/{}", statement.chain, statement.seq),
            });
        }
        if hex.prev_hash != self.prev {
            return Err(Problem::BrokenLink);
        }
        let hash = row_hash(row.seq, &self.prev, row.statement.as_bytes());
        if hex.hash != hash {
            return Err(Problem::HashMismatch);
        }
        if statement.kind != row.kind {
            return Err(Problem::ColumnMismatch {
                column: "kind",
                expected: format!("{:?}", statement.kind),
                found: format!("{:?}", row.kind),
            });
        }
        if statement.command_id != row.command_id {
            let shown =
                |id: Option<&String>| id.map_or("absent".to_owned(), |id| format!("{id:?}"));
            return Err(Problem::ColumnMismatch {
                column: "command_id",
                expected: shown(statement.command_id.as_ref()),
                found: shown(row.command_id.as_ref()),
            });
        }
        let time = format::time_ms(&statement.time).ok_or_else(|| {
            Problem::Malformed(format!(
                "time {:?} is not YYYY-MM-DDTHH:MM:SS.mmmZ",
                statement.time
            ))
        })?;
        if let Some((previous, text)) = &self.last_time
            && time < *previous
        {
            return Err(Problem::TimeWentBack {
                previous: text.clone(),
                time: statement.time,
            });
        }
        let key = *self
            .keys
            .get(&row.key_id)
            .ok_or_else(|| Problem::UnknownKey(row.key_id.clone()))?;
        self.check_window(&row.key_id, time, &statement.time)?;
        kinds::check(&self.chain, &statement)?;
        if statement.kind == "key.rotated" {
            self.keys
                .check_rotation(&row.key_id, time, &statement.payload)
                .map_err(Problem::KeyRotation)?;
            if statement.payload.get("switch_at_ms").is_some() {
                self.scheduled_retired.push(row.key_id.clone());
            }
        }
        if let Some(cp) = self.checkpoints.get(self.next_checkpoint)
            && cp.size == row.seq
        {
            // Every checkpoint at this size must carry this head.
            while let Some(cp) = self.checkpoints.get(self.next_checkpoint)
                && cp.size == row.seq
            {
                if cp.head != hash {
                    return Err(Problem::CheckpointMismatch { size: cp.size });
                }
                if cp.time_ms < time {
                    return Err(Problem::CheckpointBeforeHead { size: cp.size });
                }
                self.next_checkpoint += 1;
            }
        }
        let agent = self.ledger.check(row.seq, &statement, &hash)?;
        self.signatures.add(Pending {
            seq: row.seq,
            signer: Signer::Brain,
            message: signature_message(&row.key_id, &hash),
            signature: Signature::from_bytes(&hex.signature),
            key,
        });
        if let Some(agent) = agent {
            self.signatures.add(agent);
        }
        self.last_time = Some((time, statement.time));
        self.prev = hash;
        self.next_seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
