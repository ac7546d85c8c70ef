//! Password hashing with argon2id (OWASP's first choice), run on the blocking pool because one
//! hash costs tens of milliseconds of CPU and would stall every request sharing the thread.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::{error::AppError, users::model::Password};

/// Hashes a password into a PHC string (`$argon2id$v=19$...`).
pub async fn hash(password: Password) -> Result<String, AppError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(format!("hashing password: {e}")))
    })
    .await?
}

/// Checks a password against a stored hash; a malformed hash counts as a mismatch.
pub async fn verify(candidate: String, stored_hash: String) -> Result<bool, AppError> {
    tokio::task::spawn_blocking(move || {
        let Ok(parsed) = PasswordHash::new(&stored_hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(candidate.as_bytes(), &parsed)
            .is_ok()
    })
    .await
    .map_err(AppError::from)
}

/// A valid hash of a random password, checked against when the email is unknown so a failed
/// login takes as long whether or not the account exists (no user enumeration by timing).
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(b"not-a-real-password-only-for-timing", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}
