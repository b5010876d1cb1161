//! Login sessions in Redis.
//!
//! A token is 32 random bytes in unpadded base64url. Redis holds only its
//! SHA-256 (`oc:session:<hex>`), so a dump of Redis gives no usable token;
//! the value is a [`SessionRecord`] and the key expires with the session.

use base64::Engine as _;
use rand::RngCore as _;
use redis::aio::ConnectionManager;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use oceanchat_protocol::internal::keys;

use crate::error::ServiceError;

/// What Redis stores for one login session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub user_id: String,
    pub session_id: String,
    #[serde(default)]
    pub device: Option<String>,
    /// Milliseconds since the epoch.
    pub expires_at: u64,
}

/// A fresh login token.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The Redis key of a token's session.
pub fn session_key(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    keys::session(&hex)
}

/// Stores a new session for `record`, valid for `ttl_s` seconds. When
/// that gives the user more than `max_sessions` live sessions (0: no
/// limit), the oldest are removed and returned, so that their sockets can
/// be closed.
pub async fn create(
    redis: &mut ConnectionManager,
    token: &str,
    record: &SessionRecord,
    ttl_s: u64,
    max_sessions: u64,
) -> Result<Vec<SessionRecord>, ServiceError> {
    let key = session_key(token);
    let value = serde_json::to_string(record).expect("session records serialize");
    let index = keys::user_sessions(&record.user_id);
    let now = record.expires_at.saturating_sub(ttl_s * 1000);
    let (count,): (u64,) = redis::pipe()
        .set_ex(&key, value, ttl_s)
        .ignore()
        .zadd(&index, &key, record.expires_at)
        .ignore()
        // Expired sessions leave the index here, not by their own expiry.
        .zrembyscore(&index, "-inf", now)
        .ignore()
        .expire(&index, ttl_s as i64)
        .ignore()
        .zcard(&index)
        .query_async(redis)
        .await?;
    if max_sessions == 0 || count <= max_sessions {
        return Ok(Vec::new());
    }
    let oldest: Vec<(String, f64)> = redis
        .zpopmin(&index, (count - max_sessions) as isize)
        .await?;
    let mut evicted = Vec::new();
    for (old_key, _) in oldest {
        let value: Option<String> = redis.get_del(&old_key).await?;
        if let Some(value) = value {
            evicted.push(parse(&value)?);
        }
    }
    Ok(evicted)
}

/// The session of a token, if it exists and has not expired.
pub async fn lookup(
    redis: &mut ConnectionManager,
    token: &str,
) -> Result<Option<SessionRecord>, ServiceError> {
    let value: Option<String> = redis.get(session_key(token)).await?;
    value.map(|v| parse(&v)).transpose()
}

/// Removes a token's session and returns what it was, in one step so two
/// concurrent logouts cannot both see it.
pub async fn remove(
    redis: &mut ConnectionManager,
    token: &str,
) -> Result<Option<SessionRecord>, ServiceError> {
    let key = session_key(token);
    let value: Option<String> = redis.get_del(&key).await?;
    let record = value.map(|v| parse(&v)).transpose()?;
    if let Some(record) = &record {
        let () = redis
            .zrem(keys::user_sessions(&record.user_id), &key)
            .await?;
    }
    Ok(record)
}

fn parse(value: &str) -> Result<SessionRecord, ServiceError> {
    serde_json::from_str(value)
        .map_err(|e| ServiceError::Internal(format!("unreadable session record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_32_random_bytes_in_base64url() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
    }

    #[test]
    fn session_keys_hash_the_token() {
        // sha256("abc"), a standard test vector.
        assert_eq!(
            session_key("abc"),
            "oc:session:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
