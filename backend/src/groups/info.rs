//! What members read of their groups: `group.get`, and the group topics a
//! connection follows from `auth` on.

use oceanchat_protocol::client::{GroupGetResult, GroupInfo, MemberInfo};
use oceanchat_protocol::conv::{group_conv, group_id_of};
use oceanchat_protocol::internal::topics;
use oceanchat_protocol::ErrorCode;

use crate::convs::require_member;
use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::MemberDoc;

/// Members in one `group.get` reply at most. A reply travels as one NATS
/// message (1 MiB by default) and one member takes about 60 bytes of JSON,
/// so 5,000 leave ample room; larger groups are read page by page.
pub const MEMBERS_PAGE_MAX: u32 = 5000;

/// The topics of every group `user_id` is a member of, for the `auth`
/// reply: its connection follows them from the start.
pub async fn group_topics(state: &AppState, user_id: &str) -> Result<Vec<String>, ServiceError> {
    let convs = state.store.convs_of(user_id).await?;
    Ok(convs
        .iter()
        .filter_map(|conv| group_id_of(conv).map(topics::group))
        .collect())
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
    let group = state.store.group(group_id).await?.ok_or_else(|| {
        ServiceError::refused(ErrorCode::NotFound, format!("group {group_id} not found"))
    })?;
    // One more than the page tells whether another page follows.
    let mut members: Vec<MemberInfo> = state
        .store
        .members_page(&conv, members_after, i64::from(limit) + 1)
        .await?
        .into_iter()
        .map(member_info)
        .collect();
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
