//! Rows this process signed, remembered until the watcher has compared them with the
//! database.
//!
//! Checking an ed25519 signature costs about three times making one, so re-verifying every row
//! the brain itself just signed would cost more than signing it. A row found in the database
//! exactly as this process signed it (every field equal, linked to the verified row before it)
//! needs no signature check: it is byte for byte what the brain produced with its key. A row
//! that differs in any byte, or that this process never signed (another brain process, the CLI,
//! an attacker's insert), gets the full check. Rows of transactions that rolled back are never
//! matched and simply age out.
//!
//! Process-wide on purpose: [`crate::store::audit::append_signed_by`] has only a connection,
//! and every store of the process appends rows signed by this process.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

use taskward_shared::audit::AuditRow;

/// Most rows remembered; the oldest are forgotten first (and then simply fully checked). At
/// 3,000 rows/s and a one-second watch interval a few thousand are in flight.
const CAPACITY: usize = 50_000;

#[derive(Default)]
struct Memory {
    by_chain: HashMap<String, BTreeMap<u64, AuditRow>>,
    order: VecDeque<(String, u64)>,
}

fn memory() -> &'static Mutex<Memory> {
    static MEMORY: OnceLock<Mutex<Memory>> = OnceLock::new();
    MEMORY.get_or_init(Mutex::default)
}

/// Remembers a row this process just signed (called by the store's append).
pub fn note(row: &AuditRow) {
    let mut memory = memory().lock().expect("signed-here lock");
    if memory.order.len() >= CAPACITY
        && let Some((chain, seq)) = memory.order.pop_front()
        && let Some(rows) = memory.by_chain.get_mut(&chain)
    {
        rows.remove(&seq);
        if rows.is_empty() {
            memory.by_chain.remove(&chain);
        }
    }
    memory
        .by_chain
        .entry(row.chain.clone())
        .or_default()
        .insert(row.seq, row.clone());
    memory.order.push_back((row.chain.clone(), row.seq));
}

/// Takes what this process signed at `chain`/`seq`, if it remembers it.
pub fn take(chain: &str, seq: u64) -> Option<AuditRow> {
    let mut memory = memory().lock().expect("signed-here lock");
    let rows = memory.by_chain.get_mut(chain)?;
    let row = rows.remove(&seq);
    if rows.is_empty() {
        memory.by_chain.remove(chain);
    }
    // The entry in `order` stays until it reaches the front; removing from the middle of a
    // queue is not worth it, and a stale entry only frees nothing.
    row
}

/// Forgets everything remembered of rows at or below `seq` of `chain` (rolled back, or passed).
pub fn forget_through(chain: &str, seq: u64) {
    let mut memory = memory().lock().expect("signed-here lock");
    if let Some(rows) = memory.by_chain.get_mut(chain) {
        *rows = rows.split_off(&(seq + 1));
        if rows.is_empty() {
            memory.by_chain.remove(chain);
        }
    }
}
