//! The brain keys an auditor trusts, each with the window in which it may sign.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

use serde_json::Value;

use super::format::is_lower_hex;
use crate::audit::PublicKeyInfo;
use crate::crypto::{key_id, parse_public_key};

/// One trusted key and its validity window.
#[derive(Debug, Clone, Copy)]
struct TrustedKey {
    key: VerifyingKey,
    valid_from_ms: i64,
    valid_until_ms: Option<i64>,
}

/// Public keys an auditor trusts, by key id, each with its validity window.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: HashMap<String, TrustedKey>,
}

impl TrustedKeys {
    /// Builds the set from published key entries, checking each id is derived from its key.
    pub fn from_infos(infos: &[PublicKeyInfo]) -> Result<TrustedKeys, String> {
        let mut keys = HashMap::new();
        for info in infos {
            if info.key_id.len() != 32 || !is_lower_hex(&info.key_id) {
                return Err(format!(
                    "key {:?}: the key_id is not 32 lowercase hex digits",
                    info.key_id
                ));
            }
            if !is_lower_hex(&info.public_key) {
                return Err(format!(
                    "key {}: the public_key is not lowercase hex (the protocol writes hex in lowercase only)",
                    info.key_id
                ));
            }
            let key = parse_public_key(&info.public_key)
                .map_err(|e| format!("key {}: {e}", info.key_id))?;
            if key_id(&key) != info.key_id {
                return Err(format!(
                    "key {}: the id does not belong to this public key",
                    info.key_id
                ));
            }
            keys.insert(
                info.key_id.clone(),
                TrustedKey {
                    key,
                    valid_from_ms: info.valid_from_ms,
                    valid_until_ms: info.valid_until_ms,
                },
            );
        }
        Ok(TrustedKeys { keys })
    }

    /// The key with this id, if trusted (at any time).
    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys.get(key_id).map(|k| &k.key)
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a `key.rotated` row (signed by `signer` at `time_ms`) against these keys, as
    /// `docs/protocol.md` ("Key rotation") says: the outgoing key signs it before the switch,
    /// the new key id is derived from the new public key, and the published windows of the two
    /// keys meet exactly at `switch_at_ms`, the new key among them. A row without
    /// `switch_at_ms` (written before scheduled switches) is held to the new key alone.
    pub fn check_rotation(
        &self,
        signer: &str,
        time_ms: i64,
        payload: &Value,
    ) -> Result<(), String> {
        let text = |name: &str| payload[name].as_str().unwrap_or_default();
        let (old_id, new_id, new_public) = (
            text("old_key_id"),
            text("new_key_id"),
            text("new_public_key"),
        );
        if old_id != signer {
            return Err(format!(
                "signed by key {signer}, not by the outgoing key {old_id}"
            ));
        }
        if new_public.len() != 64 || !is_lower_hex(new_public) {
            return Err("new_public_key is not lowercase hex of 32 bytes".into());
        }
        let new_key = parse_public_key(new_public)?;
        if key_id(&new_key) != new_id {
            return Err(format!(
                "new_key_id {new_id} is not the key id of new_public_key"
            ));
        }
        let Some(new) = self.keys.get(new_id) else {
            return Err(format!(
                "the trusted keys do not include the new key {new_id} (keys from before the rotation?)"
            ));
        };
        if new.key != new_key {
            return Err(format!(
                "the trusted key {new_id} is not the row's new_public_key"
            ));
        }
        let Some(switch) = payload.get("switch_at_ms").and_then(Value::as_i64) else {
            return Ok(());
        };
        if time_ms >= switch {
            return Err(format!(
                "the row is dated at or after its switch_at_ms {switch}"
            ));
        }
        let old_until = self.keys.get(old_id).and_then(|k| k.valid_until_ms);
        if old_until != Some(switch) || new.valid_from_ms != switch {
            return Err(format!(
                "switch_at_ms is {switch} but the trusted keys switch from {old_id} (valid until {}) to {new_id} (valid from {})",
                old_until.map_or("no end".to_owned(), |t| t.to_string()),
                new.valid_from_ms
            ));
        }
        Ok(())
    }

    /// Where `time_ms` falls in the key's window `[valid_from, valid_until)` (half-open, as
    /// `docs/protocol.md` says: at the switch instant the new key signs, never the old), the
    /// end stretched by `grace_ms`: `None` when the key is not trusted at all.
    pub fn window(&self, key_id: &str, time_ms: i64, grace_ms: i64) -> Option<Window> {
        let k = self.keys.get(key_id)?;
        Some(if time_ms < k.valid_from_ms {
            Window::Before {
                valid_from_ms: k.valid_from_ms,
            }
        } else if let Some(until) = k.valid_until_ms
            && time_ms >= until.saturating_add(grace_ms)
        {
            Window::After {
                valid_until_ms: until,
            }
        } else {
            Window::Inside
        })
    }
}

/// Where a time falls relative to a key's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The key may sign at that time.
    Inside,
    /// Before the key existed.
    Before {
        /// When the key started signing.
        valid_from_ms: i64,
    },
    /// After the key was retired (and any grace).
    After {
        /// When the key stopped signing.
        valid_until_ms: i64,
    },
}

impl Window {
    /// Says why a time outside the window is outside it.
    pub fn describe(self) -> String {
        match self {
            Window::Inside => "inside its validity window".into(),
            Window::Before { valid_from_ms } => {
                format!("before its validity window (it signs from {valid_from_ms} ms)")
            }
            Window::After { valid_until_ms } => {
                format!("after its validity window (it was retired at {valid_until_ms} ms)")
            }
        }
    }
}
