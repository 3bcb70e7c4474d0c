//! RFC 8785 (JCS) encoding of JSON values, fast: the verifier re-encodes every statement to
//! check its bytes are canonical, and the general canonicalizer costs ~25 µs a statement,
//! more than the rest of a row's checks together. Statements hold objects, strings,
//! booleans, nulls and integers; those are encoded here. A value with a number JCS spells
//! through floating point (a fraction, or an integer beyond ±2^53) is left to
//! `serde_json_canonicalizer`: `None` says so.

use serde_json::Value;

/// Largest integer JCS writes exactly as itself (2^53).
const EXACT: u64 = 1 << 53;

/// The canonical bytes of `value`, or `None` if it holds a number this encoder leaves to the
/// general canonicalizer.
pub(super) fn encode(value: &Value) -> Option<Vec<u8>> {
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
            // JCS orders keys by their UTF-16 code units.
            entries.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
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
}
