//! Edit locks: `lock.acquire`, `lock.renew`, `lock.release`, `lock.watch`,
//! and their release when the holding connection closes.
//!
//! A lock is a lease in Redis held by one *connection* (docs/concurrency.md
//! says why): the hash [`lock_key`] holds a random token, the holder
//! (connection, session, user, display name, since) and a fencing number,
//! and expires `lock_ttl_ms` after it was taken or last renewed. Every
//! change to it is one Lua script, so taking, renewing and releasing are
//! compare-and-set on the token (or on the holding connection) and never
//! undo another holder's lock.
//!
//! - The fencing number comes from a per-resource counter ([`fence_key`]),
//!   incremented on every new holder and written onto the group document
//!   (`$max: {lock_fence}`) before `lock.acquire` replies. Group writes
//!   filter on it (see [`crate::groups`]), so a holder whose lease lapsed
//!   while it was paused cannot write once someone else took the lock.
//! - Each connection's locks are listed in [`conn_locks_key`], so the
//!   `closed` connection event releases them at once
//!   ([`release_connection`]).
//! - Acquiring checks, in the same script, that the asking connection's
//!   route still exists. The gateway removes the route before it sends
//!   `closed`, so either the script ran first and `closed` finds the lock
//!   in the connection's list, or the script sees no route and takes
//!   nothing: a lock never outlives its connection by more than the lease.
//!
//! Resources: only `group:<group_id>` exists today; anything else is
//! `bad_request`. Changes are published as `lock` events on the topic
//! [`topics::lock`] of the resource: on acquire (the new holder), on
//! release and on the holder's disconnect (holder null). A lease that just
//! lapses is not announced; the next `lock.acquire` announces its new
//! holder.

use bytes::Bytes;
use rand::RngCore as _;

use oceanchat_protocol::client::{
    encode_event, Event, LockAcquired, LockHolder, LockRenewed, Role,
};
use oceanchat_protocol::conv::group_conv;
use oceanchat_protocol::internal::{keys, topics, ConnRef};
use oceanchat_protocol::ErrorCode;

use crate::clock::now_ms;
use crate::convs::require_member;
use crate::delivery;
use crate::error::ServiceError;
use crate::redis::scripts as lua;
use crate::rpc::Caller;
use crate::state::AppState;

/// A resource that can be locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A group's settings and members: `group:<group_id>`.
    Group(String),
}

impl Resource {
    pub fn parse(resource: &str) -> Result<Resource, ServiceError> {
        match resource.split_once(':') {
            Some(("group", id)) if topics::valid_id(id) && !id.contains(':') => {
                Ok(Resource::Group(id.to_string()))
            }
            _ => Err(ServiceError::bad_request(format!(
                "unknown lock resource {resource:?}: only group:<group_id> can be locked"
            ))),
        }
    }

    pub fn group(group_id: &str) -> String {
        format!("group:{group_id}")
    }
}

/// What `lock.acquire` got: the lease, or the holder that has it.
pub enum Acquire {
    Granted(LockAcquired),
    Locked(LockHolder),
}

/// `lock.acquire`: only the owner and admins of a group may take its lock.
pub async fn acquire(
    state: &AppState,
    me: &Caller,
    resource: &str,
) -> Result<Acquire, ServiceError> {
    let Resource::Group(group_id) = Resource::parse(resource)?;
    let member = require_member(state, &me.user_id, &group_conv(&group_id)).await?;
    if member.role == Role::Member {
        return Err(ServiceError::refused(
            ErrorCode::Forbidden,
            "only the owner and admins may edit the group",
        ));
    }
    // Most refusals end here, before the reads a new lease needs: a page
    // that waits for the lock asks again each time it is released.
    if let Some(holder) = held_by_other(state, me, resource).await? {
        return Ok(Acquire::Locked(holder));
    }
    let floor = current_fence(state, &group_id).await?.unwrap_or(0) + 1;
    let display_name = state.store.display_name(&me.user_id).await?;

    let ttl_ms = state.config.lock_ttl_ms;
    let since = now_ms();
    let token = new_token();
    let mut redis = state.redis.clone();
    let reply: Vec<String> = lua::LOCK_ACQUIRE
        .key(keys::lock(resource))
        .key(keys::lock_fence(resource))
        .key(keys::conn_locks(&me.gateway_id, me.conn_id))
        .key(keys::routes(&me.user_id))
        .arg(&token)
        .arg(ttl_ms)
        .arg(&me.gateway_id)
        .arg(me.conn_id)
        .arg(&me.session_id)
        .arg(&me.user_id)
        .arg(&display_name)
        .arg(since)
        .arg(floor)
        .arg(resource)
        .invoke_async(&mut redis)
        .await?;
    let parts: Vec<&str> = reply.iter().map(String::as_str).collect();
    match parts[..] {
        ["mine", token, _fence] => Ok(Acquire::Granted(LockAcquired {
            token: token.to_string(),
            ttl_ms,
        })),
        ["acquired", token, fence] => {
            let fence: i64 = fence
                .parse()
                .map_err(|_| ServiceError::Internal(format!("lock fence {fence:?}")))?;
            // The fence must be on the group before the holder can write;
            // from now on every write of an earlier holder matches nothing.
            if let Err(e) = state.store.raise_fence(&group_id, fence).await {
                release_token(state, me, resource, token).await.ok();
                return Err(e.into());
            }
            tracing::info!(resource, fence, user_id = &me.user_id, "lock taken");
            let holder = LockHolder {
                user_id: me.user_id.to_string(),
                display_name,
                session_id: me.session_id.to_string(),
                since,
            };
            announce(state, resource, Some(holder)).await;
            Ok(Acquire::Granted(LockAcquired {
                token: token.to_string(),
                ttl_ms,
            }))
        }
        ["locked", user_id, display_name, session_id, since] => Ok(Acquire::Locked(LockHolder {
            user_id: user_id.to_string(),
            display_name: display_name.to_string(),
            session_id: session_id.to_string(),
            since: since.parse().unwrap_or(0),
        })),
        // The connection closed while it asked: nobody will read the reply.
        ["gone"] => Err(ServiceError::refused(
            ErrorCode::Unavailable,
            "the connection is closing",
        )),
        _ => Err(ServiceError::Internal(format!(
            "unexpected lock script reply {reply:?}"
        ))),
    }
}

/// The holder of `resource` if it is another connection than `me`. Only a
/// shortcut: the acquire script decides.
async fn held_by_other(
    state: &AppState,
    me: &Caller,
    resource: &str,
) -> Result<Option<LockHolder>, ServiceError> {
    let mut redis = state.redis.clone();
    let (gateway_id, conn_id): (Option<String>, Option<u64>) = redis::cmd("HMGET")
        .arg(keys::lock(resource))
        .arg(&["gateway_id", "conn_id"])
        .query_async(&mut redis)
        .await?;
    match gateway_id {
        Some(g) if g != me.gateway_id || conn_id != Some(me.conn_id) => {
            holder(state, resource).await
        }
        _ => Ok(None),
    }
}

/// `lock.renew`.
pub async fn renew(
    state: &AppState,
    me: &Caller,
    resource: &str,
    token: &str,
) -> Result<LockRenewed, ServiceError> {
    Resource::parse(resource)?;
    let ttl_ms = state.config.lock_ttl_ms;
    let mut redis = state.redis.clone();
    let renewed: i64 = lua::LOCK_RENEW
        .key(keys::lock(resource))
        .key(keys::conn_locks(&me.gateway_id, me.conn_id))
        .arg(token)
        .arg(ttl_ms)
        .arg(&me.gateway_id)
        .arg(me.conn_id)
        .invoke_async(&mut redis)
        .await?;
    if renewed == 1 {
        Ok(LockRenewed { ttl_ms })
    } else {
        Err(lock_lost(resource))
    }
}

/// `lock.release`: frees the lock if `token` is live and this connection
/// holds it; otherwise there is nothing to release and it succeeds too.
pub async fn release(
    state: &AppState,
    me: &Caller,
    resource: &str,
    token: &str,
) -> Result<(), ServiceError> {
    Resource::parse(resource)?;
    if release_token(state, me, resource, token).await? {
        tracing::info!(resource, user_id = &me.user_id, "lock released");
        announce(state, resource, None).await;
    }
    Ok(())
}

async fn release_token(
    state: &AppState,
    me: &Caller,
    resource: &str,
    token: &str,
) -> Result<bool, ServiceError> {
    let mut redis = state.redis.clone();
    let released: i64 = lua::LOCK_RELEASE
        .key(keys::lock(resource))
        .key(keys::conn_locks(&me.gateway_id, me.conn_id))
        .arg(token)
        .arg(&me.gateway_id)
        .arg(me.conn_id)
        .arg(resource)
        .invoke_async(&mut redis)
        .await?;
    Ok(released == 1)
}

/// `lock.watch`: who holds the lock now. The caller subscribes the asking
/// connection to [`topics::lock`] of the resource, so `lock` events follow.
/// Members of the group may watch (they see the read-only view).
pub async fn watch(
    state: &AppState,
    me: &Caller,
    resource: &str,
) -> Result<Option<LockHolder>, ServiceError> {
    let Resource::Group(group_id) = Resource::parse(resource)?;
    require_member(state, &me.user_id, &group_conv(&group_id)).await?;
    holder(state, resource).await
}

/// The holder of a lock now, if any.
pub async fn holder(state: &AppState, resource: &str) -> Result<Option<LockHolder>, ServiceError> {
    let mut redis = state.redis.clone();
    let (user_id, display_name, session_id, since): (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<u64>,
    ) = redis::cmd("HMGET")
        .arg(keys::lock(resource))
        .arg(&["user_id", "display_name", "session_id", "since"])
        .query_async(&mut redis)
        .await?;
    Ok(user_id.map(|user_id| LockHolder {
        user_id,
        display_name: display_name.unwrap_or_default(),
        session_id: session_id.unwrap_or_default(),
        since: since.unwrap_or(0),
    }))
}

/// The fencing number of the live lease of `resource` if the request's
/// connection holds it with `token`: what a write must present.
/// `lock_required` when nobody holds the lock (or no token was given),
/// `lock_lost` when the token or the connection is not the holder's.
pub async fn live_fence(
    state: &AppState,
    me: &Caller,
    resource: &str,
    token: &str,
) -> Result<i64, ServiceError> {
    if token.is_empty() {
        return Err(lock_required(resource));
    }
    let mut redis = state.redis.clone();
    let (live_token, fence, gateway_id, conn_id): (
        Option<String>,
        Option<i64>,
        Option<String>,
        Option<u64>,
    ) = redis::cmd("HMGET")
        .arg(keys::lock(resource))
        .arg(&["token", "fence", "gateway_id", "conn_id"])
        .query_async(&mut redis)
        .await?;
    let Some(live_token) = live_token else {
        return Err(lock_required(resource));
    };
    let mine = live_token == token
        && gateway_id.as_deref() == Some(&me.gateway_id)
        && conn_id == Some(me.conn_id);
    match fence {
        Some(fence) if mine => Ok(fence),
        _ => Err(lock_lost(resource)),
    }
}

/// Releases every lock the closed connection held and tells the watchers.
/// Called for each `closed` connection event.
pub async fn release_connection(
    state: &AppState,
    conn: &ConnRef,
    instance: &str,
) -> Result<(), ServiceError> {
    let list = keys::conn_locks(&conn.gateway_id, conn.conn_id);
    let mut redis = state.redis.clone();
    let resources: Vec<String> = redis::cmd("SMEMBERS")
        .arg(&list)
        .query_async(&mut redis)
        .await?;
    for resource in resources {
        let released: i64 = lua::LOCK_RELEASE_CONN
            .key(keys::lock(&resource))
            .key(&list)
            .arg(&conn.gateway_id)
            .arg(conn.conn_id)
            .arg(instance)
            .arg(&resource)
            .invoke_async(&mut redis)
            .await?;
        if released == 1 {
            tracing::info!(
                resource,
                gateway = %conn.gateway_id,
                conn_id = conn.conn_id,
                "lock released: its connection closed"
            );
            announce(state, &resource, None).await;
        }
    }
    Ok(())
}

/// Publishes a `lock` event to the watchers of `resource`. Best effort:
/// the lock itself has changed whether or not watchers hear of it, and a
/// watcher can always ask again with `lock.watch`.
async fn announce(state: &AppState, resource: &str, holder: Option<LockHolder>) {
    let frame = Bytes::from(encode_event(&Event::Lock {
        resource: resource.to_string(),
        holder,
    }));
    if let Err(e) = delivery::publish_topic(state, &topics::lock(resource), None, &frame).await {
        e.log("lock event");
    }
}

/// The highest fencing number written onto the group, `None` for a group
/// never locked; `not_found` if the group does not exist.
async fn current_fence(state: &AppState, group_id: &str) -> Result<Option<i64>, ServiceError> {
    let found = state.store.fenced(group_id).await?.ok_or_else(|| {
        ServiceError::refused(ErrorCode::NotFound, format!("group {group_id} not found"))
    })?;
    Ok(found.lock_fence)
}

/// 128 random bits, hex.
fn new_token() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn lock_required(resource: &str) -> ServiceError {
    ServiceError::refused(
        ErrorCode::LockRequired,
        format!("take the lock {resource} first"),
    )
}

pub fn lock_lost(resource: &str) -> ServiceError {
    ServiceError::refused(
        ErrorCode::LockLost,
        format!("the lock {resource} is no longer yours"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_group_resources_parse() {
        assert_eq!(
            Resource::parse("group:65f0a1").unwrap(),
            Resource::Group("65f0a1".into())
        );
        for bad in [
            "group:",
            "group:a.b",
            "group:a b",
            "user:x",
            "group",
            "",
            "group:a:b",
        ] {
            assert!(Resource::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
