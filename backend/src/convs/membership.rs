//! The membership checks every conv operation starts with.

use std::collections::BTreeSet;

use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::{MemberDoc, Speaker};

/// The member document of `user_id` in `conv`, or `not_member`. A conv
/// that does not exist has no members, so it gives `not_member` too.
pub async fn require_member(
    state: &AppState,
    user_id: &str,
    conv: &str,
) -> Result<MemberDoc, ServiceError> {
    state
        .store
        .member(conv, user_id)
        .await?
        .ok_or_else(|| not_member(conv))
}

/// `not_member` as [`require_member`], `muted` for a member who may not
/// speak. Answered from the member cache when it can be (a `send` costs
/// no MongoDB read for it); see [`crate::store::MemberCache`].
pub async fn require_speaker(
    state: &AppState,
    user_id: &str,
    conv: &str,
) -> Result<(), ServiceError> {
    match state.store.speaker(conv, user_id).await? {
        Speaker::Member => Ok(()),
        Speaker::Muted => Err(ServiceError::refused(
            ErrorCode::Muted,
            "you are muted in this conv",
        )),
        Speaker::NotMember => Err(not_member(conv)),
    }
}

/// `not_member` unless `user_id` is a member of every conv in `convs`
/// (which must not repeat a conv).
pub async fn require_member_of_all<'a>(
    state: &AppState,
    user_id: &str,
    convs: impl Iterator<Item = &'a String>,
) -> Result<(), ServiceError> {
    let wanted: BTreeSet<&String> = convs.collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let list: Vec<&String> = wanted.iter().copied().collect();
    let found = state.store.convs_among(user_id, &list).await?;
    match wanted.into_iter().find(|c| !found.contains(*c)) {
        Some(missing) => Err(not_member(missing)),
        None => Ok(()),
    }
}

/// `not_found` for the first of `user_ids` that names no user.
pub async fn require_users_exist(
    state: &AppState,
    user_ids: &[String],
) -> Result<(), ServiceError> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let found = state.store.existing_users(user_ids).await?;
    match user_ids.iter().find(|u| !found.contains(*u)) {
        Some(missing) => Err(ServiceError::refused(
            ErrorCode::NotFound,
            format!("user {missing} not found"),
        )),
        None => Ok(()),
    }
}

pub(super) fn not_member(conv: &str) -> ServiceError {
    ServiceError::refused(ErrorCode::NotMember, format!("not a member of {conv}"))
}
