//! The brain keys this agent trusts: pinned at enrollment, extended only by rotation rows
//! signed by a key already trusted. Persisted in `<state_dir>/brain-keys.json`.

use std::path::{Path, PathBuf};

use taskward_shared::audit::verify::TrustedKeys;
use taskward_shared::audit::{AuditRow, PublicKeyInfo, Statement};
use taskward_shared::crypto::{key_id, parse_public_key};

use taskward_shared::secret::write_private_file;

/// The trusted keys and where they are kept.
pub struct Trust {
    path: PathBuf,
    infos: Vec<PublicKeyInfo>,
    keys: TrustedKeys,
}

impl Trust {
    /// Pins keys (at enrollment).
    pub fn pin(state_dir: &Path, infos: Vec<PublicKeyInfo>) -> Result<Trust, String> {
        let trust = Trust {
            path: state_dir.join("brain-keys.json"),
            keys: TrustedKeys::from_infos(&infos)?,
            infos,
        };
        trust.save()?;
        Ok(trust)
    }

    /// Loads the pinned keys.
    pub fn load(state_dir: &Path) -> Result<Trust, String> {
        let path = state_dir.join("brain-keys.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let infos: Vec<PublicKeyInfo> =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Trust {
            keys: TrustedKeys::from_infos(&infos)?,
            infos,
            path,
        })
    }

    fn save(&self) -> Result<(), String> {
        let text = serde_json::to_string_pretty(&self.infos).expect("keys serialize");
        write_private_file(&self.path, &text).map_err(|e| format!("{}: {e}", self.path.display()))
    }

    /// The keys to verify commands with.
    pub fn keys(&self) -> &TrustedKeys {
        &self.keys
    }

    /// Learns keys from `key.rotated` rows, each of which must be signed by a key already
    /// trusted. Returns how many keys were added; a row that fails is skipped and reported.
    pub fn learn_rotations(&mut self, rows: &[AuditRow]) -> Result<usize, String> {
        let mut added = 0;
        for row in rows {
            let new = verify_rotation(&self.keys, row)?;
            if self.keys.get(&new.key_id).is_none() {
                self.infos.push(new);
                self.keys = TrustedKeys::from_infos(&self.infos)?;
                added += 1;
            }
        }
        if added > 0 {
            self.save()?;
        }
        Ok(added)
    }
}

/// Checks a row's hash and signature against trusted keys (not its place in the chain, which
/// the agent does not hold).
pub fn verify_row_signature(keys: &TrustedKeys, row: &AuditRow) -> Result<Statement, String> {
    taskward_shared::audit::verify::check_row(keys, row)
}

fn verify_rotation(keys: &TrustedKeys, row: &AuditRow) -> Result<PublicKeyInfo, String> {
    let statement = verify_row_signature(keys, row)?;
    if statement.kind != "key.rotated" {
        return Err("not a key rotation row".into());
    }
    let public = statement.payload["new_public_key"]
        .as_str()
        .ok_or("rotation without new_public_key")?;
    let key = parse_public_key(public)?;
    let id = key_id(&key);
    if statement.payload["new_key_id"].as_str() != Some(id.as_str()) {
        return Err("rotation names a key id that does not match its key".into());
    }
    Ok(PublicKeyInfo {
        key_id: id,
        public_key: public.to_owned(),
        valid_from_ms: 0,
        valid_until_ms: None,
    })
}
