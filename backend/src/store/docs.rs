//! The documents of each collection.

use mongodb::bson::DateTime;
use oceanchat_protocol::client::{GroupsFrom, Invitation, Message, Role};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub username: String,
    pub password_hash: String,
    pub display_name: String,
    pub created_at: DateTime,
    /// Who may put this user in a group without an invitation.
    #[serde(default)]
    pub groups_from: GroupsFrom,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub name: String,
    pub announcement: String,
    pub join_policy: String,
    pub owner: String,
    pub version: i64,
    pub created_at: DateTime,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDoc {
    pub conv: String,
    pub user_id: String,
    /// Stored as `owner`, `admin` or `member`.
    pub role: Role,
    pub muted: bool,
    pub read_seq: i64,
    pub joined_at: DateTime,
    /// The member muted offline pushes of this conv (`conv.mute`).
    #[serde(default)]
    pub push_muted: bool,
}

impl MemberDoc {
    pub fn new(conv: &str, user_id: &str, role: Role) -> Self {
        MemberDoc {
            conv: conv.to_string(),
            user_id: user_id.to_string(),
            role,
            muted: false,
            read_seq: 0,
            joined_at: DateTime::now(),
            push_muted: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDoc {
    pub conv: String,
    pub seq: i64,
    pub msg_id: String,
    pub from: String,
    /// Milliseconds since the epoch.
    pub ts: i64,
    pub body: String,
    pub client_msg_id: String,
    /// The body was moved to `messages_archive` (the worker's archiver);
    /// this document keeps the rest, so the unique indexes still guard
    /// seq and `client_msg_id`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub archived: bool,
}

impl From<MessageDoc> for Message {
    fn from(m: MessageDoc) -> Self {
        Message {
            conv: m.conv,
            seq: m.seq as u64,
            msg_id: m.msg_id,
            from: m.from,
            ts: m.ts as u64,
            body: m.body,
            client_msg_id: m.client_msg_id,
        }
    }
}

/// One pending invitation, in the `invitations` collection (unique on
/// group and user).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvitationDoc {
    pub group_id: String,
    pub user_id: String,
    pub name: String,
    pub inviter: String,
    pub at: DateTime,
}

impl From<InvitationDoc> for Invitation {
    fn from(doc: InvitationDoc) -> Self {
        Invitation {
            group_id: doc.group_id,
            name: doc.name,
            inviter: doc.inviter,
            at: doc.at.timestamp_millis().max(0) as u64,
        }
    }
}
