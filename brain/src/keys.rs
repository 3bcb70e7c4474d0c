//! The brain's keys, kept in files under `<data-dir>/keys/` and never in the database:
//! - `<key_id>.key`: an ed25519 signing key (hex seed, mode 0600), one per generation;
//! - `keyring.json`: every public key with its validity window `[valid_from_ms,
//!   valid_until_ms)`; a rotation ends one window and starts the next at the same instant,
//!   scheduled a few seconds ahead (see [`Keys::signer_at`]);
//! - `confirm.key`: the HMAC secret for purge confirm tokens (mode 0600).
//!
//! A stolen database holds no key, so it cannot mint commands or forge audit rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use ed25519_dalek::SigningKey;
use taskward_shared::audit::{Actor, AuditRow, PublicKeyInfo};
use taskward_shared::crypto::{generate_signing_key, key_id, random_bytes};
use taskward_shared::secret::write_private_file;

use crate::store::audit::{self, AuditContext, RowSigner};
use crate::store::{Store, StoreError, now_ms};

/// Errors reading or writing key files.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A key file's content is not what it should be.
    #[error("{path}: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A rotation cannot be done now.
    #[error("{0}")]
    Refused(String),
    /// The rotation row could not be written.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How often a running server re-reads the keyring: it learns of a scheduled switch at most
/// this long after `keys rotate` wrote it.
pub const RELOAD_EVERY: Duration = Duration::from_millis(500);

/// The shortest lead `keys rotate` accepts: several reloads fit before the switch, and the
/// agents connected to the server are told of the new key before it signs anything.
pub const MIN_LEAD: Duration = Duration::from_secs(2);

/// The lead `keys rotate` takes by default.
pub const DEFAULT_LEAD: Duration = Duration::from_secs(5);

/// The brain's keys, shared by every request. Every row and checkpoint is signed by the key
/// whose validity window holds its time ([`Keys::signer_at`]); `taskward-brain keys rotate`
/// schedules a switch a few seconds ahead in the keyring, and a running server re-reads the
/// keyring often enough to learn of it before it happens, so no row is ever signed by a key
/// outside its window.
pub struct Keys {
    dir: PathBuf,
    state: RwLock<KeyState>,
    confirm_secret: Vec<u8>,
}

struct KeyState {
    /// The private keys on disk, with their windows, oldest first.
    signers: Vec<WindowedKey>,
    ring: Vec<PublicKeyInfo>,
    ring_modified: Option<SystemTime>,
}

/// A signing key and its validity window `[from, until)`.
struct WindowedKey {
    from: i64,
    until: Option<i64>,
    key: Arc<SigningKey>,
}

impl WindowedKey {
    fn holds(&self, time_ms: i64) -> bool {
        self.from <= time_ms && self.until.is_none_or(|until| time_ms < until)
    }
}

/// A switch of signing key that `keys rotate` wrote to the keyring.
#[derive(Debug, Clone)]
pub struct ScheduledSwitch {
    /// The key that signs until the switch.
    pub old_key_id: String,
    /// The key that signs from the switch on.
    pub new_key_id: String,
    /// The new public key, hex.
    pub new_public_key: String,
    /// The instant of the switch, ms since the epoch: the old key's `valid_until_ms` and the
    /// new key's `valid_from_ms`.
    pub switch_at_ms: i64,
}

impl Keys {
    /// Loads the keys, creating the directory, a first signing key and the confirm secret if
    /// they do not exist.
    pub fn load_or_create(data_dir: &Path) -> Result<Keys, KeyError> {
        let dir = data_dir.join("keys");
        if !dir.exists() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|source| KeyError::Io {
                    path: dir.clone(),
                    source,
                })?;
        }
        let confirm_path = dir.join("confirm.key");
        if !confirm_path.exists() {
            write_key_file(&confirm_path, &hex::encode(random_bytes::<32>()))?;
        }
        let confirm_secret = read_hex(&confirm_path)?;
        let ring_path = dir.join("keyring.json");
        if !ring_path.exists() {
            let key = generate_signing_key();
            let info = PublicKeyInfo::of(&key.verifying_key(), now_ms(), None);
            write_key_file(
                &dir.join(format!("{}.key", info.key_id)),
                &hex::encode(key.to_bytes()),
            )?;
            write_ring(&ring_path, &[info])?;
        }
        let state = load_state(&dir)?;
        Ok(Keys {
            dir,
            state: RwLock::new(state),
            confirm_secret,
        })
    }

    /// The key that signs a row or checkpoint dated `time_ms`: the one whose window
    /// `[valid_from_ms, valid_until_ms)` holds it. A time before every window (a clock set
    /// back past the first key's creation) takes the oldest key on disk; a time in no window
    /// of a key on disk (a retired key file removed) takes the newest key that started before it.
    pub fn signer_at(&self, time_ms: i64) -> Arc<SigningKey> {
        let state = self.state.read().expect("key state lock");
        let signers = &state.signers;
        signers
            .iter()
            .rfind(|k| k.holds(time_ms))
            .or_else(|| signers.iter().rfind(|k| k.from <= time_ms))
            .or_else(|| signers.first())
            .expect("the keyring has at least one key on disk")
            .key
            .clone()
    }

    /// Every public key ever used, oldest first.
    pub fn public_keys(&self) -> Vec<PublicKeyInfo> {
        self.state.read().expect("key state lock").ring.clone()
    }

    /// The secret purge confirm tokens are MACed with.
    pub fn confirm_secret(&self) -> &[u8] {
        &self.confirm_secret
    }

    /// Re-reads the keyring if another process (`keys rotate`) changed it. Cheap when it did not.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let modified = modified(&self.dir.join("keyring.json"));
        if modified == self.state.read().expect("key state lock").ring_modified {
            return Ok(false);
        }
        let state = load_state(&self.dir)?;
        *self.state.write().expect("key state lock") = state;
        Ok(true)
    }

    /// Makes a new signing key and writes it to its file (not yet in the keyring): the first
    /// half of a rotation. The caller appends the `key.rotated` row (signed, as every row, by
    /// the key of its time, the current one), then calls [`Keys::schedule_switch`].
    pub fn prepare_rotation(&self, switch_at_ms: i64) -> Result<ScheduledSwitch, KeyError> {
        let ring_path = self.dir.join("keyring.json");
        let ring = self.public_keys();
        let current = ring
            .iter()
            .rfind(|i| i.valid_until_ms.is_none())
            .expect("load_state checked there is an open key");
        if current.valid_from_ms >= switch_at_ms {
            return Err(KeyError::Refused(format!(
                "{}: a switch to key {} is already scheduled at {} ms; rotate again after it",
                ring_path.display(),
                current.key_id,
                current.valid_from_ms
            )));
        }
        let new = generate_signing_key();
        let new_key_id = key_id(&new.verifying_key());
        write_key_file(
            &self.dir.join(format!("{new_key_id}.key")),
            &hex::encode(new.to_bytes()),
        )?;
        Ok(ScheduledSwitch {
            old_key_id: current.key_id.clone(),
            new_key_id,
            new_public_key: hex::encode(new.verifying_key().as_bytes()),
            switch_at_ms,
        })
    }

    /// Writes the switch to the keyring in one atomic rename: the old key's `valid_until_ms`
    /// and the new key's `valid_from_ms` are both `switch_at_ms`, so the windows neither
    /// overlap nor leave a gap.
    pub fn schedule_switch(&self, switch: &ScheduledSwitch) -> Result<(), KeyError> {
        let mut ring = self.public_keys();
        for info in ring.iter_mut().filter(|i| i.valid_until_ms.is_none()) {
            info.valid_until_ms = Some(switch.switch_at_ms);
        }
        ring.push(PublicKeyInfo {
            key_id: switch.new_key_id.clone(),
            public_key: switch.new_public_key.clone(),
            valid_from_ms: switch.switch_at_ms,
            valid_until_ms: None,
        });
        write_ring(&self.dir.join("keyring.json"), &ring)?;
        let state = load_state(&self.dir)?;
        *self.state.write().expect("key state lock") = state;
        Ok(())
    }
}

/// `taskward-brain keys rotate`: schedules a switch to a new key `lead` from now. The
/// `key.rotated` row (old and new key ids, the new public key, `switch_at_ms`) is appended to
/// the site chain first, signed by the outgoing key (the row's time is before the switch), and
/// only then is the switch written to the keyring: a failure leaves at worst an announced key
/// that never signs, never a key that signs unannounced. Running servers learn of the switch
/// from the keyring within [`RELOAD_EVERY`] and tell their connected agents at once.
pub fn rotate(
    store: &Store,
    keys: &Arc<Keys>,
    lead: Duration,
    actor: &Actor,
) -> Result<(ScheduledSwitch, AuditRow), KeyError> {
    if lead < MIN_LEAD {
        return Err(KeyError::Refused(format!(
            "the lead must be at least {} s",
            MIN_LEAD.as_secs()
        )));
    }
    keys.reload_if_changed()?;
    let switch_at_ms = now_ms() + lead.as_millis() as i64;
    let switch = keys.prepare_rotation(switch_at_ms)?;
    let ctx = AuditContext {
        signer: keys.clone(),
        actor: actor.clone(),
    };
    let chain = store.site_chain();
    let payload = serde_json::json!({
        "old_key_id": switch.old_key_id,
        "new_key_id": switch.new_key_id,
        "new_public_key": switch.new_public_key,
        "switch_at_ms": switch_at_ms,
    });
    let row = store.write_blocking("rotate_key", |conn| {
        let row = audit::append(conn, &ctx, &chain, "key.rotated", None, payload)?;
        // Waiting for the chain's lock must not have carried the row past the switch: it
        // would be dated in the new key's window but signed by the old one.
        if audit::row_time(conn, &chain, row.seq)? + RELOAD_EVERY.as_millis() as i64 >= switch_at_ms
        {
            return Err(KeyError::Refused(
                "the database was too slow to record the rotation before its switch; \
                 nothing changed, try again with a longer --lead"
                    .into(),
            ));
        }
        Ok(row)
    });
    let row = match row {
        Ok(row) => row,
        Err(err) => {
            // The new key was never announced: its file goes too.
            let _ = std::fs::remove_file(keys.dir.join(format!("{}.key", switch.new_key_id)));
            return Err(err);
        }
    };
    keys.schedule_switch(&switch)?;
    Ok((switch, row))
}

impl crate::store::OpError for KeyError {
    fn store_error(&self) -> Option<&StoreError> {
        match self {
            KeyError::Store(err) => Some(err),
            _ => None,
        }
    }
}

impl RowSigner for Keys {
    fn signer_at(&self, time_ms: i64) -> Arc<SigningKey> {
        Keys::signer_at(self, time_ms)
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn load_state(dir: &Path) -> Result<KeyState, KeyError> {
    let ring_path = dir.join("keyring.json");
    let ring_modified = modified(&ring_path);
    let text = std::fs::read_to_string(&ring_path).map_err(|source| KeyError::Io {
        path: ring_path.clone(),
        source,
    })?;
    let ring: Vec<PublicKeyInfo> = serde_json::from_str(&text).map_err(|e| KeyError::Corrupt {
        path: ring_path.clone(),
        why: e.to_string(),
    })?;
    if !ring.iter().any(|i| i.valid_until_ms.is_none()) {
        return Err(KeyError::Corrupt {
            path: ring_path.clone(),
            why: "no active key (every key has valid_until_ms)".into(),
        });
    }
    let mut signers = Vec::with_capacity(ring.len());
    for (n, info) in ring.iter().enumerate() {
        let key_path = dir.join(format!("{}.key", info.key_id));
        // A retired key's file may have been removed; the open key (and one scheduled to
        // take over) must be there.
        let needed = info.valid_until_ms.is_none() || n + 2 >= ring.len();
        if !needed && !key_path.exists() {
            continue;
        }
        let seed: [u8; 32] = read_hex(&key_path)?
            .try_into()
            .map_err(|_| KeyError::Corrupt {
                path: key_path.clone(),
                why: "a signing key is 32 bytes".into(),
            })?;
        let key = SigningKey::from_bytes(&seed);
        if key_id(&key.verifying_key()) != info.key_id {
            return Err(KeyError::Corrupt {
                path: key_path,
                why: "this key does not match its id in keyring.json".into(),
            });
        }
        signers.push(WindowedKey {
            from: info.valid_from_ms,
            until: info.valid_until_ms,
            key: Arc::new(key),
        });
    }
    Ok(KeyState {
        signers,
        ring,
        ring_modified,
    })
}

fn read_hex(path: &Path) -> Result<Vec<u8>, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    hex::decode(text.trim()).map_err(|e| KeyError::Corrupt {
        path: path.to_owned(),
        why: e.to_string(),
    })
}

fn write_key_file(path: &Path, contents: &str) -> Result<(), KeyError> {
    write_private_file(path, contents).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes the keyring atomically (temp file, fsync, rename), so a crash leaves the old or the
/// new ring, never half of one.
fn write_ring(path: &Path, ring: &[PublicKeyInfo]) -> Result<(), KeyError> {
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_string_pretty(ring).expect("keyring serializes");
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    write_private_file(&tmp, &text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
