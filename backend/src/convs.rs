//! Conversations: opening a direct one, creating a group, and the
//! membership checks every conv operation starts with.

use std::collections::BTreeSet;

use futures::TryStreamExt as _;
use mongodb::bson::{doc, DateTime};
use serde::Deserialize;

use oceanchat_protocol::client::{DmOpenResult, GroupCreateResult};
use oceanchat_protocol::conv::{dm_conv, group_conv};
use oceanchat_protocol::ErrorCode;

use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::{is_duplicate_key, new_id, GroupDoc, MemberDoc};

/// Longest group name, in characters.
const MAX_GROUP_NAME_CHARS: usize = 100;

/// The member document of `user_id` in `conv`, or `not_member`. A conv
/// that does not exist has no members, so it gives `not_member` too.
pub async fn require_member(
    state: &AppState,
    user_id: &str,
    conv: &str,
) -> Result<MemberDoc, ServiceError> {
    state
        .store
        .members
        .find_one(doc! {"conv": conv, "user_id": user_id})
        .await?
        .ok_or_else(|| not_member(conv))
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
    let found: BTreeSet<String> = state
        .store
        .members
        .clone_with_type::<ConvOnly>()
        .find(doc! {"user_id": user_id, "conv": {"$in": list}})
        .projection(doc! {"conv": 1, "_id": 0})
        .await?
        .map_ok(|m| m.conv)
        .try_collect()
        .await?;
    match wanted.into_iter().find(|c| !found.contains(*c)) {
        Some(missing) => Err(not_member(missing)),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
struct ConvOnly {
    conv: String,
}

#[derive(Deserialize)]
struct IdOnly {
    #[serde(rename = "_id")]
    id: String,
}

fn not_member(conv: &str) -> ServiceError {
    ServiceError::refused(ErrorCode::NotMember, format!("not a member of {conv}"))
}

/// The direct conv between `user_id` and `other`; both become members.
pub async fn dm_open(
    state: &AppState,
    user_id: &str,
    other: &str,
) -> Result<DmOpenResult, ServiceError> {
    if other == user_id {
        return Err(ServiceError::bad_request("cannot open a dm with yourself"));
    }
    let exists = state
        .store
        .users
        .clone_with_type::<IdOnly>()
        .find_one(doc! {"_id": other})
        .projection(doc! {"_id": 1})
        .await?
        .is_some();
    if !exists {
        return Err(ServiceError::refused(
            ErrorCode::NotFound,
            format!("user {other} not found"),
        ));
    }
    let conv = dm_conv(user_id, other);
    for member in [user_id, other] {
        add_member_if_absent(state, &conv, member).await?;
    }
    Ok(DmOpenResult { conv })
}

/// Makes `user_id` a plain member of `conv` unless it already is one.
async fn add_member_if_absent(
    state: &AppState,
    conv: &str,
    user_id: &str,
) -> Result<(), ServiceError> {
    let fresh = MemberDoc::new(conv, user_id, "member");
    let result = state
        .store
        .members
        .update_one(
            doc! {"conv": conv, "user_id": user_id},
            doc! {"$setOnInsert": {
                "role": &fresh.role,
                "muted": fresh.muted,
                "read_seq": fresh.read_seq,
                "joined_at": fresh.joined_at,
            }},
        )
        .upsert(true)
        .await;
    match result {
        Ok(_) => Ok(()),
        // Two concurrent upserts of the same member: the other one
        // inserted it, which is all we wanted.
        Err(e) if is_duplicate_key(&e) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Creates a group owned by `owner` with `members` (who must exist).
pub async fn group_create(
    state: &AppState,
    owner: &str,
    name: &str,
    members: &[String],
) -> Result<GroupCreateResult, ServiceError> {
    let name_chars = name.chars().count();
    if !(1..=MAX_GROUP_NAME_CHARS).contains(&name_chars) {
        return Err(ServiceError::bad_request(format!(
            "name must be 1 to {MAX_GROUP_NAME_CHARS} characters"
        )));
    }
    let others = other_members(owner, members);
    if !others.is_empty() {
        let found: BTreeSet<String> = state
            .store
            .users
            .clone_with_type::<IdOnly>()
            .find(doc! {"_id": {"$in": &others}})
            .projection(doc! {"_id": 1})
            .await?
            .map_ok(|u| u.id)
            .try_collect()
            .await?;
        if let Some(missing) = others.iter().find(|id| !found.contains(*id)) {
            return Err(ServiceError::refused(
                ErrorCode::NotFound,
                format!("user {missing} not found"),
            ));
        }
    }

    let group_id = new_id();
    let conv = group_conv(&group_id);
    let group = GroupDoc {
        id: group_id.clone(),
        name: name.to_string(),
        announcement: String::new(),
        join_policy: "open".into(),
        owner: owner.to_string(),
        version: 1,
        created_at: DateTime::now(),
    };
    state.store.groups.insert_one(&group).await?;
    let docs = std::iter::once(MemberDoc::new(&conv, owner, "owner"))
        .chain(others.iter().map(|id| MemberDoc::new(&conv, id, "member")));
    state.store.members.insert_many(docs).await?;
    tracing::info!(group_id, owner, members = others.len() + 1, "group created");
    Ok(GroupCreateResult { group_id, conv })
}

/// The members other than the owner, each once, in the order given.
fn other_members(owner: &str, members: &[String]) -> Vec<String> {
    let mut seen = BTreeSet::new();
    members
        .iter()
        .filter(|id| id.as_str() != owner && seen.insert(id.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn other_members_dedupe_and_skip_the_owner() {
        let given: Vec<String> = ["b", "me", "a", "b", "c", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(other_members("me", &given), ["b", "a", "c"]);
        assert!(other_members("me", &["me".to_string()]).is_empty());
    }
}
