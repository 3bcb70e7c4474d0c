//! Bearer secrets: generated here, shown once, stored only as a SHA-256 digest.

use std::fmt;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Number of random bytes in a secret: 256 bits, so the SHA-256 digest needs no salt or
/// slow hash (nobody can guess the preimage of a uniformly random 32-byte value).
const SECRET_BYTES: usize = 32;

/// Characters of the random part kept visible in listings, enough to tell tokens apart
/// without weakening them (8 hex chars = 32 of the 256 bits).
const VISIBLE_CHARS: usize = 8;

/// What a secret is for; the prefix lets people (and secret scanners) recognise a leaked one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// A user's API token, sent as `Authorization: Bearer tw_...`.
    ApiToken,
    /// A one-time token an agent spends to enroll.
    Enrollment,
    /// An enrolled agent's credential for the agent link.
    AgentCredential,
    /// A dashboard session id, carried by the browser's session cookie.
    Session,
    /// A dashboard session's CSRF token, sent back with every state-changing request.
    Csrf,
}

impl SecretKind {
    /// The fixed prefix every secret of this kind starts with.
    pub fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiToken => "tw_",
            SecretKind::Enrollment => "twe_",
            SecretKind::AgentCredential => "twa_",
            SecretKind::Session => "tws_",
            SecretKind::Csrf => "twc_",
        }
    }
}

/// A freshly generated secret. It exists in plaintext only between generation and the
/// response that shows it once; `Debug` prints the visible prefix only.
pub struct Secret(String);

impl Secret {
    /// Generates a new random secret of `kind` from the operating system's CSPRNG.
    pub fn generate(kind: SecretKind) -> Secret {
        let bytes = crate::crypto::random_bytes::<SECRET_BYTES>();
        Secret(format!("{}{}", kind.prefix(), hex::encode(bytes)))
    }

    /// The plaintext, for the one response or file that hands it to its owner.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The digest to store.
    pub fn hash(&self) -> String {
        hash_secret(&self.0)
    }

    /// The recognisable, non-secret start of the token, e.g. `tw_3f9a21c0`.
    pub fn visible_prefix(&self) -> String {
        visible_prefix(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({}…)", self.visible_prefix())
    }
}

/// Lowercase hex SHA-256 of a presented secret; the only form a secret is stored or compared in.
pub fn hash_secret(presented: &str) -> String {
    hex::encode(Sha256::digest(presented.as_bytes()))
}

/// The non-secret start of a token (its kind prefix plus a few characters).
pub fn visible_prefix(token: &str) -> String {
    let kind_len = token.find('_').map_or(0, |i| i + 1);
    token.chars().take(kind_len + VISIBLE_CHARS).collect()
}

/// Writes a file only its owner may read (mode 0600, also when it existed before), creating
/// missing parent directories, and syncs it: for tokens, keys, and configs that point at them.
pub fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{contents}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_prefixed_unique_and_hash_to_64_hex_chars() {
        let a = Secret::generate(SecretKind::ApiToken);
        let b = Secret::generate(SecretKind::ApiToken);
        assert!(a.expose().starts_with("tw_"));
        assert_eq!(a.expose().len(), 3 + 2 * SECRET_BYTES);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(a.hash().len(), 64);
        assert_eq!(a.hash(), hash_secret(a.expose()));
        assert_ne!(a.hash(), b.hash());
    }

    #[test]
    fn debug_shows_only_the_visible_prefix() {
        let s = Secret::generate(SecretKind::Enrollment);
        let shown = format!("{s:?}");
        assert!(shown.contains(&s.visible_prefix()));
        assert!(!shown.contains(s.expose()));
        assert_eq!(s.visible_prefix().len(), 4 + VISIBLE_CHARS);
    }

    #[test]
    fn hash_matches_a_known_sha256_vector() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
