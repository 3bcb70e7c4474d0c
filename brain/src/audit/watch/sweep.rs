//! The slow sweep: every chain re-verified from genesis, over and over, at a bounded number of
//! rows per second. Incremental checks only look at new rows; an `UPDATE` of an old row (or a
//! rewrite with the key, caught at the last checkpoint) is found here.

use std::collections::VecDeque;

use taskward_shared::audit::verify::{ChainVerifier, Failure, TrustedKeys};
use taskward_shared::audit::{AuditRow, Checkpoint, PublicKeyInfo};

/// Where the sweep stands: the chains still to sweep in this round and the one in progress.
#[derive(Default)]
pub struct Sweep {
    queue: VecDeque<String>,
    current: Option<InProgress>,
    /// Chains completed since the brain started (for tests and the log).
    pub completed: u64,
}

struct InProgress {
    chain: String,
    verifier: ChainVerifier,
    /// Last seq pushed.
    after: u64,
    /// The keyring the verifier trusts: a rotation restarts the chain's sweep.
    keys: Vec<PublicKeyInfo>,
}

/// What one step of the sweep found.
pub enum Found {
    /// A chain swept to its head without a fault.
    Verified(String),
    /// A bad row.
    Broken(String, Failure),
}

/// Reads rows of a chain after a seq (a page of at most `limit`).
pub trait RowSource {
    /// Every chain's name.
    fn chains(&mut self) -> crate::store::StoreResult<Vec<String>>;
    /// Up to `limit` rows of `chain` after `after`.
    fn page(
        &mut self,
        chain: &str,
        after: u64,
        limit: i64,
    ) -> crate::store::StoreResult<Vec<AuditRow>>;
}

impl Sweep {
    /// Verifies up to `budget` rows, continuing where the last step stopped. `checkpoint`
    /// gives the last checkpoint the brain knows of a chain (the sweep checks the chain still
    /// has its head).
    pub fn step(
        &mut self,
        source: &mut impl RowSource,
        keys: &[PublicKeyInfo],
        checkpoint: impl Fn(&str) -> Option<Checkpoint>,
        budget: u64,
    ) -> crate::store::StoreResult<Vec<Found>> {
        let mut found = Vec::new();
        let mut left = budget;
        let mut refilled = false;
        while left > 0 {
            if self
                .current
                .as_ref()
                .is_some_and(|c| c.keys.as_slice() != keys)
            {
                // Rows signed by a key the verifier does not know yet would look forged.
                let chain = self.current.take().expect("checked").chain;
                self.queue.push_front(chain);
            }
            let current = match self.current.as_mut() {
                Some(current) => current,
                None => {
                    let Some(chain) = self.next_chain(source, &mut refilled)? else {
                        break;
                    };
                    let trusted = TrustedKeys::from_infos(keys)
                        .map_err(crate::store::StoreError::Unavailable)?;
                    match ChainVerifier::new(&chain, trusted, checkpoint(&chain)) {
                        Ok(verifier) => self.current.insert(InProgress {
                            chain,
                            verifier,
                            after: 0,
                            keys: keys.to_vec(),
                        }),
                        Err(failure) => {
                            found.push(Found::Broken(chain, failure));
                            continue;
                        }
                    }
                }
            };
            let limit = left.min(crate::audit::PAGE as u64) as i64;
            let rows = source.page(&current.chain, current.after, limit)?;
            left = left.saturating_sub(rows.len() as u64);
            if rows.is_empty() {
                // The chain's end still cost a query: count it as a row, so a store of many
                // empty chains cannot spin.
                left = left.saturating_sub(1);
                let done = self.current.take().expect("in progress");
                self.completed += 1;
                match done.verifier.finish() {
                    Ok(_) => found.push(Found::Verified(done.chain)),
                    Err(failure) => found.push(Found::Broken(done.chain, failure)),
                }
                continue;
            }
            current.after = rows.last().expect("not empty").seq;
            for row in &rows {
                if let Err(failure) = current.verifier.push(row) {
                    let chain = self.current.take().expect("in progress").chain;
                    found.push(Found::Broken(chain, failure));
                    break;
                }
            }
        }
        Ok(found)
    }

    fn next_chain(
        &mut self,
        source: &mut impl RowSource,
        refilled: &mut bool,
    ) -> crate::store::StoreResult<Option<String>> {
        if self.queue.is_empty() && !*refilled {
            *refilled = true;
            self.queue = source.chains()?.into();
        }
        Ok(self.queue.pop_front())
    }
}
