//! Password hashes: argon2id, computed off the async runtime in a bounded
//! number of slots.
//!
//! Each hash takes 19 MiB and tens of milliseconds of a core, so at most
//! one per core runs at a time: more only adds latency, and memory, since
//! every blocking thread keeps the allocator arena it hashed in (a burst of
//! 1,000 logins left the process at 1.4 GB before this limit). The slots
//! come in two pools ([`Pool`]): logins of known users without recent
//! failures have a pool of their own, so a flood of registrations or of
//! guessed logins waits in the other one and cannot starve them.

use std::sync::OnceLock;
use std::time::Duration;

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use tokio::sync::Semaphore;

use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;

/// How long a request waits for a hashing slot before it is told to
/// retry later.
const SLOT_WAIT: Duration = Duration::from_secs(5);

/// Which slots a hash runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// A login of an existing user with no failed attempt in the window.
    KnownUser,
    /// Registrations, unknown usernames, usernames with recent failures.
    Other,
}

/// Runs `work` (a hash or a check) on a blocking thread once a slot of
/// `pool` is free; `rate_limited` if none frees up within [`SLOT_WAIT`].
pub async fn off_the_runtime<T: Send + 'static>(
    pool: Pool,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ServiceError> {
    static SLOTS: OnceLock<[Semaphore; 2]> = OnceLock::new();
    let slots = SLOTS.get_or_init(|| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        [Semaphore::new(cores), Semaphore::new(cores)]
    });
    let slots = &slots[match pool {
        Pool::KnownUser => 0,
        Pool::Other => 1,
    }];
    let _slot = tokio::time::timeout(SLOT_WAIT, slots.acquire())
        .await
        .map_err(|_| {
            ServiceError::refused(
                ErrorCode::RateLimited,
                "too many logins at once; retry in a moment",
            )
        })?
        .expect("the semaphore is never closed");
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Internal(format!("password hashing task failed: {e}")))
}

/// argon2id with the crate's default parameters, in PHC string form.
pub fn hash_password(password: &str) -> Result<String, ServiceError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(format!("password hashing failed: {e}")))
}

pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(hash) => Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok(),
        Err(e) => {
            tracing::error!(error = %e, "stored password hash is unreadable");
            false
        }
    }
}

/// A hash of nothing anyone knows, checked against when the user does not
/// exist, so that the answer's timing does not tell which usernames exist.
pub fn dummy_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        hash_password(&super::sessions::new_token()).expect("hashing a fresh password works")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_hash_and_verify() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }
}
