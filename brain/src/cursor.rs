//! Opaque, tamper-evident pagination cursors. A cursor carries the keyset position as JSON,
//! bound to a *scope* (the project and the query's filters) and MACed with a brain secret: a
//! cursor edited by hand, or reused with another query or project, is a 400.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use taskward_shared::crypto::keyed_digest;

use crate::refusal::Refusal;

/// Domain tag of cursor MACs.
const CURSOR_TAG: &[u8] = b"taskward/cursor/v1\0";

/// Bytes of MAC kept: 128 bits is plenty to make forgery hopeless.
const MAC_LEN: usize = 16;

/// Encodes `position` for `scope`.
pub fn encode<T: Serialize>(secret: &[u8], scope: &str, position: &T) -> String {
    let body = serde_json::to_vec(position).expect("cursor positions serialize");
    let mac = mac(secret, scope, &body);
    let mut bytes = body;
    bytes.extend_from_slice(&mac[..MAC_LEN]);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The refusal of a cursor parameter (`cursor`, `after`, `before`) that is not this query's.
pub fn not_ours(field: &str) -> Refusal {
    Refusal::invalid_field(
        field,
        format!(
            "{field}: not a cursor from this query (cursors are only valid with the same filters, in the same project)"
        ),
    )
}

/// Decodes a cursor made by [`encode`] for the same scope; anything else is refused (a 400
/// on `cursor`).
pub fn decode<T: DeserializeOwned>(secret: &[u8], scope: &str, cursor: &str) -> Result<T, Refusal> {
    let invalid = || not_ours("cursor");
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    if bytes.len() <= MAC_LEN {
        return Err(invalid());
    }
    let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN);
    let expected = mac(secret, scope, body);
    // Compare in constant time: the MAC is a secret-derived value.
    let diff = expected[..MAC_LEN]
        .iter()
        .zip(tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(invalid());
    }
    serde_json::from_slice(body).map_err(|_| invalid())
}

fn mac(secret: &[u8], scope: &str, body: &[u8]) -> [u8; 32] {
    let mut message = Vec::with_capacity(4 + scope.len() + body.len());
    message.extend_from_slice(&(scope.len() as u32).to_be_bytes());
    message.extend_from_slice(scope.as_bytes());
    message.extend_from_slice(body);
    keyed_digest(secret, CURSOR_TAG, &message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_tampering_and_other_scopes() {
        let secret = b"k";
        let c = encode(secret, "p1?status=failed", &(42_i64, "abc".to_owned()));
        let back: (i64, String) = decode(secret, "p1?status=failed", &c).unwrap();
        assert_eq!(back, (42, "abc".to_owned()));
        assert!(decode::<(i64, String)>(secret, "p2?status=failed", &c).is_err());
        assert!(decode::<(i64, String)>(b"other", "p1?status=failed", &c).is_err());
        let mut bytes = URL_SAFE_NO_PAD.decode(&c).unwrap();
        bytes[1] ^= 1;
        assert!(
            decode::<(i64, String)>(secret, "p1?status=failed", &URL_SAFE_NO_PAD.encode(bytes))
                .is_err()
        );
        assert!(decode::<(i64, String)>(secret, "p1?status=failed", "!!").is_err());
    }
}
