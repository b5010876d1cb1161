//! Consent to join groups: each user's `groups_from` setting says who may
//! put them in a group directly (`anyone`, the default; `known`, users
//! they share a direct conversation with; `nobody`). Anyone else's
//! `group.create` or `group.members.add` leaves an invitation instead,
//! announced by an `invitation` event; `group.join` accepts it and
//! `group.decline` turns it down. A user holds at most
//! [`MAX_PENDING_INVITATIONS`]; past that the oldest go, so a flood of
//! invitations cannot crowd out the newest, and none of them costs the
//! user a group (or a topic) until accepted.

use std::collections::BTreeSet;

use mongodb::bson::DateTime;
use serde_json::json;

use oceanchat_protocol::client::{
    encode_event, Event, GroupJoinResult, GroupsFrom, Invitation, InvitationsResult, Settings,
};
use oceanchat_protocol::conv::{dm_conv, group_conv};
use oceanchat_protocol::internal::topics;
use oceanchat_protocol::ErrorCode;

use super::change::{bump_version, publish, require_room_in_groups};
use crate::convs::member_changes;
use crate::delivery;
use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::InvitationDoc;

/// Pending invitations one user may hold; the oldest beyond are dropped.
pub const MAX_PENDING_INVITATIONS: usize = 100;

/// The users `actor` names for a group, split into those who may be added
/// now and those who are to be invited.
#[derive(Debug, Default, PartialEq)]
pub struct Admission {
    pub added: Vec<String>,
    pub invited: Vec<String>,
}

/// Splits `user_ids` (who must exist) by their `groups_from` setting.
pub async fn admit(
    state: &AppState,
    actor: &str,
    user_ids: Vec<String>,
) -> Result<Admission, ServiceError> {
    if user_ids.is_empty() {
        return Ok(Admission::default());
    }
    let settings = state.store.groups_from_of(&user_ids).await?;
    let asks_known: Vec<&String> = user_ids
        .iter()
        .filter(|u| settings.get(*u) == Some(&GroupsFrom::Known))
        .collect();
    let known = known_to(state, actor, &asks_known).await?;
    let mut admission = Admission::default();
    for user_id in user_ids {
        let direct = match settings.get(&user_id).copied().unwrap_or_default() {
            GroupsFrom::Anyone => true,
            GroupsFrom::Known => known.contains(&user_id),
            GroupsFrom::Nobody => false,
        };
        if direct {
            admission.added.push(user_id);
        } else {
            admission.invited.push(user_id);
        }
    }
    Ok(admission)
}

/// Those of `user_ids` who share a direct conversation with `actor`.
async fn known_to(
    state: &AppState,
    actor: &str,
    user_ids: &[&String],
) -> Result<BTreeSet<String>, ServiceError> {
    if user_ids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let convs: Vec<String> = user_ids.iter().map(|u| dm_conv(actor, u)).collect();
    Ok(state.store.members_of_any(&convs, user_ids).await?)
}

/// Leaves an invitation to group `group_id` from `inviter` for each of
/// `user_ids`, and tells their connections.
pub async fn invite(
    state: &AppState,
    group_id: &str,
    inviter: &str,
    user_ids: &[String],
) -> Result<(), ServiceError> {
    if user_ids.is_empty() {
        return Ok(());
    }
    let name = state.store.group_name(group_id).await?.unwrap_or_default();
    for user_id in user_ids {
        let invitation = InvitationDoc {
            group_id: group_id.to_string(),
            user_id: user_id.clone(),
            name: name.clone(),
            inviter: inviter.to_string(),
            at: DateTime::now(),
        };
        state.store.upsert_invitation(&invitation).await?;
        state
            .store
            .drop_invitations_beyond(user_id, MAX_PENDING_INVITATIONS as u64)
            .await?;
        let frame = encode_event(&Event::Invitation(invitation.into()));
        if let Err(error) =
            delivery::deliver_to_users(state, std::slice::from_ref(user_id), &frame).await
        {
            // Stored: `group.invitations` lists it.
            error.log("invitation event");
        }
    }
    tracing::info!(
        group_id,
        inviter,
        invited = user_ids.len(),
        "invitations left"
    );
    Ok(())
}

/// `group.invitations`: the asking user's, newest first.
pub async fn list(state: &AppState, user_id: &str) -> Result<InvitationsResult, ServiceError> {
    let invitations = state
        .store
        .invitations_of(user_id)
        .await?
        .into_iter()
        .map(Invitation::from)
        .collect();
    Ok(InvitationsResult { invitations })
}

/// `group.join`: accepts an invitation; the user becomes a member.
pub async fn join(
    state: &AppState,
    user_id: &str,
    group_id: &str,
) -> Result<GroupJoinResult, ServiceError> {
    if !topics::valid_id(group_id) {
        return Err(ServiceError::bad_request("malformed group_id"));
    }
    if state.store.invitation(group_id, user_id).await?.is_none() {
        return Err(ServiceError::refused(
            ErrorCode::NotFound,
            format!("no invitation to group {group_id}"),
        ));
    }
    let me = [user_id.to_string()];
    require_room_in_groups(state, &me).await?;
    let conv = group_conv(group_id);
    let version = bump_version(state, group_id).await?;
    state.store.add_member_if_absent(&conv, user_id).await?;
    member_changes::announce(state, &conv).await;
    state.store.delete_invitation(group_id, user_id).await?;
    tracing::info!(group_id, version, user_id, "invitation accepted");
    let change = json!({"kind": "members_added", "user_ids": &me, "joined": true});
    let frame = publish(state, group_id, version, change).await;
    if let Err(e) = delivery::change_topics(state, &me, &[topics::group(group_id)], true).await {
        e.log("group topic follow");
    }
    if let Err(e) = delivery::deliver_to_users(state, &me, &frame).await {
        e.log("group event to the new member");
    }
    Ok(GroupJoinResult {
        group_id: group_id.to_string(),
        conv,
        version,
    })
}

/// `group.decline`: removes the invitation, if there is one.
pub async fn decline(state: &AppState, user_id: &str, group_id: &str) -> Result<(), ServiceError> {
    state.store.delete_invitation(group_id, user_id).await?;
    Ok(())
}

/// `settings.get`.
pub async fn settings(state: &AppState, user_id: &str) -> Result<Settings, ServiceError> {
    state
        .store
        .settings(user_id)
        .await?
        .ok_or_else(|| ServiceError::refused(ErrorCode::NotFound, "user not found"))
}

/// `settings.update`: sets what is given, returns the settings now.
pub async fn update_settings(
    state: &AppState,
    user_id: &str,
    groups_from: Option<GroupsFrom>,
) -> Result<Settings, ServiceError> {
    if let Some(groups_from) = groups_from {
        state.store.set_groups_from(user_id, groups_from).await?;
    }
    settings(state, user_id).await
}
