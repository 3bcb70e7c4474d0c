//! Dashboard passwords: argon2id with the crate's defaults (19 MiB, 2 passes: OWASP's
//! baseline), stored as PHC strings. Hashing costs tens of milliseconds by design, so callers
//! on the async runtime run it on the blocking pool.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use taskward_shared::crypto::random_bytes;

/// The shortest password accepted.
pub const MIN_CHARS: usize = 10;

/// The longest password accepted (argon2 takes any length; this bounds the work per attempt).
pub const MAX_CHARS: usize = 1024;

/// Why a password is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PasswordError {
    /// Shorter than [`MIN_CHARS`].
    #[error("password: at least {MIN_CHARS} characters are needed, got {0}")]
    TooShort(usize),
    /// Longer than [`MAX_CHARS`].
    #[error("password: at most {MAX_CHARS} characters are allowed, got {0}")]
    TooLong(usize),
}

/// Checks a new password's length.
pub fn check(password: &str) -> Result<(), PasswordError> {
    match password.chars().count() {
        n if n < MIN_CHARS => Err(PasswordError::TooShort(n)),
        n if n > MAX_CHARS => Err(PasswordError::TooLong(n)),
        _ => Ok(()),
    }
}

/// The PHC string to store for a password.
pub fn hash(password: &str) -> String {
    let salt = SaltString::encode_b64(&random_bytes::<16>()).expect("16 bytes is a valid salt");
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any input")
        .to_string()
}

/// Whether `password` matches `stored`. With no stored hash (unknown user, or a user without a
/// password) a hash is still verified, so the answer takes as long and does not tell which.
pub fn verify(password: &str, stored: Option<&str>) -> bool {
    static DECOY: OnceLock<String> = OnceLock::new();
    let decoy = DECOY.get_or_init(|| hash("decoy password, never matches"));
    let (phc, real) = match stored {
        Some(phc) => (phc, true),
        None => (decoy.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let matches = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    real && matches
}

/// A fresh random password (for the bootstrap admin): 24 hexadecimal characters.
pub fn generate() -> String {
    hex::encode(random_bytes::<12>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_differ() {
        let a = hash("correct horse battery");
        let b = hash("correct horse battery");
        assert_ne!(a, b, "salted");
        assert!(a.starts_with("$argon2id$"));
        assert!(verify("correct horse battery", Some(&a)));
        assert!(!verify("correct horse batterY", Some(&a)));
        assert!(!verify("correct horse battery", None));
        assert!(!verify("anything", Some("not a phc string")));
    }

    #[test]
    fn length_bounds() {
        assert_eq!(check(&"x".repeat(9)), Err(PasswordError::TooShort(9)));
        assert_eq!(check(&"x".repeat(10)), Ok(()));
        assert_eq!(check(&"é".repeat(1024)), Ok(()));
        assert_eq!(check(&"x".repeat(1025)), Err(PasswordError::TooLong(1025)));
    }
}
