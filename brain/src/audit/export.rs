//! Writing a chain as an export (JSON Lines: an [`ExportHeader`], then one row per line), page
//! by page, so memory stays flat at any log size. The API streams it, the CLI writes it to a
//! file or standard output, and `audit verify --file` reads it back.

use taskward_shared::audit::PublicKeyInfo;

use super::{EXPORT_FORMAT, ExportHeader, PAGE};
use crate::store::{Store, StoreResult, audit as audit_store};

/// Hands the export of `chain` to `sink` in chunks: the header line, then one chunk per page
/// of rows. Stops early (with `Ok`) when `sink` returns false (the reader went away). Returns
/// the rows written. Blocking.
pub fn write_chain(
    store: &Store,
    keys: Vec<PublicKeyInfo>,
    chain: &str,
    mut sink: impl FnMut(Vec<u8>) -> bool,
) -> StoreResult<u64> {
    let header = ExportHeader {
        format: EXPORT_FORMAT.to_owned(),
        chain: chain.to_owned(),
        keys,
    };
    let mut line = serde_json::to_vec(&header).expect("header serializes");
    line.push(b'\n');
    if !sink(line) {
        return Ok(0);
    }
    let mut after = 0u64;
    loop {
        let owned = chain.to_owned();
        let rows = store.read_blocking("audit_export_page", move |conn| {
            audit_store::page(conn, &owned, after, PAGE)
        })?;
        let Some(last) = rows.last() else {
            return Ok(after);
        };
        after = last.seq;
        let mut chunk = Vec::with_capacity(rows.len() * 512);
        for row in &rows {
            serde_json::to_writer(&mut chunk, row).expect("rows serialize");
            chunk.push(b'\n');
        }
        if !sink(chunk) {
            return Ok(after);
        }
    }
}
