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
//! gigabytes) and finish no sooner: the cores are the limit either way. The queue is bounded too
//! ([`MAX_WAITING_PER_SLOT`] per core): past it the server is saturated with password work and a
//! new hash is refused at once (503) rather than queued behind the flood, so the wait of those
//! admitted stays short. Floods against one account are stopped earlier, before any hashing, by
//! the per-account login budget (`login_throttle`).

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

/// Hashes that may wait for a slot, per slot, before new ones are refused.
pub const MAX_WAITING_PER_SLOT: usize = 16;

/// Hashing slots with a bounded queue in front of them.
#[derive(Debug)]
struct Slots {
    running: tokio::sync::Semaphore,
    waiting: std::sync::atomic::AtomicUsize,
    max_waiting: usize,
}

/// Counts one waiter for as long as it waits (also when its future is dropped).
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Slots {
    fn new(slots: usize, max_waiting: usize) -> Self {
        Self {
            running: tokio::sync::Semaphore::new(slots),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Runs `work` on the blocking pool once a slot is free; 503 if the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AppError> {
        let _slot = match self.running.try_acquire() {
            Ok(slot) => slot,
            Err(_) => {
                let queued = self
                    .waiting
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _waiting = Waiting(&self.waiting);
                if queued >= self.max_waiting {
                    tracing::warn!(queued, "password hashing saturated; refusing");
                    return Err(AppError::Unavailable(
                        "too many password checks in progress; try again in a moment".into(),
                    ));
                }
                self.running
                    .acquire()
                    .await
                    .map_err(|e| AppError::internal(format!("hashing slots closed: {e}")))?
            }
        };
        Ok(tokio::task::spawn_blocking(work).await?)
    }
}

/// Runs `work` on the blocking pool once one of the per-core hashing slots is free.
async fn run_bounded<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AppError> {
    static SLOTS: std::sync::OnceLock<Slots> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, usize::from);
            Slots::new(cores, cores * MAX_WAITING_PER_SLOT)
        })
        .run(work)
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_new_work_at_once() {
        let slots = std::sync::Arc::new(Slots::new(1, 1));
        let (release, released) = std::sync::mpsc::channel::<()>();
        let running = tokio::spawn({
            let slots = slots.clone();
            async move { slots.run(move || released.recv().is_ok()).await }
        });
        while slots.running.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.run(|| 2).await }
        });
        while slots.waiting.load(std::sync::atomic::Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }

        let refused = slots.run(|| 3).await.unwrap_err();
        assert!(matches!(refused, AppError::Unavailable(_)), "{refused:?}");

        release.send(()).unwrap();
        assert!(running.await.unwrap().unwrap());
        assert_eq!(waiting.await.unwrap().unwrap(), 2);
        assert_eq!(slots.waiting.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(slots.run(|| 4).await.unwrap(), 4);
    }
}
