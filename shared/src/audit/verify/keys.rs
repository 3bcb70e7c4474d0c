//! The brain keys an auditor trusts, each with the window in which it may sign.

use std::collections::HashMap;

use ed25519_dalek::VerifyingKey;

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
