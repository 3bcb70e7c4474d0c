//! Keys, key ids and the purge confirm token. Every signed or MACed message in Taskward starts
//! with its own domain tag (see `docs/protocol.md`), so a signature made for one purpose can
//! never be replayed as another.

use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{KeyInit, Mac};
use sha2::{Digest, Sha256};

/// Domain tag of key ids.
pub const KEY_ID_TAG: &[u8] = b"taskward/key-id/v1\0";
/// Domain tag of purge confirm tokens.
pub const CONFIRM_TAG: &[u8] = b"taskward/purge-confirm/v1\0";

/// The id of a public key: lowercase hex of the first 16 bytes of
/// `SHA-256(KEY_ID_TAG || public key)`. Derived, so it cannot be made to point at another key.
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::new()
        .chain_update(KEY_ID_TAG)
        .chain_update(key.as_bytes())
        .finalize();
    hex::encode(&digest[..16])
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("operating system random source failed");
    bytes
}

/// A new signing key from the operating system's CSPRNG.
pub fn generate_signing_key() -> SigningKey {
    SigningKey::from_bytes(&random_bytes::<32>())
}

/// Parses a hex-encoded 32-byte public key, refusing weak (small-order) keys.
pub fn parse_public_key(hex_key: &str) -> Result<VerifyingKey, String> {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .map_err(|e| format!("public key is not hex: {e}"))?
        .try_into()
        .map_err(|_| "public key must be 32 bytes".to_owned())?;
    let key = VerifyingKey::from_bytes(&bytes).map_err(|e| format!("invalid public key: {e}"))?;
    if key.is_weak() {
        return Err("public key is weak (small order)".into());
    }
    Ok(key)
}

type HmacSha256 = hmac::Hmac<Sha256>;

/// HMAC-SHA256 of `message` under `secret`, domain-separated by `tag`: for values the brain
/// hands out and must recognise later (pagination cursors).
pub fn keyed_digest(secret: &[u8], tag: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(tag);
    mac.update(message);
    mac.finalize().into_bytes().into()
}

fn confirm_mac(secret: &[u8], agent_id: &str, queue: &str, depth: u64) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(CONFIRM_TAG);
    for field in [agent_id.as_bytes(), queue.as_bytes()] {
        mac.update(&(field.len() as u32).to_be_bytes());
        mac.update(field);
    }
    mac.update(&depth.to_be_bytes());
    mac
}

/// The token an operator must send to purge `queue` on `agent_id`: an HMAC over exactly the
/// depth they were shown, so a purge confirmed for 12 messages fails once there are 5,000.
pub fn confirm_token(secret: &[u8], agent_id: &str, queue: &str, depth: u64) -> String {
    hex::encode(
        confirm_mac(secret, agent_id, queue, depth)
            .finalize()
            .into_bytes(),
    )
}

/// Constant-time check of a presented confirm token.
pub fn confirm_token_matches(
    secret: &[u8],
    agent_id: &str,
    queue: &str,
    depth: u64,
    presented: &str,
) -> bool {
    let Ok(bytes) = hex::decode(presented) else {
        return false;
    };
    confirm_mac(secret, agent_id, queue, depth)
        .verify_slice(&bytes)
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_are_derived_and_stable() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let id = key_id(&key.verifying_key());
        assert_eq!(id.len(), 32);
        assert_eq!(id, key_id(&key.verifying_key()));
        assert_ne!(id, key_id(&generate_signing_key().verifying_key()));
    }

    #[test]
    fn confirm_tokens_bind_agent_queue_and_depth() {
        let secret = b"secret";
        let token = confirm_token(secret, "a1", "default", 12);
        assert!(confirm_token_matches(secret, "a1", "default", 12, &token));
        assert!(!confirm_token_matches(secret, "a1", "default", 13, &token));
        assert!(!confirm_token_matches(secret, "a1", "other", 12, &token));
        assert!(!confirm_token_matches(secret, "a2", "default", 12, &token));
        assert!(!confirm_token_matches(
            b"other", "a1", "default", 12, &token
        ));
        assert!(!confirm_token_matches(secret, "a1", "default", 12, "zz"));
        // Length framing: ("ab","c") and ("a","bc") differ.
        assert_ne!(
            confirm_token(secret, "ab", "c", 1),
            confirm_token(secret, "a", "bc", 1)
        );
    }

    #[test]
    fn weak_public_keys_are_refused() {
        // The identity point (small order).
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key(&hex::encode(identity)).is_err());
        let good = generate_signing_key().verifying_key();
        assert_eq!(
            parse_public_key(&hex::encode(good.as_bytes())).unwrap(),
            good
        );
    }
}
