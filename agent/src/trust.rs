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

    /// Learns keys from `key.rotated` rows (at connect, and one at a time as the brain pushes
    /// them during a session), each of which must be signed by a key already trusted, in
    /// order. A new key is trusted with its window: from the row's `switch_at_ms`, and the
    /// key it replaces ends there. Returns how many keys were added, persisted before it
    /// returns; the first row that fails stops the learning and is reported.
    pub fn learn_rotations(&mut self, rows: &[AuditRow]) -> Result<usize, String> {
        let mut added = 0;
        let mut result = Ok(());
        for row in rows {
            let rotation = match verify_rotation(&self.keys, row) {
                Ok(rotation) => rotation,
                Err(e) => {
                    result = Err(format!("rotation row {}: {e}", row.seq));
                    break;
                }
            };
            if self.keys.get(&rotation.new.key_id).is_some() {
                continue;
            }
            if let Some(switch_at) = rotation.switch_at_ms {
                for info in self.infos.iter_mut().filter(|i| {
                    Some(&i.key_id) == rotation.old_key_id.as_ref() && i.valid_until_ms.is_none()
                }) {
                    info.valid_until_ms = Some(switch_at);
                }
            }
            self.infos.push(rotation.new);
            self.keys = TrustedKeys::from_infos(&self.infos)?;
            added += 1;
        }
        if added > 0 {
            self.save()?;
        }
        result.map(|()| added)
    }
}

/// What a verified rotation row says.
struct Rotation {
    new: PublicKeyInfo,
    old_key_id: Option<String>,
    switch_at_ms: Option<i64>,
}

/// Checks a row's hash and signature against trusted keys (not its place in the chain, which
/// the agent does not hold).
pub fn verify_row_signature(keys: &TrustedKeys, row: &AuditRow) -> Result<Statement, String> {
    taskward_shared::audit::verify::check_row(keys, row)
}

fn verify_rotation(keys: &TrustedKeys, row: &AuditRow) -> Result<Rotation, String> {
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
    // Rotations made before switches were scheduled carry no switch time: such a key is
    // trusted without a window start, as it always was.
    let switch_at_ms = statement.payload["switch_at_ms"].as_i64();
    Ok(Rotation {
        new: PublicKeyInfo {
            key_id: id,
            public_key: public.to_owned(),
            valid_from_ms: switch_at_ms.unwrap_or(0),
            valid_until_ms: None,
        },
        old_key_id: statement.payload["old_key_id"].as_str().map(str::to_owned),
        switch_at_ms,
    })
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;
    use taskward_shared::audit::{Actor, ActorKind, STATEMENT_VERSION, genesis_hash};

    use super::*;

    fn info(key: &SigningKey, from: i64) -> PublicKeyInfo {
        PublicKeyInfo::of(&key.verifying_key(), from, None)
    }

    fn rotation(signer: &SigningKey, old: &SigningKey, new: &SigningKey, at: i64) -> AuditRow {
        let statement = Statement {
            v: STATEMENT_VERSION,
            chain: "site:x".into(),
            seq: "2".into(),
            time: "2026-12-03T00:00:00.000Z".into(),
            actor: Actor {
                kind: ActorKind::System,
                id: "cli:op".into(),
                name: "cli:op".into(),
            },
            kind: "key.rotated".into(),
            command_id: None,
            payload: serde_json::json!({
                "old_key_id": key_id(&old.verifying_key()),
                "new_key_id": key_id(&new.verifying_key()),
                "new_public_key": hex::encode(new.verifying_key().as_bytes()),
                "switch_at_ms": at,
            }),
        };
        AuditRow::sign(2, &genesis_hash("site:x"), &statement, signer)
    }

    /// A pushed rotation signed by a trusted key adds the new key with its window (and ends
    /// the old key's there), persisted; one signed by a stranger adds nothing.
    #[test]
    fn rotations_extend_trust_with_their_windows_only_from_trusted_signers() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, stranger) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
            SigningKey::from_bytes(&[3; 32]),
        );
        let mut trust = Trust::pin(dir.path(), vec![info(&a, 10)]).unwrap();

        let forged = rotation(&stranger, &a, &stranger, 500);
        assert!(trust.learn_rotations(&[forged]).is_err());
        assert!(
            trust
                .keys()
                .get(&key_id(&stranger.verifying_key()))
                .is_none()
        );

        assert_eq!(trust.learn_rotations(&[rotation(&a, &a, &b, 500)]), Ok(1));
        assert_eq!(trust.learn_rotations(&[rotation(&a, &a, &b, 500)]), Ok(0));
        let saved = Trust::load(dir.path()).unwrap();
        assert!(saved.keys().get(&key_id(&b.verifying_key())).is_some());
        assert_eq!(saved.infos[0].valid_until_ms, Some(500));
        assert_eq!(
            (saved.infos[1].valid_from_ms, saved.infos[1].valid_until_ms),
            (500, None)
        );
    }
}
