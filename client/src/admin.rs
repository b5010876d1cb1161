//! The edit-lock and group administration ops of PROTOCOL.md (and
//! docs/protocol.md's invitations) as typed methods of [`Connection`].
//!
//! Each sends its [`Op`] through [`Connection::request_as`] and decodes
//! the result type of `oceanchat_protocol::client`; a refusal is
//! [`ClientError::Server`] with the server's error, as for every request.
//! The group writes that only answer `version` return it as a `u64`.

use oceanchat_protocol::client::{
    Empty, GroupGetResult, GroupJoinResult, GroupPatch, Invitation, InvitationsResult,
    LockAcquired, LockHolder, LockRenewed, LockWatchResult, MembersAddResult, Op, Role,
    VersionResult,
};

use crate::ws::{ClientError, Connection};

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

impl Connection {
    /// `lock.acquire`. Refused with `locked` while another connection
    /// holds it: [`ClientError::lock_holder`] names the holder.
    pub async fn lock_acquire(&self, resource: &str) -> Result<LockAcquired, ClientError> {
        self.request_as(Op::LockAcquire {
            resource: resource.to_string(),
        })
        .await
    }

    /// `lock.renew` with the token `lock.acquire` gave.
    pub async fn lock_renew(
        &self,
        resource: &str,
        token: &str,
    ) -> Result<LockRenewed, ClientError> {
        self.request_as(Op::LockRenew {
            resource: resource.to_string(),
            token: token.to_string(),
        })
        .await
    }

    /// `lock.release`.
    pub async fn lock_release(&self, resource: &str, token: &str) -> Result<(), ClientError> {
        self.request_as::<Empty>(Op::LockRelease {
            resource: resource.to_string(),
            token: token.to_string(),
        })
        .await
        .map(drop)
    }

    /// `lock.watch`: the holder now (`None` when free); `lock` events
    /// follow on every change.
    pub async fn lock_watch(&self, resource: &str) -> Result<Option<LockHolder>, ClientError> {
        let result: LockWatchResult = self
            .request_as(Op::LockWatch {
                resource: resource.to_string(),
            })
            .await?;
        Ok(result.holder)
    }

    /// `group.get`: the group and the first page of its members.
    pub async fn group_get(&self, group_id: &str) -> Result<GroupGetResult, ClientError> {
        self.group_get_page(group_id, None, None).await
    }

    /// `group.get` for the members after `members_after` (the previous
    /// page's `members_next`), at most `members_limit` of them.
    pub async fn group_get_page(
        &self,
        group_id: &str,
        members_after: Option<&str>,
        members_limit: Option<u32>,
    ) -> Result<GroupGetResult, ClientError> {
        self.request_as(Op::GroupGet {
            group_id: group_id.to_string(),
            members_after: members_after.map(str::to_string),
            members_limit,
        })
        .await
    }

    /// `group.update` under the group's lock; the new version.
    pub async fn group_update(
        &self,
        group_id: &str,
        lock_token: &str,
        patch: GroupPatch,
        expected_version: Option<u64>,
    ) -> Result<u64, ClientError> {
        self.version_of(Op::GroupUpdate {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            patch,
            expected_version,
        })
        .await
    }

    /// `group.members.add`: the new version and who was invited instead.
    pub async fn group_members_add(
        &self,
        group_id: &str,
        lock_token: &str,
        user_ids: &[&str],
    ) -> Result<MembersAddResult, ClientError> {
        self.request_as(Op::GroupMembersAdd {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            user_ids: strings(user_ids),
        })
        .await
    }

    /// `group.members.remove`; the new version.
    pub async fn group_members_remove(
        &self,
        group_id: &str,
        lock_token: &str,
        user_ids: &[&str],
    ) -> Result<u64, ClientError> {
        self.version_of(Op::GroupMembersRemove {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            user_ids: strings(user_ids),
        })
        .await
    }

    /// `group.members.set_role`; the new version.
    pub async fn group_members_set_role(
        &self,
        group_id: &str,
        lock_token: &str,
        user_id: &str,
        role: Role,
    ) -> Result<u64, ClientError> {
        self.version_of(Op::GroupMembersSetRole {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            user_id: user_id.to_string(),
            role,
        })
        .await
    }

    /// `group.members.mute`; the new version.
    pub async fn group_members_mute(
        &self,
        group_id: &str,
        lock_token: &str,
        user_id: &str,
        muted: bool,
    ) -> Result<u64, ClientError> {
        self.version_of(Op::GroupMembersMute {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            user_id: user_id.to_string(),
            muted,
        })
        .await
    }

    /// `group.transfer` of ownership to `user_id`; the new version.
    pub async fn group_transfer(
        &self,
        group_id: &str,
        lock_token: &str,
        user_id: &str,
    ) -> Result<u64, ClientError> {
        self.version_of(Op::GroupTransfer {
            group_id: group_id.to_string(),
            lock_token: lock_token.to_string(),
            user_id: user_id.to_string(),
        })
        .await
    }

    /// `group.leave` (no lock needed); the new version.
    pub async fn group_leave(&self, group_id: &str) -> Result<u64, ClientError> {
        self.version_of(Op::GroupLeave {
            group_id: group_id.to_string(),
        })
        .await
    }

    /// `group.invitations`: this user's pending invitations, newest first.
    pub async fn group_invitations(&self) -> Result<Vec<Invitation>, ClientError> {
        let result: InvitationsResult = self.request_as(Op::GroupInvitations {}).await?;
        Ok(result.invitations)
    }

    /// `group.join`: accepts an invitation.
    pub async fn group_join(&self, group_id: &str) -> Result<GroupJoinResult, ClientError> {
        self.request_as(Op::GroupJoin {
            group_id: group_id.to_string(),
        })
        .await
    }

    /// `group.decline`: turns an invitation down.
    pub async fn group_decline(&self, group_id: &str) -> Result<(), ClientError> {
        self.request_as::<Empty>(Op::GroupDecline {
            group_id: group_id.to_string(),
        })
        .await
        .map(drop)
    }

    async fn version_of(&self, op: Op) -> Result<u64, ClientError> {
        let result: VersionResult = self.request_as(op).await?;
        Ok(result.version)
    }
}

impl ClientError {
    /// The holder a `locked` refusal names (PROTOCOL.md's `error.holder`);
    /// `None` for any other error, or a `locked` without a readable holder.
    pub fn lock_holder(&self) -> Option<LockHolder> {
        let error = self.server_error()?;
        if error.code != oceanchat_protocol::ErrorCode::Locked {
            return None;
        }
        serde_json::from_value(error.details.get("holder")?.clone()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oceanchat_protocol::client::ErrorBody;
    use oceanchat_protocol::ErrorCode;
    use serde_json::json;

    fn refusal(code: ErrorCode, details: serde_json::Value) -> ClientError {
        let mut error = ErrorBody::new(code, "m");
        if let serde_json::Value::Object(fields) = details {
            error.details = fields;
        }
        ClientError::Server {
            op: "lock.acquire",
            error,
        }
    }

    #[test]
    fn a_locked_refusal_names_its_holder() {
        let holder = json!({"user_id": "u", "display_name": "U", "session_id": "s", "since": 5});
        let locked = refusal(ErrorCode::Locked, json!({ "holder": holder }));
        assert_eq!(
            locked.lock_holder(),
            Some(LockHolder {
                user_id: "u".into(),
                display_name: "U".into(),
                session_id: "s".into(),
                since: 5,
            })
        );
        assert_eq!(refusal(ErrorCode::Locked, json!({})).lock_holder(), None);
        let other = refusal(ErrorCode::Forbidden, json!({ "holder": holder }));
        assert_eq!(other.lock_holder(), None);
    }
}
