//! Verifying a chain with nothing but trusted public keys (and optionally a checkpoint kept
//! outside the database).
//!
//! Rows are pushed in sequence order. Position, links, hashes and index columns are checked at
//! once; signatures are collected and checked in batches ([`BATCH`] at a time, ed25519 batch
//! verification), and a failing batch is re-checked row by row with `verify_strict` so the
//! first bad row is named exactly. Before any non-signature failure is reported the pending
//! signatures are checked, so the failure reported is always the earliest bad row.

use std::collections::HashMap;

use ed25519_dalek::{Signature, VerifyingKey};

use super::{
    AuditRow, Checkpoint, Hash, PublicKeyInfo, Statement, checkpoint_message, genesis_hash,
    parse_hash, row_hash, signature_message,
};
use crate::crypto::{key_id, parse_public_key};

/// Signatures checked per batch: large enough to amortise, small enough to re-check cheaply.
pub const BATCH: usize = 128;

/// Public keys an auditor trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, VerifyingKey>,
}

impl TrustedKeys {
    /// Builds the set from published key entries, checking each id is derived from its key.
    pub fn from_infos(infos: &[PublicKeyInfo]) -> Result<TrustedKeys, String> {
        let mut keys = HashMap::new();
        for info in infos {
            let key = parse_public_key(&info.public_key)
                .map_err(|e| format!("key {}: {e}", info.key_id))?;
            if key_id(&key) != info.key_id {
                return Err(format!(
                    "key {}: the id does not belong to this public key",
                    info.key_id
                ));
            }
            keys.insert(info.key_id.clone(), key);
        }
        Ok(TrustedKeys { keys })
    }

    /// The key with this id, if trusted.
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id)
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

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
    #[error("gap: expected row {expected}, found row {found} (rows were removed)")]
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
    /// The statement or a hex field cannot be read.
    #[error("malformed row: {0}")]
    Malformed(String),
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
        "column {column} is {found:?} but the statement says {expected:?} (the column was altered)"
    )]
    ColumnMismatch {
        /// Which column.
        column: &'static str,
        /// The statement's value.
        expected: String,
        /// The column's value.
        found: String,
    },
    /// The signing key is not trusted.
    #[error("signed by unknown key {0}")]
    UnknownKey(String),
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// The checkpoint is not validly signed by a trusted key, or is for another chain.
    #[error("checkpoint is invalid: {0}")]
    BadCheckpoint(String),
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
}

/// The first bad row and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row {seq}: {problem}")]
pub struct Failure {
    /// The seq of the first bad row (for a truncation: the first missing row).
    pub seq: u64,
    /// What is wrong.
    pub problem: Problem,
}

/// A verified chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Rows verified.
    pub rows: u64,
    /// Hex hash of the last row (the genesis hash for an empty chain).
    pub head: String,
}

struct PendingSignature {
    seq: u64,
    message: Vec<u8>,
    signature: Signature,
    key: VerifyingKey,
}

/// Verifies one chain, row by row.
pub struct ChainVerifier {
    chain: String,
    keys: TrustedKeys,
    checkpoint: Option<(Checkpoint, Hash)>,
    checkpoint_seen: bool,
    next_seq: u64,
    prev: Hash,
    pending: Vec<PendingSignature>,
}

impl ChainVerifier {
    /// Starts verifying `chain`. A checkpoint, if given, must be signed by a trusted key.
    pub fn new(
        chain: &str,
        keys: TrustedKeys,
        checkpoint: Option<Checkpoint>,
    ) -> Result<ChainVerifier, Failure> {
        let checkpoint = checkpoint
            .map(|cp| check_checkpoint(chain, &keys, cp))
            .transpose()?;
        Ok(ChainVerifier {
            chain: chain.to_owned(),
            keys,
            checkpoint,
            checkpoint_seen: false,
            next_seq: 1,
            prev: genesis_hash(chain),
            pending: Vec::with_capacity(BATCH),
        })
    }

    /// Continues verifying `chain` after row `after_seq`, whose hash is `prev` (a point already
    /// verified, such as a checked checkpoint). What lies before is taken as given: a resumed
    /// verifier checks each later row's position, link, hash, columns and signature, but cannot
    /// check facts that need the rows before it.
    pub fn resume(chain: &str, keys: TrustedKeys, after_seq: u64, prev: Hash) -> ChainVerifier {
        ChainVerifier {
            chain: chain.to_owned(),
            keys,
            checkpoint: None,
            checkpoint_seen: false,
            next_seq: after_seq + 1,
            prev,
            pending: Vec::with_capacity(BATCH),
        }
    }

    /// Rows verified so far (signatures of the last few may still be pending).
    pub fn rows(&self) -> u64 {
        self.next_seq - 1
    }

    /// Checks the next row.
    pub fn push(&mut self, row: &AuditRow) -> Result<(), Failure> {
        if let Err(problem) = self.check_row(row) {
            self.flush()?;
            return Err(Failure {
                seq: row.seq,
                problem,
            });
        }
        if self.pending.len() >= BATCH {
            self.flush()?;
        }
        Ok(())
    }

    /// Finishes: checks the remaining signatures and the checkpoint.
    pub fn finish(mut self) -> Result<Summary, Failure> {
        self.flush()?;
        let rows = self.rows();
        if let Some((checkpoint, _)) = &self.checkpoint
            && checkpoint.size > 0
            && !self.checkpoint_seen
        {
            return Err(Failure {
                seq: rows + 1,
                problem: Problem::Truncated {
                    rows,
                    size: checkpoint.size,
                },
            });
        }
        Ok(Summary {
            rows,
            head: hex::encode(self.prev),
        })
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
        let statement: Statement = serde_json::from_str(&row.statement)
            .map_err(|e| Problem::Malformed(format!("statement: {e}")))?;
        if statement.chain != row.chain || statement.seq != row.seq.to_string() {
            return Err(Problem::Moved {
                position: format!("{}/{}", row.chain, row.seq),
                statement: format!("{}/{}", statement.chain, statement.seq),
            });
        }
        let stored_prev =
            parse_hash(&row.prev_hash).ok_or_else(|| Problem::Malformed("prev_hash".into()))?;
        if stored_prev != self.prev {
            return Err(Problem::BrokenLink);
        }
        let hash = row_hash(row.seq, &self.prev, row.statement.as_bytes());
        if parse_hash(&row.hash) != Some(hash) {
            return Err(Problem::HashMismatch);
        }
        if statement.kind != row.kind {
            return Err(Problem::ColumnMismatch {
                column: "kind",
                expected: statement.kind,
                found: row.kind.clone(),
            });
        }
        if statement.command_id != row.command_id {
            return Err(Problem::ColumnMismatch {
                column: "command_id",
                expected: statement.command_id.unwrap_or_default(),
                found: row.command_id.clone().unwrap_or_default(),
            });
        }
        let key = *self
            .keys
            .get(&row.key_id)
            .ok_or_else(|| Problem::UnknownKey(row.key_id.clone()))?;
        let signature = hex::decode(&row.signature)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or_else(|| Problem::Malformed("signature".into()))?;
        if let Some((checkpoint, head)) = &self.checkpoint
            && checkpoint.size == row.seq
        {
            if *head != hash {
                return Err(Problem::CheckpointMismatch {
                    size: checkpoint.size,
                });
            }
            self.checkpoint_seen = true;
        }
        self.pending.push(PendingSignature {
            seq: row.seq,
            message: signature_message(&row.key_id, &hash),
            signature,
            key,
        });
        self.prev = hash;
        self.next_seq += 1;
        Ok(())
    }

    /// Checks pending signatures; on a failed batch, finds the first bad one.
    fn flush(&mut self) -> Result<(), Failure> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let messages: Vec<&[u8]> = self.pending.iter().map(|p| p.message.as_slice()).collect();
        let signatures: Vec<Signature> = self.pending.iter().map(|p| p.signature).collect();
        let keys: Vec<VerifyingKey> = self.pending.iter().map(|p| p.key).collect();
        let batch_ok = ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok();
        // The batch equation can accept non-canonical signatures that verify_strict refuses;
        // strict checks of R and s (cheap) keep the two in agreement for honest keys.
        let result = if batch_ok && self.pending.iter().all(|p| strict_shape(&p.signature)) {
            Ok(())
        } else {
            self.pending
                .iter()
                .find(|p| p.key.verify_strict(&p.message, &p.signature).is_err())
                .map_or(Ok(()), |bad| {
                    Err(Failure {
                        seq: bad.seq,
                        problem: Problem::BadSignature,
                    })
                })
        };
        self.pending.clear();
        result
    }
}

/// The parts of `verify_strict`'s extra checks that batch verification skips: the scalar `s`
/// must be canonical (below the group order). Small-order `R` values only matter for
/// malleability, and any batch failure falls back to `verify_strict` anyway.
fn strict_shape(signature: &Signature) -> bool {
    // s < 2^252 + 27742317777372353535851937790883648493; its top 4 bits must be 0 and, when
    // bit 252 is set, a full compare would follow. Signatures made by ed25519-dalek always
    // satisfy the fast check; anything else goes through verify_strict.
    signature.s_bytes()[31] & 0xf0 == 0
}

fn check_checkpoint(
    chain: &str,
    keys: &TrustedKeys,
    checkpoint: Checkpoint,
) -> Result<(Checkpoint, Hash), Failure> {
    let bad = |why: &str| Failure {
        seq: checkpoint.size,
        problem: Problem::BadCheckpoint(why.to_owned()),
    };
    if checkpoint.chain != chain {
        return Err(bad("it is for another chain"));
    }
    let head = parse_hash(&checkpoint.head).ok_or_else(|| bad("head is not a hash"))?;
    let key = keys
        .get(&checkpoint.key_id)
        .ok_or_else(|| bad("signed by an unknown key"))?;
    let signature = hex::decode(&checkpoint.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| bad("signature is malformed"))?;
    let message = checkpoint_message(chain, checkpoint.size, &head, checkpoint.time_ms);
    key.verify_strict(&message, &signature)
        .map_err(|_| bad("bad signature"))?;
    if checkpoint.size == 0 && head != genesis_hash(chain) {
        return Err(bad("an empty checkpoint must carry the genesis hash"));
    }
    Ok((checkpoint, head))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::audit::{Actor, ActorKind, STATEMENT_VERSION};

    const CHAIN: &str = "project:test";

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9u8; 32])
    }

    fn trusted(key: &SigningKey) -> TrustedKeys {
        TrustedKeys::from_infos(&[PublicKeyInfo {
            key_id: key_id(&key.verifying_key()),
            public_key: hex::encode(key.verifying_key().as_bytes()),
            valid_from_ms: 0,
            valid_until_ms: None,
        }])
        .unwrap()
    }

    fn chain(n: u64, key: &SigningKey) -> Vec<AuditRow> {
        let mut prev = genesis_hash(CHAIN);
        (1..=n)
            .map(|seq| {
                let statement = Statement {
                    v: STATEMENT_VERSION,
                    chain: CHAIN.into(),
                    seq: seq.to_string(),
                    time: "2026-11-25T00:00:00.000Z".into(),
                    actor: Actor {
                        kind: ActorKind::User,
                        id: "u1".into(),
                        name: "admin".into(),
                    },
                    kind: "test.row".into(),
                    command_id: None,
                    payload: serde_json::json!({"n": seq}),
                };
                let row = AuditRow::sign(seq, &prev, &statement, key);
                prev = parse_hash(&row.hash).unwrap();
                row
            })
            .collect()
    }

    fn verify(
        rows: &[AuditRow],
        keys: TrustedKeys,
        cp: Option<Checkpoint>,
    ) -> Result<Summary, Failure> {
        let mut v = ChainVerifier::new(CHAIN, keys, cp)?;
        for row in rows {
            v.push(row)?;
        }
        v.finish()
    }

    #[test]
    fn an_honest_chain_verifies_across_batches() {
        let k = key();
        let rows = chain(300, &k);
        let summary = verify(&rows, trusted(&k), None).unwrap();
        assert_eq!(summary.rows, 300);
        assert_eq!(summary.head, rows[299].hash);
    }

    #[test]
    fn each_kind_of_tampering_names_the_first_bad_row() {
        let k = key();
        let rows = chain(300, &k);

        let mut edited = rows.clone();
        edited[199].statement = edited[199].statement.replace("\"n\":200", "\"n\":201");
        assert_eq!(verify(&edited, trusted(&k), None).unwrap_err().seq, 200);

        let mut removed = rows.clone();
        removed.remove(49);
        let err = verify(&removed, trusted(&k), None).unwrap_err();
        assert_eq!(
            (err.seq, &err.problem),
            (
                51,
                &Problem::Gap {
                    expected: 50,
                    found: 51
                }
            )
        );

        let mut swapped = rows.clone();
        swapped.swap(9, 10);
        (swapped[9].seq, swapped[10].seq) = (10, 11);
        let err = verify(&swapped, trusted(&k), None).unwrap_err();
        assert_eq!(err.seq, 10);
        assert!(matches!(err.problem, Problem::Moved { .. }), "{err}");

        // A late row re-signed by a stranger's key.
        let stranger = SigningKey::from_bytes(&[1u8; 32]);
        let mut forged = rows.clone();
        let statement: Statement = serde_json::from_str(&forged[250].statement).unwrap();
        let prev = parse_hash(&forged[250].prev_hash).unwrap();
        forged[250] = AuditRow::sign(251, &prev, &statement, &stranger);
        let err = verify(&forged, trusted(&k), None).unwrap_err();
        assert_eq!(err.seq, 251);
        assert!(matches!(err.problem, Problem::UnknownKey(_)));

        // A signature flipped deep inside a batch is found by the strict re-check.
        let mut bad_sig = rows.clone();
        let mut sig = hex::decode(&bad_sig[130].signature).unwrap();
        sig[0] ^= 1;
        bad_sig[130].signature = hex::encode(sig);
        let err = verify(&bad_sig, trusted(&k), None).unwrap_err();
        assert_eq!((err.seq, err.problem), (131, Problem::BadSignature));

        // A column changed under an intact statement.
        let mut column = rows.clone();
        column[5].kind = "other".into();
        assert_eq!(verify(&column, trusted(&k), None).unwrap_err().seq, 6);

        // Another public key published under the real key's id.
        let other = SigningKey::from_bytes(&[2u8; 32]);
        let forged_keys = TrustedKeys::from_infos(&[PublicKeyInfo {
            key_id: key_id(&k.verifying_key()),
            public_key: hex::encode(other.verifying_key().as_bytes()),
            valid_from_ms: 0,
            valid_until_ms: None,
        }]);
        assert!(forged_keys.is_err());
        let err = verify(&rows, trusted(&other), None).unwrap_err();
        assert_eq!(err.seq, 1);
        assert!(matches!(err.problem, Problem::UnknownKey(_)));
    }

    #[test]
    fn checkpoints_catch_truncation_and_rewrites() {
        let k = key();
        let rows = chain(100, &k);
        let head = parse_hash(&rows[79].hash).unwrap();
        let cp = Checkpoint::sign(CHAIN, 80, &head, 1, &k);
        assert_eq!(
            verify(&rows, trusted(&k), Some(cp.clone())).unwrap().rows,
            100
        );

        let err = verify(&rows[..70], trusted(&k), Some(cp.clone())).unwrap_err();
        assert_eq!(err.seq, 71);
        assert_eq!(err.problem, Problem::Truncated { rows: 70, size: 80 });

        // A full rewrite with the real key (someone holding key and database) from row 50 on.
        let mut rewritten = rows[..49].to_vec();
        let mut prev = parse_hash(&rows[48].hash).unwrap();
        for row in &rows[49..] {
            let mut statement: Statement = serde_json::from_str(&row.statement).unwrap();
            statement.payload = serde_json::json!({"rewritten": true});
            let new = AuditRow::sign(row.seq, &prev, &statement, &k);
            prev = parse_hash(&new.hash).unwrap();
            rewritten.push(new);
        }
        assert!(
            verify(&rewritten, trusted(&k), None).is_ok(),
            "a rewrite is invisible without a checkpoint"
        );
        let err = verify(&rewritten, trusted(&k), Some(cp.clone())).unwrap_err();
        assert_eq!(err.problem, Problem::CheckpointMismatch { size: 80 });

        let mut forged_cp = cp;
        forged_cp.size = 90;
        assert!(matches!(
            verify(&rows, trusted(&k), Some(forged_cp))
                .unwrap_err()
                .problem,
            Problem::BadCheckpoint(_)
        ));
    }
}
