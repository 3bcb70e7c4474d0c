//! Checkpoints held against a chain: each must be validly signed by a key that was allowed to
//! sign at the checkpoint's time, and each must match the row at its size and be dated no
//! earlier than that row. All of them count,
//! not only the largest: a rewrite between two checkpoints is caught by the earlier one.

use ed25519_dalek::Signature;

use super::format::{is_lower_hex, lower_hex};
use super::keys::{TrustedKeys, Window};
use super::{Failure, Problem};
use crate::audit::{Checkpoint, Hash, checkpoint_message, genesis_hash};

/// A checked checkpoint: the head the chain must have at `size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Expected {
    pub size: u64,
    pub head: Hash,
    /// When it was signed: never before its head row.
    pub time_ms: i64,
}

/// Checks every checkpoint's signature and key window; returns them by size, smallest first.
pub(super) fn check_all(
    chain: &str,
    keys: &TrustedKeys,
    grace_ms: i64,
    checkpoints: impl IntoIterator<Item = Checkpoint>,
) -> Result<Vec<Expected>, Failure> {
    let mut expected = checkpoints
        .into_iter()
        .map(|cp| check_one(chain, keys, grace_ms, &cp))
        .collect::<Result<Vec<_>, _>>()?;
    expected.sort_by_key(|e| e.size);
    Ok(expected)
}

fn check_one(
    chain: &str,
    keys: &TrustedKeys,
    grace_ms: i64,
    checkpoint: &Checkpoint,
) -> Result<Expected, Failure> {
    let bad = |why: String| Failure {
        seq: checkpoint.size,
        problem: Problem::BadCheckpoint(why),
    };
    if checkpoint.chain != chain {
        return Err(bad("it is for another chain".into()));
    }
    let head = lower_hex::<32>(&checkpoint.head)
        .ok_or_else(|| bad("head is not lowercase hex of a hash".into()))?;
    if !is_lower_hex(&checkpoint.key_id) {
        return Err(bad("key_id is not lowercase hex".into()));
    }
    let signature = lower_hex::<64>(&checkpoint.signature)
        .ok_or_else(|| bad("signature is not lowercase hex of 64 bytes".into()))?;
    let key = keys
        .get(&checkpoint.key_id)
        .ok_or_else(|| bad(format!("signed by unknown key {}", checkpoint.key_id)))?;
    match keys.window(&checkpoint.key_id, checkpoint.time_ms, grace_ms) {
        Some(Window::Inside) | None => {}
        Some(outside) => {
            return Err(bad(format!(
                "signed at {} ms by key {}, {}",
                checkpoint.time_ms,
                checkpoint.key_id,
                outside.describe()
            )));
        }
    }
    let message = checkpoint_message(chain, checkpoint.size, &head, checkpoint.time_ms);
    key.verify_strict(&message, &Signature::from_bytes(&signature))
        .map_err(|_| bad("bad signature".into()))?;
    if checkpoint.size == 0 && head != genesis_hash(chain) {
        return Err(bad("an empty checkpoint must carry the genesis hash".into()));
    }
    Ok(Expected {
        size: checkpoint.size,
        head,
        time_ms: checkpoint.time_ms,
    })
}
