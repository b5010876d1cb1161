//! Helpers shared by the lock and group administration tests: the
//! requests of PROTOCOL.md's lock and `group.*` ops, written from the
//! protocol alone with `Connection::request`. (A world whose backend
//! takes extra flags is `World::with_args`.)

#![allow(dead_code)] // each test file uses a different part

use std::time::Duration;

use oceanchat_client::{ClientError, Connection};
use oceanchat_protocol::client::{
    ErrorBody, ErrorCode, Event, GroupGetResult, GroupPatch, LockAcquired, LockHolder, LockRenewed,
    LockWatchResult, Op, Role, VersionResult,
};

/// A stack, one backend started with `backend_args`, and `gateways`
/// gateways.
pub fn group_resource(group_id: &str) -> String {
    format!("group:{group_id}")
}

pub async fn acquire(c: &Connection, resource: &str) -> Result<LockAcquired, ClientError> {
    c.request_as(Op::LockAcquire {
        resource: resource.to_string(),
    })
    .await
}

/// `lock.acquire` that must be refused with `locked`: the holder named.
pub async fn acquire_refused(c: &Connection, resource: &str) -> LockHolder {
    match acquire(c, resource).await {
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

pub async fn renew(
    c: &Connection,
    resource: &str,
    token: &str,
) -> Result<LockRenewed, ClientError> {
    c.request_as(Op::LockRenew {
        resource: resource.to_string(),
        token: token.to_string(),
    })
    .await
}

pub async fn release(c: &Connection, resource: &str, token: &str) -> Result<(), ClientError> {
    c.request(Op::LockRelease {
        resource: resource.to_string(),
        token: token.to_string(),
    })
    .await
    .map(drop)
}

pub async fn watch(c: &Connection, resource: &str) -> Result<Option<LockHolder>, ClientError> {
    let result: LockWatchResult = c
        .request_as(Op::LockWatch {
            resource: resource.to_string(),
        })
        .await?;
    Ok(result.holder)
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

pub async fn group_get(c: &Connection, group_id: &str) -> GroupGetResult {
    c.request_as(Op::GroupGet {
        group_id: group_id.to_string(),
        members_after: None,
        members_limit: None,
    })
    .await
    .unwrap_or_else(|e| panic!("group.get {group_id}: {e}"))
}

/// The role of `user_id` in a `group.get` result, `None` if not a member.
pub fn role_in(group: &GroupGetResult, user_id: &str) -> Option<Role> {
    group
        .members
        .iter()
        .find(|m| m.user_id == user_id)
        .map(|m| m.role)
}

pub async fn update(
    c: &Connection,
    group_id: &str,
    token: &str,
    patch: GroupPatch,
    expected_version: Option<u64>,
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupUpdate {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            patch,
            expected_version,
        })
        .await,
    )
}

pub async fn add(
    c: &Connection,
    group_id: &str,
    token: &str,
    user_ids: &[&str],
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupMembersAdd {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            user_ids: user_ids.iter().map(|u| u.to_string()).collect(),
        })
        .await,
    )
}

pub async fn remove(
    c: &Connection,
    group_id: &str,
    token: &str,
    user_ids: &[&str],
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupMembersRemove {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            user_ids: user_ids.iter().map(|u| u.to_string()).collect(),
        })
        .await,
    )
}

pub async fn set_role(
    c: &Connection,
    group_id: &str,
    token: &str,
    user_id: &str,
    role: Role,
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupMembersSetRole {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            user_id: user_id.to_string(),
            role,
        })
        .await,
    )
}

pub async fn transfer(
    c: &Connection,
    group_id: &str,
    token: &str,
    user_id: &str,
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupTransfer {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            user_id: user_id.to_string(),
        })
        .await,
    )
}

pub async fn mute(
    c: &Connection,
    group_id: &str,
    token: &str,
    user_id: &str,
    muted: bool,
) -> Result<u64, ClientError> {
    version_of(
        c.request_as(Op::GroupMembersMute {
            group_id: group_id.to_string(),
            lock_token: token.to_string(),
            user_id: user_id.to_string(),
            muted,
        })
        .await,
    )
}

fn version_of(result: Result<VersionResult, ClientError>) -> Result<u64, ClientError> {
    result.map(|r| r.version)
}

/// Milliseconds since the epoch, to check a holder's `since`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}
