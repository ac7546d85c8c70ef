//! Password hashing with argon2id (OWASP's first choice), run on the blocking pool because one
//! hash costs tens of milliseconds of CPU and would stall every request sharing the thread.
//!
//! Parameters: OWASP's first listed argon2id configuration, 46 MiB and one pass (as strong as
//! its 19 MiB, two-pass alternative). Above glibc's 32 MiB ceiling for heap allocations, each
//! hash's memory is mapped for it and returned to the OS when it ends; with 19 MiB, glibc kept
//! every buffer in its per-thread arenas and each login burst raised the api's resident memory
//! for good (measured: 13 MB idle, 115 MB after three concurrent logins). Stored hashes carry
//! their own parameters, so older ones still verify.
//!
//! At most one hash per CPU core runs at a time; the rest wait their turn. Without the bound, a
//! burst of logins would start a blocking thread and 46 MiB per request (hundreds of threads,
//! gigabytes) and finish no sooner: the cores are the limit either way.

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::{error::AppError, users::model::Password};

/// Memory cost in KiB (46 MiB) and passes: OWASP's first listed argon2id configuration.
const MEMORY_KIB: u32 = 47_104;
const PASSES: u32 = 1;

/// The hasher for new hashes (verification reads the parameters from the stored hash).
fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, PASSES, 1, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Runs `work` on the blocking pool once one of the per-core hashing slots is free.
async fn run_bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    static SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, usize::from))
    });
    // The semaphore is never closed, so acquiring cannot fail.
    let _slot = slots.acquire().await.ok();
    tokio::task::spawn_blocking(work).await
}

/// Hashes a password into a PHC string (`$argon2id$v=19$...`).
pub async fn hash(password: Password) -> Result<String, AppError> {
    run_bounded(move || {
        let salt = SaltString::generate(&mut OsRng);
        hasher()
            .hash_password(password.expose().as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(format!("hashing password: {e}")))
    })
    .await?
}

/// Checks a password against a stored hash; a malformed hash counts as a mismatch.
pub async fn verify(candidate: String, stored_hash: String) -> Result<bool, AppError> {
    run_bounded(move || {
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
        hasher()
            .hash_password(b"not-a-real-password-only-for-timing", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}
