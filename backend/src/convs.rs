//! Conversations: opening a direct one, creating and reading a group,
//! listing a user's convs, `read` and `typing`, and the membership checks
//! every conv operation starts with.
//!
//! Membership is one small document per member (docs/internals.md), so a
//! join or leave of a 100,000-member group is one write; group delivery
//! goes through the group's topic (see [`crate::delivery`]), which the
//! connections of members follow: [`group_topics`] names them at `auth`,
//! and membership changes call [`crate::delivery::change_topics`].

use std::collections::BTreeSet;

use futures::{StreamExt as _, TryStreamExt as _};
use mongodb::bson::{doc, DateTime};
use serde::Deserialize;

use oceanchat_protocol::client::{
    ConvListResult, ConvSummary, DmOpenResult, Event, GroupCreateResult, GroupGetResult, GroupInfo,
    MemberInfo, Role,
};
use oceanchat_protocol::conv::{conv_kind, dm_conv, dm_users_of, group_conv, group_id_of};
use oceanchat_protocol::internal::{topics, ConnRef, RpcContext};
use oceanchat_protocol::ErrorCode;

use crate::delivery;
use crate::error::ServiceError;
use crate::messages::max_seq;
use crate::state::AppState;
use crate::store::{is_duplicate_key, new_id, GroupDoc, MemberDoc};

/// Longest group name, in characters.
const MAX_GROUP_NAME_CHARS: usize = 100;

/// Most members `group.create` may name besides the creator, as many as
/// one `group.members.add`.
const MAX_GROUP_CREATE_MEMBERS: usize = 1000;

/// Members in one `group.get` reply at most. A reply travels as one NATS
/// message (1 MiB by default) and one member takes about 60 bytes of JSON,
/// so 5,000 leave ample room; larger groups are read page by page.
pub const MEMBERS_PAGE_MAX: u32 = 5000;

/// How many convs of one `conv.list` have their last seq read at once.
const CONV_LIST_PARALLELISM: usize = 16;

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

/// The member document of `user_id` in `conv`: `not_member` as
/// [`require_member`], `muted` for a member who may not speak.
pub async fn require_unmuted_member(
    state: &AppState,
    user_id: &str,
    conv: &str,
) -> Result<MemberDoc, ServiceError> {
    let member = require_member(state, user_id, conv).await?;
    if member.muted {
        return Err(ServiceError::refused(
            ErrorCode::Muted,
            "you are muted in this conv",
        ));
    }
    Ok(member)
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

/// Makes `user_id` a plain member of `conv` unless it already is one (an
/// upsert: a retried or repeated add never makes a second document).
pub(crate) async fn add_member_if_absent(
    state: &AppState,
    conv: &str,
    user_id: &str,
) -> Result<(), ServiceError> {
    let fresh = MemberDoc::new(conv, user_id, Role::Member);
    let result = state
        .store
        .members
        .update_one(
            doc! {"conv": conv, "user_id": user_id},
            doc! {"$setOnInsert": {
                "role": fresh.role.as_str(),
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
    if others.len() > MAX_GROUP_CREATE_MEMBERS {
        return Err(ServiceError::bad_request(format!(
            "group.create names at most {MAX_GROUP_CREATE_MEMBERS} members; add more with group.members.add"
        )));
    }
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

    let admission = crate::invitations::admit(state, owner, others).await?;
    let others = admission.added;
    let mut joining = others.clone();
    joining.push(owner.to_string());
    crate::groups::require_room_in_groups(state, &joining).await?;

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
    let docs = std::iter::once(MemberDoc::new(&conv, owner, Role::Owner)).chain(
        others
            .iter()
            .map(|id| MemberDoc::new(&conv, id, Role::Member)),
    );
    state.store.members.insert_many(docs).await?;
    tracing::info!(group_id, owner, members = others.len() + 1, "group created");
    // Online members' connections follow the group from now on (the
    // creator's asking connection is subscribed by the reply itself).
    let mut everyone = others;
    everyone.push(owner.to_string());
    if let Err(error) =
        delivery::change_topics(state, &everyone, &[topics::group(&group_id)], true).await
    {
        // The group exists; members get its messages after a reconnect.
        error.log("group.create topics");
    }
    crate::invitations::invite(state, &group_id, owner, &admission.invited).await?;
    Ok(GroupCreateResult {
        group_id,
        conv,
        invited: admission.invited,
    })
}

/// The topics of every group `user_id` is a member of, for the `auth`
/// reply: its connection follows them from the start.
pub async fn group_topics(state: &AppState, user_id: &str) -> Result<Vec<String>, ServiceError> {
    Ok(state
        .store
        .members
        .clone_with_type::<ConvOnly>()
        .find(doc! {"user_id": user_id})
        .projection(doc! {"conv": 1, "_id": 0})
        .await?
        .try_filter_map(|m| async move { Ok(group_id_of(&m.conv).map(topics::group)) })
        .try_collect()
        .await?)
}

/// `group.get`: the group and one page of its members, sorted by user id;
/// only for members.
pub async fn group_get(
    state: &AppState,
    user_id: &str,
    group_id: &str,
    members_after: Option<&str>,
    members_limit: Option<u32>,
) -> Result<GroupGetResult, ServiceError> {
    let limit = members_limit.unwrap_or(MEMBERS_PAGE_MAX);
    if !(1..=MEMBERS_PAGE_MAX).contains(&limit) {
        return Err(ServiceError::bad_request(format!(
            "members_limit must be 1 to {MEMBERS_PAGE_MAX}"
        )));
    }
    let conv = group_conv(group_id);
    require_member(state, user_id, &conv).await?;
    let group = state
        .store
        .groups
        .find_one(doc! {"_id": group_id})
        .await?
        .ok_or_else(|| {
            ServiceError::refused(ErrorCode::NotFound, format!("group {group_id} not found"))
        })?;
    let mut filter = doc! {"conv": &conv};
    if let Some(after) = members_after {
        filter.insert("user_id", doc! {"$gt": after});
    }
    // One more than the page tells whether another page follows.
    let mut members: Vec<MemberInfo> = state
        .store
        .members
        .find(filter)
        .sort(doc! {"user_id": 1})
        .limit(i64::from(limit) + 1)
        .await?
        .map(|m| m.map(member_info))
        .try_collect()
        .await?;
    let members_next = if members.len() > limit as usize {
        members.truncate(limit as usize);
        members.last().map(|m| m.user_id.clone())
    } else {
        None
    };
    Ok(GroupGetResult {
        group: GroupInfo {
            name: group.name,
            announcement: group.announcement,
            join_policy: group.join_policy,
            owner: group.owner,
            version: group.version as u64,
        },
        members,
        members_next,
    })
}

fn member_info(m: MemberDoc) -> MemberInfo {
    MemberInfo {
        user_id: m.user_id,
        role: m.role,
        muted: m.muted,
    }
}

/// `conv.list`: every conv of `user_id` with its last seq and the user's
/// read seq.
pub async fn conv_list(state: &AppState, user_id: &str) -> Result<ConvListResult, ServiceError> {
    let memberships: Vec<MemberDoc> = state
        .store
        .members
        .find(doc! {"user_id": user_id})
        .await?
        .try_collect()
        .await?;
    let convs = futures::stream::iter(memberships.into_iter().map(|m| async move {
        let last_seq = max_seq(state, &m.conv).await?;
        let kind = conv_kind(&m.conv).map_or("group", |k| k.as_str());
        let peer = dm_users_of(&m.conv).map(|(a, b)| if a == user_id { b } else { a }.to_string());
        Ok::<_, ServiceError>(ConvSummary {
            kind: kind.to_string(),
            last_seq,
            read_seq: m.read_seq.max(0) as u64,
            group_id: group_id_of(&m.conv).map(str::to_string),
            peer,
            conv: m.conv,
        })
    }))
    .buffered(CONV_LIST_PARALLELISM)
    .try_collect()
    .await?;
    Ok(ConvListResult { convs })
}

/// `read`: raises the user's read seq in `conv` to `seq` (never lowers
/// it) and, if it rose, tells the members' other connections.
pub async fn read(
    state: &AppState,
    ctx: &RpcContext,
    user_id: &str,
    conv: &str,
    seq: u64,
) -> Result<(), ServiceError> {
    require_member(state, user_id, conv).await?;
    let last = max_seq(state, conv).await?;
    if seq > last {
        return Err(ServiceError::bad_request(format!(
            "seq {seq} is beyond the last message ({last}) of {conv}"
        )));
    }
    let seq_i64 = seq as i64;
    // Monotonic: the filter matches only a lower read seq, `$max` would
    // keep the higher one anyway.
    let raised = state
        .store
        .members
        .update_one(
            doc! {"conv": conv, "user_id": user_id, "read_seq": {"$lt": seq_i64}},
            doc! {"$max": {"read_seq": seq_i64}},
        )
        .await?
        .modified_count
        > 0;
    if raised {
        let event = Event::Read {
            conv: conv.to_string(),
            user_id: user_id.to_string(),
            seq,
        };
        delivery::deliver_conv_event(state, conv, Some(asking(ctx)), &event).await?;
    }
    Ok(())
}

/// `typing`: tells the members' other connections; nothing is stored.
pub async fn typing(
    state: &AppState,
    ctx: &RpcContext,
    user_id: &str,
    conv: &str,
) -> Result<(), ServiceError> {
    // A muted member may not speak, so its typing would only be noise
    // fanned out to everyone.
    require_unmuted_member(state, user_id, conv).await?;
    let event = Event::Typing {
        conv: conv.to_string(),
        user_id: user_id.to_string(),
    };
    delivery::deliver_conv_event(state, conv, Some(asking(ctx)), &event).await
}

/// `conv.mute`: the caller's offline pushes of `conv` stop (`muted`) or
/// start again. Live delivery is not affected; the push worker reads it.
pub async fn mute_push(
    state: &AppState,
    user_id: &str,
    conv: &str,
    muted: bool,
) -> Result<(), ServiceError> {
    let updated = state
        .store
        .members
        .update_one(
            doc! {"conv": conv, "user_id": user_id},
            doc! {"$set": {"push_muted": muted}},
        )
        .await?;
    if updated.matched_count == 0 {
        return Err(not_member(conv));
    }
    Ok(())
}

/// The connection a request came from.
fn asking(ctx: &RpcContext) -> ConnRef {
    ConnRef {
        gateway_id: ctx.gateway_id.clone(),
        conn_id: ctx.conn_id,
    }
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
