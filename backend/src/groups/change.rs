//! What every change to a group shares: the version bump, the `group`
//! event to its followers, the cap on groups per user.

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};

use oceanchat_protocol::client::{encode_event, Event};
use oceanchat_protocol::internal::topics;
use oceanchat_protocol::ErrorCode;

use crate::delivery;
use crate::error::ServiceError;
use crate::state::AppState;

/// Longest group name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

/// Bumps the group's version without the lock, for the changes a user
/// makes to their own membership (leave, join); returns the new version.
pub async fn bump_version(state: &AppState, group_id: &str) -> Result<u64, ServiceError> {
    state
        .store
        .bump_group_version(group_id)
        .await?
        .ok_or_else(|| group_not_found(group_id))
}

/// `forbidden` for the first of `user_ids` already in the most groups one
/// user may be in (`--max-groups-per-user`).
pub async fn require_room_in_groups(
    state: &AppState,
    user_ids: &[String],
) -> Result<(), ServiceError> {
    let cap = state.config.max_groups_per_user;
    if cap == 0 {
        return Ok(());
    }
    let counts: Vec<(&str, u64)> = futures::stream::iter(
        user_ids
            .iter()
            .map(|user_id| async move {
                let count = state.store.group_count(user_id).await?;
                Ok::<_, ServiceError>((user_id.as_str(), count))
            })
            .collect::<Vec<_>>(),
    )
    .buffer_unordered(16)
    .try_collect()
    .await?;
    match counts.into_iter().find(|(_, count)| *count >= cap) {
        Some((user_id, _)) => Err(forbidden(format!(
            "{user_id} is in {cap} groups already, the most one user may be in"
        ))),
        None => Ok(()),
    }
}

/// Publishes a `group` event to the group's followers; returns the frame.
/// Best effort: the change is stored whether or not the event goes out,
/// and `group.get` shows it.
pub async fn publish(
    state: &AppState,
    group_id: &str,
    version: u64,
    change: serde_json::Value,
) -> Bytes {
    let frame = Bytes::from(encode_event(&Event::Group {
        group_id: group_id.to_string(),
        version,
        change,
    }));
    if let Err(e) = delivery::publish_topic(state, &topics::group(group_id), None, &frame).await {
        e.log("group event");
    }
    frame
}

pub fn group_not_found(group_id: &str) -> ServiceError {
    ServiceError::refused(ErrorCode::NotFound, format!("group {group_id} not found"))
}

pub fn forbidden(message: impl Into<String>) -> ServiceError {
    ServiceError::refused(ErrorCode::Forbidden, message)
}
