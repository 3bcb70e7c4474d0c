//! Verifying the rows a chain gained since its last verified point.
//!
//! A row found exactly as this process signed it ([`super::signed_here`]) is checked by
//! comparison and its link; any other run of rows goes through the shared
//! [`ChainVerifier::resume`] from the point before it, so rows from other processes get the
//! same checks `audit verify` makes.

use taskward_shared::audit::verify::{ChainVerifier, Failure, Problem, TrustedKeys};
use taskward_shared::audit::{AuditRow, Hash, parse_hash};

use super::signed_here;

/// A point of a chain known good: row `seq` (0 for none) has hash `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Rows verified.
    pub seq: u64,
    /// Hash of row `seq` (the genesis hash at 0).
    pub hash: Hash,
}

/// Checks `rows` (in seq order, following `from`) and returns the new verified point, or the
/// first bad row.
pub fn verify_rows(
    chain: &str,
    trusted: &TrustedKeys,
    from: Point,
    rows: &[AuditRow],
) -> Result<Point, Failure> {
    let mut point = from;
    let mut segment: Option<ChainVerifier> = None;
    for row in rows {
        let known = signed_here::take(chain, row.seq);
        match known {
            Some(signed) if signed == *row => {
                if let Some(verifier) = segment.take() {
                    point = finish(verifier)?;
                }
                point = check_own_row(point, row)?;
            }
            _ => {
                let verifier = segment.get_or_insert_with(|| {
                    ChainVerifier::resume(chain, trusted.clone(), point.seq, point.hash)
                });
                verifier.push(row)?;
            }
        }
    }
    if let Some(verifier) = segment {
        point = finish(verifier)?;
    }
    Ok(point)
}

fn finish(verifier: ChainVerifier) -> Result<Point, Failure> {
    let summary = verifier.finish()?;
    let hash = parse_hash(&summary.head).expect("the verifier reports a hex head");
    Ok(Point {
        seq: summary.rows,
        hash,
    })
}

/// A row exactly as this process signed it: only its place needs checking.
fn check_own_row(point: Point, row: &AuditRow) -> Result<Point, Failure> {
    let fail = |problem| Failure {
        seq: row.seq,
        problem,
    };
    if row.seq > point.seq + 1 {
        return Err(fail(Problem::Gap {
            expected: point.seq + 1,
            found: row.seq,
        }));
    }
    if row.seq <= point.seq {
        return Err(fail(Problem::OutOfOrder {
            expected: point.seq + 1,
            found: row.seq,
        }));
    }
    if parse_hash(&row.prev_hash) != Some(point.hash) {
        return Err(fail(Problem::BrokenLink));
    }
    let hash = parse_hash(&row.hash).ok_or_else(|| fail(Problem::Malformed("hash".into())))?;
    Ok(Point { seq: row.seq, hash })
}
