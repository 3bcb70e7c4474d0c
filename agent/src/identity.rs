//! The agent's own key pair and link credential, kept in files readable by the agent's user
//! only.

use std::path::Path;

use ed25519_dalek::SigningKey;

/// Reads the signing key (hex seed).
pub fn load_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let seed: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("{}: not a 32-byte hex key", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Reads the link credential.
pub fn load_credential(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let credential = text.trim().to_owned();
    if credential.starts_with("twa_") {
        Ok(credential)
    } else {
        Err(format!("{}: not an agent credential", path.display()))
    }
}
