//! Helpers shared by the lock and group administration tests, over the
//! typed lock and `group.*` requests of `Connection`. (A world whose
//! backend takes extra flags is `World::with_args`.)

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use oceanchat_client::{ClientError, Connection};
use oceanchat_protocol::client::{ErrorBody, ErrorCode, Event, GroupGetResult, LockHolder, Role};

/// The lock resource of a group's settings.
pub fn group_resource(group_id: &str) -> String {
    format!("group:{group_id}")
}

/// `lock.acquire` that must be refused with `locked`: the holder named.
pub async fn acquire_refused(c: &Connection, resource: &str) -> LockHolder {
    match c.lock_acquire(resource).await {
        Err(ClientError::Server { error, .. }) => holder_of(&error),
        other => panic!("expected `locked`, got {other:?}"),
    }
}

/// The `error.holder` of a `locked` refusal.
pub fn holder_of(error: &ErrorBody) -> LockHolder {
    assert_eq!(error.code, ErrorCode::Locked, "{error:?}");
    let holder = error
        .details
        .get("holder")
        .unwrap_or_else(|| panic!("`locked` without `holder`: {error:?}"));
    serde_json::from_value(holder.clone()).expect("holder has the LockHolder fields")
}

/// The next `lock` event for `resource`, skipping other events; `None` if
/// none came within `timeout`. The outer `Option` is "an event came", the
/// inner one its holder.
pub async fn next_lock_event(
    c: &Connection,
    resource: &str,
    timeout: Duration,
) -> Option<Option<LockHolder>> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await? {
            Event::Lock {
                resource: r,
                holder,
            } if r == resource => return Some(holder),
            _ => continue,
        }
    }
}

/// The next `group` event of `group_id`: its version and change.
pub async fn next_group_event(
    c: &Connection,
    group_id: &str,
    timeout: Duration,
) -> Option<(u64, serde_json::Value)> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next_event(left).await? {
            Event::Group {
                group_id: g,
                version,
                change,
            } if g == group_id => return Some((version, change)),
            _ => continue,
        }
    }
}

/// The role of `user_id` in a `group.get` result, `None` if not a member.
pub fn role_in(group: &GroupGetResult, user_id: &str) -> Option<Role> {
    group
        .members
        .iter()
        .find(|m| m.user_id == user_id)
        .map(|m| m.role)
}

/// Milliseconds since the epoch, to check a holder's `since`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
