//! Byte-level rules a row must follow before its meaning is read: hex fields in lowercase,
//! the statement in its one canonical encoding, the time in its one spelling. Each rule
//! closes a way to change a row's bytes without changing what a lenient reader sees, which
//! would let two different exports both "verify".

use super::Problem;
use crate::audit::{AuditRow, Hash, Statement};

/// Decodes lowercase hex of exactly `N` bytes; uppercase or odd digits are refused.
pub(super) fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != 2 * N || !is_lower_hex(text) {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}

/// Whether every character is one of `0-9a-f`.
pub(super) fn is_lower_hex(text: &str) -> bool {
    text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The hex fields of a row, decoded: each must be lowercase hex of its exact length.
pub(super) struct RowHex {
    pub prev_hash: Hash,
    pub hash: Hash,
    pub signature: [u8; 64],
}

/// Decodes a row's hex fields, naming the first that is not lowercase hex of its length.
pub(super) fn row_hex(row: &AuditRow) -> Result<RowHex, Problem> {
    let bad = |field: &'static str| Problem::NotLowerHex(field);
    let prev_hash = lower_hex(&row.prev_hash).ok_or(bad("prev_hash"))?;
    let hash = lower_hex(&row.hash).ok_or(bad("hash"))?;
    if row.key_id.len() != 32 || !is_lower_hex(&row.key_id) {
        return Err(bad("key_id"));
    }
    let signature = lower_hex(&row.signature).ok_or(bad("signature"))?;
    Ok(RowHex {
        prev_hash,
        hash,
        signature,
    })
}

/// Parses the statement and checks its bytes are exactly its canonical encoding (RFC 8785):
/// reordered keys, spaces, escapes, duplicate or unknown fields all change the bytes.
///
/// The parsed statement is encoded again, so a field the statement type does not know is
/// dropped and shows as a difference too.
pub(super) fn canonical_statement(text: &str) -> Result<Statement, Problem> {
    let statement: Statement =
        serde_json::from_str(text).map_err(|e| Problem::Malformed(format!("statement: {e}")))?;
    if statement.to_canonical() != text.as_bytes() {
        return Err(Problem::NotCanonical);
    }
    Ok(statement)
}

/// Parses a statement time, `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly (UTC, milliseconds), into ms
/// since the epoch.
pub(super) fn time_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second, milli) = (num(11, 13)?, num(14, 16)?, num(17, 19)?, num(20, 23)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(((days * 24 + hour) * 60 + minute) * 60_000 + second * 1000 + milli)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_their_one_spelling_only() {
        assert_eq!(time_ms("1970-01-01T00:00:00.000Z"), Some(0));
        assert_eq!(time_ms("2026-11-25T12:00:01.250Z"), Some(1_795_608_001_250));
        assert_eq!(time_ms("2024-02-29T23:59:59.999Z"), Some(1_709_251_199_999));
        for bad in [
            "2026-11-25T12:00:01Z",
            "2026-11-25T12:00:01.250+00:00",
            "2026-11-25 12:00:01.250Z",
            "2026-13-25T12:00:01.250Z",
            "2025-02-29T12:00:01.250Z",
            "2026-11-25T24:00:01.250Z",
            "2026-11-25T12:00:01.2a0Z",
        ] {
            assert_eq!(time_ms(bad), None, "{bad}");
        }
    }

    #[test]
    fn hex_must_be_lowercase_and_exact() {
        assert_eq!(lower_hex::<2>("0aff"), Some([0x0a, 0xff]));
        assert_eq!(lower_hex::<2>("0AFF"), None);
        assert_eq!(lower_hex::<2>("0aff00"), None);
        assert_eq!(lower_hex::<2>("0af"), None);
    }

    #[test]
    fn only_the_canonical_encoding_is_accepted() {
        let canonical = r#"{"actor":{"id":"u","name":"n","type":"user"},"chain":"c","kind":"k","payload":{"a":1,"b":[true]},"seq":"1","time":"2026-11-25T00:00:00.000Z","v":1}"#;
        assert!(canonical_statement(canonical).is_ok());
        let reordered = canonical.replace(r#""a":1,"b":[true]"#, r#""b":[true],"a":1"#);
        let spaced = canonical.replace(r#""a":1"#, r#""a": 1"#);
        let extra = canonical.replace(r#""v":1}"#, r#""v":1,"x":0}"#);
        let escaped = canonical.replace(r#""name":"n""#, r#""name":"\u006e""#);
        for bad in [reordered, spaced, extra, escaped] {
            assert_eq!(
                canonical_statement(&bad).unwrap_err(),
                Problem::NotCanonical,
                "{bad}"
            );
        }
    }
}
