//! `group.create`: a new group, its owner and the members who consent to
//! be added; the others are invited ([`super::invitations`]).

use std::collections::BTreeSet;

use mongodb::bson::DateTime;

use oceanchat_protocol::client::{GroupCreateResult, Role};
use oceanchat_protocol::conv::group_conv;
use oceanchat_protocol::internal::topics;

use super::change::{require_room_in_groups, MAX_NAME_CHARS};
use super::invitations;
use crate::convs::{member_changes, require_users_exist};
use crate::delivery;
use crate::error::ServiceError;
use crate::state::AppState;
use crate::store::{new_id, GroupDoc, MemberDoc};

/// Most members `group.create` may name besides the creator, as many as
/// one `group.members.add`.
const MAX_GROUP_CREATE_MEMBERS: usize = 1000;

/// Creates a group owned by `owner` with `members` (who must exist).
pub async fn group_create(
    state: &AppState,
    owner: &str,
    name: &str,
    members: &[String],
) -> Result<GroupCreateResult, ServiceError> {
    let name_chars = name.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&name_chars) {
        return Err(ServiceError::bad_request(format!(
            "name must be 1 to {MAX_NAME_CHARS} characters"
        )));
    }
    let others = other_members(owner, members);
    if others.len() > MAX_GROUP_CREATE_MEMBERS {
        return Err(ServiceError::bad_request(format!(
            "group.create names at most {MAX_GROUP_CREATE_MEMBERS} members; add more with group.members.add"
        )));
    }
    require_users_exist(state, &others).await?;

    let admission = invitations::admit(state, owner, others).await?;
    let others = admission.added;
    let mut joining = others.clone();
    joining.push(owner.to_string());
    require_room_in_groups(state, &joining).await?;

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
    state.store.insert_group(&group).await?;
    let docs = std::iter::once(MemberDoc::new(&conv, owner, Role::Owner)).chain(
        others
            .iter()
            .map(|id| MemberDoc::new(&conv, id, Role::Member)),
    );
    let docs = docs.collect();
    state.store.insert_members(docs).await?;
    member_changes::announce(state, &conv).await;
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
    invitations::invite(state, &group_id, owner, &admission.invited).await?;
    Ok(GroupCreateResult {
        group_id,
        conv,
        invited: admission.invited,
    })
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
