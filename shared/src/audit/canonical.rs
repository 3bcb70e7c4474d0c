//! RFC 8785 (JCS) encoding of statements and JSON values, fast. Every row appended is encoded
//! once and every row verified is encoded again (to check its bytes are canonical); the
//! general canonicalizer costs ~25 µs a statement, more than the rest of a row's checks
//! together, and most of it goes to building a value tree and sorting keys it already knows.
//! Statements hold objects, strings, booleans, nulls and integers; those are encoded here. A
//! value with a number JCS spells through floating point (a fraction, or an integer beyond
//! ±2^53) is left to `serde_json_canonicalizer`: `None` says so.

use serde_json::Value;

use super::Statement;

/// Largest integer JCS writes exactly as itself (2^53).
const EXACT: u64 = 1 << 53;

/// The canonical bytes of a statement, or `None` if its payload holds a number this encoder
/// leaves to the general canonicalizer.
///
/// Written field by field in JCS order (keys sorted; all ASCII here, so byte order is UTF-16
/// order) with the names serde gives them: `actor` (`id`, `name`, `type`), `chain`,
/// `command_id` (only when set), `kind`, `payload`, `seq`, `time`, `v`. The test
/// `statements_encode_as_the_general_canonicalizer_does` holds it to the serde form.
pub(crate) fn encode_statement(statement: &Statement) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"actor\":{\"id\":");
    write_string(&statement.actor.id, &mut out);
    out.extend_from_slice(b",\"name\":");
    write_string(&statement.actor.name, &mut out);
    out.extend_from_slice(b",\"type\":");
    write_string(statement.actor.kind.as_str(), &mut out);
    out.extend_from_slice(b"},\"chain\":");
    write_string(&statement.chain, &mut out);
    if let Some(command_id) = &statement.command_id {
        out.extend_from_slice(b",\"command_id\":");
        write_string(command_id, &mut out);
    }
    out.extend_from_slice(b",\"kind\":");
    write_string(&statement.kind, &mut out);
    out.extend_from_slice(b",\"payload\":");
    write(&statement.payload, &mut out)?;
    out.extend_from_slice(b",\"seq\":");
    write_string(&statement.seq, &mut out);
    out.extend_from_slice(b",\"time\":");
    write_string(&statement.time, &mut out);
    out.extend_from_slice(b",\"v\":");
    out.extend_from_slice(statement.v.to_string().as_bytes());
    out.push(b'}');
    Some(out)
}

/// The canonical bytes of `value`, or `None` if it holds a number this encoder leaves to the
/// general canonicalizer.
pub(crate) fn encode(value: &Value) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(512);
    write(value, &mut out)?;
    Some(out)
}

fn write(value: &Value, out: &mut Vec<u8>) -> Option<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > EXACT {
                    return None;
                }
                out.extend_from_slice(u.to_string().as_bytes());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > EXACT {
                    return None;
                }
                out.extend_from_slice(i.to_string().as_bytes());
            } else {
                return None;
            }
        }
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            // JCS orders keys by their UTF-16 code units. For ASCII keys (nearly all) that is
            // byte order, which serde_json's map usually iterates in already: sort only if not.
            let in_order = entries.iter().all(|(key, _)| key.is_ascii())
                && entries.windows(2).all(|pair| pair[0].0 < pair[1].0);
            if !in_order {
                entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            }
            out.push(b'{');
            for (i, (key, item)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write(item, out)?;
            }
            out.push(b'}');
        }
    }
    Some(())
}

/// A string as ECMAScript's `JSON.stringify` writes it: `"` and `\` escaped, control
/// characters as their short escapes or `\u00xx`, everything else verbatim.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            b'\t' => b"\\t",
            b'\n' => b"\\n",
            0x0c => b"\\f",
            b'\r' => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn agrees_with_the_general_canonicalizer() {
        let values = [
            json!({"b": 1, "a": [true, false, null], "é": "\u{1F600}", "\u{e000}": 0, "\u{10000}": 1}),
            json!({"s": "quote \" back \\ nl \n tab \t bell \u{7} del \u{7f} ls \u{2028}"}),
            json!({"n": -9007199254740992i64, "m": 9007199254740992u64, "z": 0, "neg": -5}),
            json!([{"z": {"y": {}}, "a": []}, "", 42]),
        ];
        for value in values {
            assert_eq!(
                encode(&value).unwrap(),
                serde_json_canonicalizer::to_vec(&value).unwrap(),
                "{value}"
            );
        }
        assert_eq!(encode(&json!({"f": 1.5})), None);
        assert_eq!(encode(&json!({"big": 9007199254740993u64})), None);
    }

    #[test]
    fn statements_encode_as_the_general_canonicalizer_does() {
        use crate::audit::{Actor, ActorKind};
        let statement = |command_id: Option<&str>, payload: Value| Statement {
            v: 1,
            chain: "project:p\u{e9}".into(),
            seq: "12".into(),
            time: "2026-11-25T00:00:00.000Z".into(),
            actor: Actor {
                kind: ActorKind::Schedule,
                id: "id \"quoted\"".into(),
                name: "tab\there \u{1F600}".into(),
            },
            kind: "command.issued".into(),
            command_id: command_id.map(str::to_owned),
            payload,
        };
        for value in [
            statement(
                Some("c-1"),
                json!({"z": 1, "a": {"\u{e000}": null, "\u{10000}": [1, "x"]}}),
            ),
            statement(None, json!({})),
            statement(None, json!(null)),
        ] {
            assert_eq!(
                encode_statement(&value).unwrap(),
                serde_json_canonicalizer::to_vec(&value).unwrap(),
                "{value:?}"
            );
        }
        assert_eq!(encode_statement(&statement(None, json!({"f": 0.5}))), None);
    }
}
