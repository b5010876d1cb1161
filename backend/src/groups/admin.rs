//! Group administration: `group.update`, `group.members.*`,
//! `group.transfer`, and `group.leave`, the one change a plain member
//! makes (to itself, without the lock).
//!
//! Every write presents the live token of the lock `group:<id>`
//! ([`crate::locks`]) and is checked twice: in Redis (`lock_required`,
//! `lock_lost`) and in MongoDB, where the write filters on the fencing
//! number the lock wrote onto the group (`lock_fence`). A holder whose
//! lease lapsed while it was paused passes neither once another connection
//! took the lock, so its write changes nothing (docs/concurrency.md).
//!
//! A change is one atomic update of the group document (`$set` of the
//! fields changed, `$inc` of `version`, filtered on the fence) followed, for
//! member changes, by single-document writes of the member documents (one
//! per member, never a whole list). The version bump comes first: it is the
//! fenced step, so a stale holder is stopped before it touches a member.
//! Then a `group` event goes to the group's topic, and the connections of
//! added or removed members start or stop following it.
//!
//! Roles (docs/concurrency.md, "Ranks"): the owner outranks admins, admins
//! outrank members. Removing or muting someone needs a higher rank than
//! theirs. Any admin may promote a member to admin (the seed's co-admin);
//! only the owner demotes admins, and only the owner hands ownership on
//! (`group.transfer`), becoming an admin. Nobody else acts on the owner.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::json;

use oceanchat_protocol::client::{GroupPatch, MembersAddResult, Role, VersionResult};
use oceanchat_protocol::conv::group_conv;
use oceanchat_protocol::internal::topics;
use oceanchat_protocol::ErrorCode;

use super::change::{
    bump_version, forbidden, group_not_found, publish, require_room_in_groups, MAX_NAME_CHARS,
};
use super::invitations;
use crate::convs::{member_changes, require_member, require_users_exist};
use crate::delivery;
use crate::error::ServiceError;
use crate::locks::{self, Resource};
use crate::rpc::Caller;
use crate::state::AppState;
use crate::store::{GroupFields, MemberFlag};
/// Longest announcement, in characters.
const MAX_ANNOUNCEMENT_CHARS: usize = 4000;
/// The join policies a group can have.
pub const JOIN_POLICIES: [&str; 3] = ["open", "approval", "invite"];
/// Most users one `group.members.add` or `.remove` may name.
const MAX_USERS_PER_CHANGE: usize = 1000;

/// `group.update`: name, announcement and join policy, optionally only if
/// the group is still at `expected_version`.
pub async fn update(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    patch: &GroupPatch,
    expected_version: Option<u64>,
) -> Result<VersionResult, ServiceError> {
    let set = patch_fields(patch)?;
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    let version = admin.commit(state, set, expected_version).await?;
    let change = json!({"kind": "updated", "patch": patch});
    publish(state, group_id, version, change).await;
    Ok(VersionResult { version })
}

/// `group.members.add`: every user must exist; users already members keep
/// their role and mute state.
pub async fn members_add(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    user_ids: &[String],
) -> Result<MembersAddResult, ServiceError> {
    let user_ids = distinct_users(user_ids)?;
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    require_users_exist(state, &user_ids).await?;
    let present = admin.members_among(state, &user_ids).await?;
    let absent: Vec<String> = user_ids
        .into_iter()
        .filter(|u| !present.contains_key(u))
        .collect();
    let admission = invitations::admit(state, &admin.user_id, absent).await?;
    let added = admission.added;
    require_room_in_groups(state, &added).await?;

    let version = admin.commit(state, GroupFields::default(), None).await?;
    for user_id in &added {
        state
            .store
            .add_member_if_absent(&admin.conv, user_id)
            .await?;
    }
    member_changes::announce(state, &admin.conv).await;
    tracing::info!(group_id, version, added = added.len(), "members added");
    let change = json!({"kind": "members_added", "user_ids": &added});
    let frame = publish(state, group_id, version, change).await;
    // The new members' connections follow the group from now on; they get
    // this event directly, since their topic subscription may not be in
    // place yet when it is published.
    let topic = [topics::group(group_id)];
    if let Err(e) = delivery::change_topics(state, &added, &topic, true).await {
        e.log("group topic follow");
    }
    if let Err(e) = delivery::deliver_to_users(state, &added, &frame).await {
        e.log("group event to new members");
    }
    invitations::invite(state, group_id, &admin.user_id, &admission.invited).await?;
    Ok(MembersAddResult {
        version,
        invited: admission.invited,
    })
}

/// `group.members.remove`: users who are not members are skipped.
pub async fn members_remove(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    user_ids: &[String],
) -> Result<VersionResult, ServiceError> {
    let user_ids = distinct_users(user_ids)?;
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    let present = admin.members_among(state, &user_ids).await?;
    for (user_id, role) in &present {
        admin.may_act_on(user_id, *role, "remove")?;
    }
    let removed: Vec<String> = present.into_keys().collect();

    let version = admin.commit(state, GroupFields::default(), None).await?;
    if !removed.is_empty() {
        state.store.remove_members(&admin.conv, &removed).await?;
        member_changes::announce(state, &admin.conv).await;
    }
    tracing::info!(
        group_id,
        version,
        removed = removed.len(),
        "members removed"
    );
    // The removed members still follow the topic: they see their removal,
    // then stop following.
    let change = json!({"kind": "members_removed", "user_ids": &removed});
    publish(state, group_id, version, change).await;
    let topic = [topics::group(group_id)];
    if let Err(e) = delivery::change_topics(state, &removed, &topic, false).await {
        e.log("group topic unfollow");
    }
    Ok(VersionResult { version })
}

/// `group.members.set_role`: admin or member. Admins and the owner
/// promote members to admin; only the owner demotes an admin.
pub async fn members_set_role(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    user_id: &str,
    role: Role,
) -> Result<VersionResult, ServiceError> {
    if role == Role::Owner {
        return Err(ServiceError::bad_request(
            "a group has one owner; the owner hands it on with group.transfer",
        ));
    }
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    let current = admin.member_role(state, user_id).await?;
    may_set_role(admin.role, current, role)?;

    let version = admin.commit(state, GroupFields::default(), None).await?;
    state
        .store
        .set_member_role(&admin.conv, user_id, role)
        .await?;
    tracing::info!(group_id, version, user_id, role = role.as_str(), "role set");
    let change = json!({"kind": "role_set", "user_id": user_id, "role": role});
    publish(state, group_id, version, change).await;
    Ok(VersionResult { version })
}

/// `group.transfer`: the owner makes another member the owner and becomes
/// an admin.
pub async fn transfer(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    user_id: &str,
) -> Result<VersionResult, ServiceError> {
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    if admin.role != Role::Owner {
        return Err(forbidden("only the owner hands on ownership"));
    }
    if admin.user_id == user_id {
        return Err(ServiceError::bad_request("you are the owner already"));
    }
    admin.member_role(state, user_id).await?;

    // The group document names the owner; the member documents follow it.
    // A backend that dies between these writes leaves the caller still
    // recorded as owner in its member document, so repeating the request
    // is allowed and completes the change (every write is a `$set`).
    let version = admin
        .commit(state, GroupFields::owner(user_id), None)
        .await?;
    state
        .store
        .set_member_role(&admin.conv, user_id, Role::Owner)
        .await?;
    state
        .store
        .set_member_role(&admin.conv, &admin.user_id, Role::Admin)
        .await?;
    tracing::info!(group_id, version, from = %admin.user_id, to = user_id, "ownership transferred");
    let change = json!({"kind": "transferred", "from": &admin.user_id, "to": user_id});
    publish(state, group_id, version, change).await;
    Ok(VersionResult { version })
}

/// `group.leave`: the asking member leaves. No lock is needed, since one
/// changes only one's own membership; the owner hands the group on first.
pub async fn leave(
    state: &AppState,
    user_id: &str,
    group_id: &str,
) -> Result<VersionResult, ServiceError> {
    if !topics::valid_id(group_id) {
        return Err(ServiceError::bad_request("malformed group_id"));
    }
    let conv = group_conv(group_id);
    let member = require_member(state, user_id, &conv).await?;
    if member.role == Role::Owner {
        return Err(ServiceError::bad_request(
            "the owner cannot leave; hand the group on with group.transfer first",
        ));
    }
    let version = bump_version(state, group_id).await?;
    state
        .store
        .remove_members(&conv, std::slice::from_ref(&user_id.to_string()))
        .await?;
    member_changes::announce(state, &conv).await;
    tracing::info!(group_id, version, user_id, "member left");
    let left = [user_id.to_string()];
    let change = json!({"kind": "members_removed", "user_ids": &left, "left": true});
    publish(state, group_id, version, change).await;
    if let Err(e) = delivery::change_topics(state, &left, &[topics::group(group_id)], false).await {
        e.log("group topic unfollow");
    }
    Ok(VersionResult { version })
}

/// `group.members.mute`: a muted member cannot send (`muted`).
pub async fn members_mute(
    state: &AppState,
    caller: &Caller,
    group_id: &str,
    lock_token: &str,
    user_id: &str,
    muted: bool,
) -> Result<VersionResult, ServiceError> {
    let admin = Admin::check(state, caller, group_id, lock_token).await?;
    let current = admin.member_role(state, user_id).await?;
    admin.may_act_on(user_id, current, "mute")?;

    let version = admin.commit(state, GroupFields::default(), None).await?;
    state
        .store
        .set_member_flag(&admin.conv, user_id, MemberFlag::Muted, muted)
        .await?;
    member_changes::announce(state, &admin.conv).await;
    tracing::info!(group_id, version, user_id, muted, "mute set");
    let change = json!({"kind": "muted", "user_id": user_id, "muted": muted});
    publish(state, group_id, version, change).await;
    Ok(VersionResult { version })
}

/// The writer of one change: a member allowed to administer the group,
/// holding its lock with the fencing number `fence`.
struct Admin {
    group_id: String,
    conv: String,
    user_id: String,
    role: Role,
    fence: i64,
}

impl Admin {
    /// Checks the lock token (in Redis) and the writer's role.
    async fn check(
        state: &AppState,
        caller: &Caller,
        group_id: &str,
        lock_token: &str,
    ) -> Result<Admin, ServiceError> {
        let user_id = caller.user_id.clone();
        if !topics::valid_id(group_id) {
            return Err(ServiceError::bad_request("malformed group_id"));
        }
        let resource = Resource::group(group_id);
        let fence = locks::live_fence(state, caller, &resource, lock_token).await?;
        let conv = group_conv(group_id);
        let member = require_member(state, &user_id, &conv).await?;
        let role = member.role;
        if role == Role::Member {
            return Err(forbidden("only the owner and admins may edit the group"));
        }
        Ok(Admin {
            group_id: group_id.to_string(),
            conv,
            user_id,
            role,
            fence,
        })
    }

    /// The fenced step of every change: `$set` of `set` and `version + 1`
    /// on the group document, only while its `lock_fence` is ours (and its
    /// version `expected_version`, if given). Returns the new version.
    async fn commit(
        &self,
        state: &AppState,
        set: GroupFields,
        expected_version: Option<u64>,
    ) -> Result<u64, ServiceError> {
        let committed = state
            .store
            .commit_fenced(&self.group_id, self.fence, &set, expected_version)
            .await?;
        if let Some(version) = committed {
            return Ok(version);
        }
        // Nothing matched: say why.
        let found = state.store.fenced(&self.group_id).await?;
        match found {
            None => Err(group_not_found(&self.group_id)),
            Some(group) if group.lock_fence != Some(self.fence) => {
                tracing::info!(
                    group_id = %self.group_id,
                    user_id = %self.user_id,
                    fence = self.fence,
                    current = ?group.lock_fence,
                    "write of a superseded lock holder refused"
                );
                Err(locks::lock_lost(&Resource::group(&self.group_id)))
            }
            Some(group) => Err(ServiceError::refused(
                ErrorCode::VersionConflict,
                format!(
                    "the group is at version {}, not {}",
                    group.version,
                    expected_version.unwrap_or_default()
                ),
            )),
        }
    }

    /// The members among `user_ids`, with their roles.
    async fn members_among(
        &self,
        state: &AppState,
        user_ids: &[String],
    ) -> Result<BTreeMap<String, Role>, ServiceError> {
        Ok(state.store.roles_among(&self.conv, user_ids).await?)
    }

    /// The role of a member; `not_member` if `user_id` is not one.
    async fn member_role(&self, state: &AppState, user_id: &str) -> Result<Role, ServiceError> {
        let member = require_member(state, user_id, &self.conv).await?;
        Ok(member.role)
    }

    /// Removing or muting a member needs a higher rank than theirs.
    fn may_act_on(&self, user_id: &str, role: Role, what: &str) -> Result<(), ServiceError> {
        if rank(self.role) > rank(role) {
            Ok(())
        } else {
            Err(forbidden(format!(
                "a {} cannot {what} {user_id}, who is {}",
                self.role.as_str(),
                role.as_str()
            )))
        }
    }
}

/// The fields a patch sets, validated.
fn patch_fields(patch: &GroupPatch) -> Result<GroupFields, ServiceError> {
    let mut set = GroupFields::default();
    if let Some(name) = &patch.name {
        if !(1..=MAX_NAME_CHARS).contains(&name.chars().count()) {
            return Err(ServiceError::bad_request(format!(
                "name must be 1 to {MAX_NAME_CHARS} characters"
            )));
        }
        set.name = Some(name.clone());
    }
    if let Some(announcement) = &patch.announcement {
        if announcement.chars().count() > MAX_ANNOUNCEMENT_CHARS {
            return Err(ServiceError::bad_request(format!(
                "announcement must be at most {MAX_ANNOUNCEMENT_CHARS} characters"
            )));
        }
        set.announcement = Some(announcement.clone());
    }
    if let Some(policy) = &patch.join_policy {
        if !JOIN_POLICIES.contains(&policy.as_str()) {
            return Err(ServiceError::bad_request(format!(
                "join_policy must be one of {JOIN_POLICIES:?}"
            )));
        }
        set.join_policy = Some(policy.clone());
    }
    if set.is_empty() {
        return Err(ServiceError::bad_request("the patch changes nothing"));
    }
    Ok(set)
}

/// The users named, each once, in order; at least one, not too many.
fn distinct_users(user_ids: &[String]) -> Result<Vec<String>, ServiceError> {
    if user_ids.is_empty() || user_ids.len() > MAX_USERS_PER_CHANGE {
        return Err(ServiceError::bad_request(format!(
            "user_ids must name 1 to {MAX_USERS_PER_CHANGE} users"
        )));
    }
    let mut seen = BTreeSet::new();
    Ok(user_ids
        .iter()
        .filter(|u| seen.insert(u.as_str()))
        .cloned()
        .collect())
}

/// Who may give `target` a role of `to` when they hold `current` now: a
/// member becomes an admin by any admin's hand; an admin becomes a member
/// only by the owner's; the owner's role changes only by `group.transfer`.
fn may_set_role(actor: Role, current: Role, to: Role) -> Result<(), ServiceError> {
    match (current, to) {
        (Role::Owner, _) => Err(forbidden("the owner's role changes only by group.transfer")),
        (Role::Admin, Role::Member) if actor != Role::Owner => {
            Err(forbidden("only the owner demotes admins"))
        }
        _ => Ok(()),
    }
}

fn rank(role: Role) -> u8 {
    match role {
        Role::Owner => 2,
        Role::Admin => 1,
        Role::Member => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_are_validated() {
        assert!(patch_fields(&GroupPatch::default()).is_err());
        let long = GroupPatch {
            name: Some("x".repeat(MAX_NAME_CHARS + 1)),
            ..GroupPatch::default()
        };
        assert!(patch_fields(&long).is_err());
        let policy = GroupPatch {
            join_policy: Some("anyone".into()),
            ..GroupPatch::default()
        };
        assert!(patch_fields(&policy).is_err());
        let ok = GroupPatch {
            name: Some("club".into()),
            announcement: Some(String::new()),
            join_policy: Some("approval".into()),
        };
        let set = patch_fields(&ok).unwrap();
        assert_eq!(set.name.as_deref(), Some("club"));
        assert_eq!(set.announcement.as_deref(), Some(""));
        assert_eq!(set.join_policy.as_deref(), Some("approval"));
    }

    #[test]
    fn user_lists_are_deduplicated_and_bounded() {
        let ids: Vec<String> = ["b", "a", "b"].iter().map(|s| s.to_string()).collect();
        assert_eq!(distinct_users(&ids).unwrap(), ["b", "a"]);
        assert!(distinct_users(&[]).is_err());
        let many = vec!["u".to_string(); MAX_USERS_PER_CHANGE + 1];
        assert!(distinct_users(&many).is_err());
    }

    #[test]
    fn admins_promote_and_only_the_owner_demotes() {
        use Role::*;
        assert!(may_set_role(Admin, Member, Admin).is_ok(), "co-admin");
        assert!(may_set_role(Owner, Member, Admin).is_ok());
        assert!(may_set_role(Owner, Admin, Member).is_ok());
        assert!(may_set_role(Admin, Admin, Member).is_err());
        assert!(may_set_role(Admin, Admin, Admin).is_ok(), "a no-op");
        assert!(may_set_role(Owner, Owner, Admin).is_err());
        assert!(may_set_role(Admin, Owner, Member).is_err());
    }

    #[test]
    fn ranks_order_roles() {
        assert!(rank(Role::Owner) > rank(Role::Admin));
        assert!(rank(Role::Admin) > rank(Role::Member));
        // Filters name roles by `as_str`; documents store them by serde.
        for role in [Role::Owner, Role::Admin, Role::Member] {
            let stored = mongodb::bson::to_bson(&role).unwrap();
            assert_eq!(stored, mongodb::bson::Bson::String(role.as_str().into()));
        }
    }
}
