//! The brain's keys, kept in files under `<data-dir>/keys/` and never in the database:
//! - `<key_id>.key`: an ed25519 signing key (hex seed, mode 0600), one per generation;
//! - `keyring.json`: every public key with its validity range; the one without
//!   `valid_until_ms` is the active signer;
//! - `confirm.key`: the HMAC secret for purge confirm tokens (mode 0600).
//!
//! A stolen database holds no key, so it cannot mint commands or forge audit rows.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use ed25519_dalek::SigningKey;
use taskward_shared::audit::PublicKeyInfo;
use taskward_shared::crypto::{generate_signing_key, key_id, random_bytes};
use taskward_shared::secret::write_private_file;

use crate::store::now_ms;

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
}

/// The brain's keys, shared by every request; the active signer can change at run time when
/// `taskward-brain keys rotate` rewrites the keyring.
pub struct Keys {
    dir: PathBuf,
    state: RwLock<KeyState>,
    confirm_secret: Vec<u8>,
}

struct KeyState {
    signer: Arc<SigningKey>,
    ring: Vec<PublicKeyInfo>,
    ring_modified: Option<SystemTime>,
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
            let info = PublicKeyInfo {
                key_id: key_id(&key.verifying_key()),
                public_key: hex::encode(key.verifying_key().as_bytes()),
                valid_from_ms: now_ms(),
                valid_until_ms: None,
            };
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

    /// The key new rows and checkpoints are signed with.
    pub fn signer(&self) -> Arc<SigningKey> {
        self.state.read().expect("key state lock").signer.clone()
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

    /// Makes a new signing key and returns it with the current one; the caller appends the
    /// rotation row signed by the old key, then calls [`Keys::activate`].
    pub fn prepare_rotation(&self) -> Result<(Arc<SigningKey>, SigningKey), KeyError> {
        let new = generate_signing_key();
        write_key_file(
            &self
                .dir
                .join(format!("{}.key", key_id(&new.verifying_key()))),
            &hex::encode(new.to_bytes()),
        )?;
        Ok((self.signer(), new))
    }

    /// Publishes `new` as the active key and retires the current one.
    pub fn activate(&self, new: &SigningKey) -> Result<(), KeyError> {
        let now = now_ms();
        let mut ring = self.public_keys();
        for info in ring.iter_mut().filter(|i| i.valid_until_ms.is_none()) {
            info.valid_until_ms = Some(now);
        }
        ring.push(PublicKeyInfo {
            key_id: key_id(&new.verifying_key()),
            public_key: hex::encode(new.verifying_key().as_bytes()),
            valid_from_ms: now,
            valid_until_ms: None,
        });
        write_ring(&self.dir.join("keyring.json"), &ring)?;
        let state = load_state(&self.dir)?;
        *self.state.write().expect("key state lock") = state;
        Ok(())
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
    let active = ring
        .iter()
        .rfind(|i| i.valid_until_ms.is_none())
        .ok_or_else(|| KeyError::Corrupt {
            path: ring_path.clone(),
            why: "no active key (every key has valid_until_ms)".into(),
        })?;
    let key_path = dir.join(format!("{}.key", active.key_id));
    let seed: [u8; 32] = read_hex(&key_path)?
        .try_into()
        .map_err(|_| KeyError::Corrupt {
            path: key_path.clone(),
            why: "a signing key is 32 bytes".into(),
        })?;
    let signer = SigningKey::from_bytes(&seed);
    if key_id(&signer.verifying_key()) != active.key_id {
        return Err(KeyError::Corrupt {
            path: key_path,
            why: "this key does not match its id in keyring.json".into(),
        });
    }
    Ok(KeyState {
        signer: Arc::new(signer),
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
