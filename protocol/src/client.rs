//! The WebSocket client protocol (PROTOCOL.md section 2).
//!
//! A request frame is `{"id": u64, "op": "...", ...args}`; [`decode_request`]
//! turns it into a typed [`Request`]. Replies are `{"id", "ok": true, ...}`
//! or `{"id", "ok": false, "error": {...}}`. The backend produces a reply
//! *body* without the id ([`reply_ok`], [`reply_error`]) and the gateway,
//! which alone knows the id, splices it in with [`with_id`], so a reply is
//! never parsed on its way through the gateway.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Error codes of PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthenticated,
    Forbidden,
    NotFound,
    NotMember,
    Muted,
    TooLarge,
    RateLimited,
    Locked,
    LockRequired,
    LockLost,
    VersionConflict,
    Unavailable,
    Internal,
    // HTTP-only codes of section 1.
    UsernameTaken,
    BadCredentials,
}

impl ErrorCode {
    /// The HTTP status that goes with the code on the HTTP API.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest => 400,
            ErrorCode::Unauthenticated | ErrorCode::BadCredentials => 401,
            ErrorCode::Forbidden | ErrorCode::NotMember | ErrorCode::Muted => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::UsernameTaken
            | ErrorCode::Locked
            | ErrorCode::LockRequired
            | ErrorCode::LockLost
            | ErrorCode::VersionConflict => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited => 429,
            ErrorCode::Unavailable => 503,
            ErrorCode::Internal => 500,
        }
    }
}

/// `{"code", "message", ...details}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// Extra fields some codes carry (for example `holder` with `locked`).
    #[serde(flatten)]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl ErrorBody {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            details: serde_json::Map::new(),
        }
    }
}

/// WebSocket close codes of PROTOCOL.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseCode;

impl CloseCode {
    pub const NORMAL: u16 = 1000;
    /// A WebSocket protocol error (an unmasked client frame, a fragmented
    /// control frame...): RFC 6455's 1002, docs/protocol.md section B.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text message that is not UTF-8: RFC 6455's 1007.
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY_VIOLATION: u16 = 1008;
    pub const TOO_LARGE: u16 = 1009;
    /// The server failed on this connection (RFC 6455's internal error).
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const NO_AUTH_IN_TIME: u16 = 4000;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const RATE_LIMITED_OR_SLOW: u16 = 4008;
}

/// One client request: its id and what it asks.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub op: Op,
}

/// The operations a client can ask for, with their arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op")]
pub enum Op {
    #[serde(rename = "auth")]
    Auth { token: String },
    #[serde(rename = "dm.open")]
    DmOpen { user_id: String },
    #[serde(rename = "group.create")]
    GroupCreate { name: String, members: Vec<String> },
    #[serde(rename = "group.get")]
    GroupGet {
        group_id: String,
        /// Members page: those whose `user_id` sorts after this one (the
        /// `members_next` of the previous page); absent for the first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members_after: Option<String>,
        /// Members page size; absent for the server's default (and most).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        members_limit: Option<u32>,
    },
    #[serde(rename = "conv.list")]
    ConvList {},
    /// A user by username, to open a direct conv with them.
    #[serde(rename = "user.lookup")]
    UserLookup { username: String },
    /// Usernames and display names of users by id (unknown ids are left out).
    #[serde(rename = "users.get")]
    UsersGet { user_ids: Vec<String> },
    #[serde(rename = "send")]
    Send {
        conv: String,
        client_msg_id: String,
        body: String,
    },
    #[serde(rename = "sync")]
    Sync {
        convs: BTreeMap<String, u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "history")]
    History {
        conv: String,
        /// Messages with a smaller seq; absent means the newest.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before_seq: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    #[serde(rename = "read")]
    Read { conv: String, seq: u64 },
    #[serde(rename = "typing")]
    Typing { conv: String },
    /// Mutes (or unmutes) offline push notifications of one conv for the
    /// caller. Live delivery is not affected.
    #[serde(rename = "conv.mute")]
    ConvMute { conv: String, muted: bool },
    #[serde(rename = "presence.query")]
    PresenceQuery { user_ids: Vec<String> },
    #[serde(rename = "presence.watch")]
    PresenceWatch { user_ids: Vec<String> },
    #[serde(rename = "lock.acquire")]
    LockAcquire { resource: String },
    #[serde(rename = "lock.renew")]
    LockRenew { resource: String, token: String },
    #[serde(rename = "lock.release")]
    LockRelease { resource: String, token: String },
    #[serde(rename = "lock.watch")]
    LockWatch { resource: String },
    #[serde(rename = "group.update")]
    GroupUpdate {
        group_id: String,
        lock_token: String,
        patch: GroupPatch,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<u64>,
    },
    #[serde(rename = "group.members.add")]
    GroupMembersAdd {
        group_id: String,
        lock_token: String,
        user_ids: Vec<String>,
    },
    #[serde(rename = "group.members.remove")]
    GroupMembersRemove {
        group_id: String,
        lock_token: String,
        user_ids: Vec<String>,
    },
    #[serde(rename = "group.members.set_role")]
    GroupMembersSetRole {
        group_id: String,
        lock_token: String,
        user_id: String,
        role: Role,
    },
    #[serde(rename = "group.members.mute")]
    GroupMembersMute {
        group_id: String,
        lock_token: String,
        user_id: String,
        muted: bool,
    },
    /// The owner hands ownership to another member and becomes an admin.
    #[serde(rename = "group.transfer")]
    GroupTransfer {
        group_id: String,
        lock_token: String,
        user_id: String,
    },
    /// A member leaves a group (the owner hands it on first).
    #[serde(rename = "group.leave")]
    GroupLeave { group_id: String },
    /// The asking user's pending invitations to groups.
    #[serde(rename = "group.invitations")]
    GroupInvitations {},
    /// Accepts an invitation: the asking user becomes a member.
    #[serde(rename = "group.join")]
    GroupJoin { group_id: String },
    /// Turns an invitation down.
    #[serde(rename = "group.decline")]
    GroupDecline { group_id: String },
    /// The asking user's settings.
    #[serde(rename = "settings.get")]
    SettingsGet {},
    /// Changes the asking user's settings; absent fields stay as they are.
    #[serde(rename = "settings.update")]
    SettingsUpdate {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        groups_from: Option<GroupsFrom>,
    },
    #[serde(rename = "ping")]
    Ping {},
}

impl Op {
    /// The op's name on the wire, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Auth { .. } => "auth",
            Op::DmOpen { .. } => "dm.open",
            Op::GroupCreate { .. } => "group.create",
            Op::GroupGet { .. } => "group.get",
            Op::ConvList {} => "conv.list",
            Op::UserLookup { .. } => "user.lookup",
            Op::UsersGet { .. } => "users.get",
            Op::Send { .. } => "send",
            Op::Sync { .. } => "sync",
            Op::History { .. } => "history",
            Op::Read { .. } => "read",
            Op::Typing { .. } => "typing",
            Op::ConvMute { .. } => "conv.mute",
            Op::PresenceQuery { .. } => "presence.query",
            Op::PresenceWatch { .. } => "presence.watch",
            Op::LockAcquire { .. } => "lock.acquire",
            Op::LockRenew { .. } => "lock.renew",
            Op::LockRelease { .. } => "lock.release",
            Op::LockWatch { .. } => "lock.watch",
            Op::GroupUpdate { .. } => "group.update",
            Op::GroupMembersAdd { .. } => "group.members.add",
            Op::GroupMembersRemove { .. } => "group.members.remove",
            Op::GroupMembersSetRole { .. } => "group.members.set_role",
            Op::GroupMembersMute { .. } => "group.members.mute",
            Op::GroupTransfer { .. } => "group.transfer",
            Op::GroupLeave { .. } => "group.leave",
            Op::GroupInvitations {} => "group.invitations",
            Op::GroupJoin { .. } => "group.join",
            Op::GroupDecline { .. } => "group.decline",
            Op::SettingsGet {} => "settings.get",
            Op::SettingsUpdate { .. } => "settings.update",
            Op::Ping {} => "ping",
        }
    }
}

/// A member's role in a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Admin,
    Member,
}

impl Role {
    /// The wire (and stored) name: `owner`, `admin` or `member`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }
}

/// Whom a user lets put them in a group directly; anyone else's
/// `group.create` or `group.members.add` sends them an invitation instead.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupsFrom {
    /// Everyone (the default, as PROTOCOL.md's `group.create` describes).
    #[default]
    Anyone,
    /// Users they share a direct conversation with.
    Known,
    /// Nobody: every group starts as an invitation.
    Nobody,
}

/// A user's settings (`settings.get`, `settings.update`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub groups_from: GroupsFrom,
}

/// An invitation to a group (the `invitation` event and
/// `group.invitations`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invitation {
    pub group_id: String,
    /// The group's name when the invitation was made.
    pub name: String,
    /// Who invited.
    pub inviter: String,
    /// When, in ms since the epoch.
    pub at: u64,
}

/// Result of `group.invitations`, newest first.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InvitationsResult {
    pub invitations: Vec<Invitation>,
}

/// Result of `group.join`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupJoinResult {
    pub group_id: String,
    pub conv: String,
    pub version: u64,
}

/// Result of `group.members.add`: the new version, and the users who were
/// invited rather than added (their [`GroupsFrom`] setting asks for it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MembersAddResult {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited: Vec<String>,
}

/// The fields `group.update` may change; absent ones stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub announcement: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_policy: Option<String>,
}

/// A frame that is not a valid request. `id` is the request's id when the
/// frame had a readable one, so the client can match the error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("bad request: {message}")]
pub struct RequestError {
    pub id: Option<u64>,
    pub message: String,
}

/// Decodes one request frame.
pub fn decode_request(frame: &[u8]) -> Result<Request, RequestError> {
    #[derive(Deserialize)]
    struct Head {
        id: Option<u64>,
    }
    let head: Head = serde_json::from_slice(frame).map_err(|e| RequestError {
        id: None,
        message: format!("not a request object: {e}"),
    })?;
    let Some(id) = head.id else {
        return Err(RequestError {
            id: None,
            message: "missing \"id\"".into(),
        });
    };
    let op: Op = serde_json::from_slice(frame).map_err(|e| RequestError {
        id: Some(id),
        message: e.to_string(),
    })?;
    Ok(Request { id, op })
}

/// Encodes a request frame (the client side of [`decode_request`]).
pub fn encode_request(id: u64, op: &Op) -> Vec<u8> {
    with_id(Some(id), &to_json(op))
}

/// `{"ok": true, ...result}` without an id. `result` must serialize to a
/// JSON object (use `()` or [`Empty`] for none).
pub fn reply_ok<T: Serialize>(result: &T) -> Vec<u8> {
    let fields = to_json(result);
    let mut out = Vec::with_capacity(fields.len() + 10);
    out.extend_from_slice(b"{\"ok\":true");
    append_fields(&mut out, &fields);
    out
}

/// `{"ok": false, "error": {...}}` without an id.
pub fn reply_error(error: &ErrorBody) -> Vec<u8> {
    #[derive(Serialize)]
    struct Failed<'a> {
        ok: bool,
        error: &'a ErrorBody,
    }
    to_json(&Failed { ok: false, error })
}

/// Puts `"id": id` (or `null`) first into a reply body made by
/// [`reply_ok`] or [`reply_error`].
pub fn with_id(id: Option<u64>, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 24);
    out.extend_from_slice(b"{\"id\":");
    match id {
        Some(id) => out.extend_from_slice(id.to_string().as_bytes()),
        None => out.extend_from_slice(b"null"),
    }
    append_fields(&mut out, body);
    out
}

/// A complete error reply frame.
pub fn error_frame(id: Option<u64>, error: &ErrorBody) -> Vec<u8> {
    with_id(id, &reply_error(error))
}

/// An empty result: the reply is just `{"id", "ok": true}`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Empty {}

/// Appends the fields of the JSON object `object` (with its leading `,`)
/// and closes the object being built in `out`.
fn append_fields(out: &mut Vec<u8>, object: &[u8]) {
    debug_assert!(object.first() == Some(&b'{') && object.last() == Some(&b'}'));
    let inner = &object[1..object.len() - 1];
    if !inner.is_empty() {
        out.push(b',');
        out.extend_from_slice(inner);
    }
    out.push(b'}');
}

fn to_json<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("protocol types always serialize")
}

/// Result of `auth`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuthResult {
    pub user_id: String,
    pub session_id: String,
    pub gateway_id: String,
    pub heartbeat_s: u64,
}

/// Result of `dm.open`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DmOpenResult {
    pub conv: String,
}

/// Result of `group.create`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupCreateResult {
    pub group_id: String,
    pub conv: String,
    /// Members named who were invited rather than added.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited: Vec<String>,
}

/// Result of `send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    pub conv: String,
    pub seq: u64,
    pub msg_id: String,
    pub ts: u64,
}

/// Result of `sync`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncResult {
    /// Oldest first, conv by conv.
    pub messages: Vec<Message>,
    pub has_more: BTreeMap<String, bool>,
}

/// A stored message: the fields of the `msg` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub conv: String,
    pub seq: u64,
    pub msg_id: String,
    pub from: String,
    pub ts: u64,
    pub body: String,
    pub client_msg_id: String,
}

/// Result of `group.get`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupGetResult {
    pub group: GroupInfo,
    /// Sorted by `user_id`; one page of them in a large group.
    pub members: Vec<MemberInfo>,
    /// Present when more members follow: pass it as `members_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members_next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    pub name: String,
    pub announcement: String,
    pub join_policy: String,
    pub owner: String,
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub user_id: String,
    pub role: Role,
    pub muted: bool,
}

/// Result of `conv.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvListResult {
    pub convs: Vec<ConvSummary>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConvSummary {
    pub conv: String,
    /// `dm` or `group`.
    pub kind: String,
    pub last_seq: u64,
    pub read_seq: u64,
    /// The group of a `group` conv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The other user of a `dm` conv.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

/// A user as others see it: the result of `user.lookup`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserInfo {
    pub user_id: String,
    pub username: String,
    pub display_name: String,
}

/// Result of `users.get`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsersResult {
    pub users: Vec<UserInfo>,
}

/// Result of `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryResult {
    /// Newest first.
    pub messages: Vec<Message>,
    /// Older messages remain: ask again with `before_seq` set to the
    /// oldest seq of this page.
    #[serde(default)]
    pub has_more: bool,
}

/// Result of `presence.query`, and the fields of the `presence` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    pub user_id: String,
    pub online: bool,
    /// Milliseconds since the epoch; 0 if never seen.
    pub last_seen: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceQueryResult {
    pub presence: Vec<Presence>,
}

/// Who holds a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    pub user_id: String,
    pub display_name: String,
    pub session_id: String,
    /// When the holder took it, milliseconds since the epoch.
    pub since: u64,
}

/// Result of `lock.acquire`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockAcquired {
    pub token: String,
    pub ttl_ms: u64,
}

/// Result of `lock.renew`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockRenewed {
    pub ttl_ms: u64,
}

/// Result of `lock.watch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LockWatchResult {
    pub holder: Option<LockHolder>,
}

/// Result of the group administration ops.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionResult {
    pub version: u64,
}

/// Server-to-client events (no `id`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "ev")]
pub enum Event {
    #[serde(rename = "msg")]
    Msg(Message),
    #[serde(rename = "read")]
    Read {
        conv: String,
        user_id: String,
        seq: u64,
    },
    #[serde(rename = "typing")]
    Typing { conv: String, user_id: String },
    #[serde(rename = "presence")]
    Presence(Presence),
    #[serde(rename = "lock")]
    Lock {
        resource: String,
        holder: Option<LockHolder>,
    },
    #[serde(rename = "group")]
    Group {
        group_id: String,
        version: u64,
        /// What changed, e.g. `{"kind": "members_removed", "user_ids": [...]}`.
        change: serde_json::Value,
    },
    /// The user was invited to a group (`group.join` accepts).
    #[serde(rename = "invitation")]
    Invitation(Invitation),
}

/// Encodes an event frame.
pub fn encode_event(event: &Event) -> Vec<u8> {
    to_json(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_send() {
        let req = decode_request(
            br#"{"id":7,"op":"send","conv":"g:1","client_msg_id":"c1","body":"hi"}"#,
        )
        .unwrap();
        assert_eq!(req.id, 7);
        assert_eq!(
            req.op,
            Op::Send {
                conv: "g:1".into(),
                client_msg_id: "c1".into(),
                body: "hi".into()
            }
        );
    }

    #[test]
    fn decodes_ping_with_extra_fields() {
        let req = decode_request(br#"{"op":"ping","id":1,"extra":true}"#).unwrap();
        assert_eq!(req.op, Op::Ping {});
    }

    #[test]
    fn malformed_frames_keep_the_id_when_readable() {
        let err = decode_request(b"not json").unwrap_err();
        assert_eq!(err.id, None);
        let err = decode_request(br#"{"op":"ping"}"#).unwrap_err();
        assert_eq!(err.id, None);
        let err = decode_request(br#"{"id":3,"op":"nope"}"#).unwrap_err();
        assert_eq!(err.id, Some(3));
        let err = decode_request(br#"{"id":4,"op":"send","conv":"x"}"#).unwrap_err();
        assert_eq!(err.id, Some(4));
        let err = decode_request(br#"{"id":"5","op":"ping"}"#).unwrap_err();
        assert_eq!(err.id, None);
    }

    #[test]
    fn replies_carry_the_id_first() {
        let body = reply_ok(&DmOpenResult {
            conv: "dm:a:b".into(),
        });
        assert_eq!(
            with_id(Some(9), &body),
            br#"{"id":9,"ok":true,"conv":"dm:a:b"}"#
        );
        assert_eq!(
            with_id(Some(1), &reply_ok(&Empty {})),
            br#"{"id":1,"ok":true}"#
        );
        let err = error_frame(None, &ErrorBody::new(ErrorCode::NotMember, "no"));
        assert_eq!(
            err,
            br#"{"id":null,"ok":false,"error":{"code":"not_member","message":"no"}}"#
        );
    }

    #[test]
    fn every_op_round_trips() {
        let ops = [
            Op::GroupGet {
                group_id: "g".into(),
                members_after: None,
                members_limit: None,
            },
            Op::GroupGet {
                group_id: "g".into(),
                members_after: Some("u".into()),
                members_limit: Some(10),
            },
            Op::ConvList {},
            Op::History {
                conv: "c".into(),
                before_seq: Some(9),
                limit: None,
            },
            Op::Read {
                conv: "c".into(),
                seq: 3,
            },
            Op::Typing { conv: "c".into() },
            Op::ConvMute {
                conv: "c".into(),
                muted: true,
            },
            Op::PresenceQuery {
                user_ids: vec!["u".into()],
            },
            Op::PresenceWatch { user_ids: vec![] },
            Op::LockAcquire {
                resource: "group:g".into(),
            },
            Op::LockRenew {
                resource: "group:g".into(),
                token: "t".into(),
            },
            Op::LockRelease {
                resource: "group:g".into(),
                token: "t".into(),
            },
            Op::LockWatch {
                resource: "group:g".into(),
            },
            Op::GroupUpdate {
                group_id: "g".into(),
                lock_token: "t".into(),
                patch: GroupPatch {
                    name: Some("n".into()),
                    ..GroupPatch::default()
                },
                expected_version: Some(2),
            },
            Op::GroupMembersAdd {
                group_id: "g".into(),
                lock_token: "t".into(),
                user_ids: vec!["u".into()],
            },
            Op::GroupMembersRemove {
                group_id: "g".into(),
                lock_token: "t".into(),
                user_ids: vec!["u".into()],
            },
            Op::GroupMembersSetRole {
                group_id: "g".into(),
                lock_token: "t".into(),
                user_id: "u".into(),
                role: Role::Admin,
            },
            Op::GroupMembersMute {
                group_id: "g".into(),
                lock_token: "t".into(),
                user_id: "u".into(),
                muted: true,
            },
            Op::GroupTransfer {
                group_id: "g".into(),
                lock_token: "t".into(),
                user_id: "u".into(),
            },
            Op::GroupLeave {
                group_id: "g".into(),
            },
            Op::GroupInvitations {},
            Op::GroupJoin {
                group_id: "g".into(),
            },
            Op::GroupDecline {
                group_id: "g".into(),
            },
            Op::SettingsGet {},
            Op::SettingsUpdate {
                groups_from: Some(GroupsFrom::Known),
            },
            Op::SettingsUpdate { groups_from: None },
            Op::UserLookup {
                username: "alice".into(),
            },
            Op::UsersGet {
                user_ids: vec!["u".into()],
            },
        ];
        for op in ops {
            let frame = encode_request(1, &op);
            let text = String::from_utf8(frame.clone()).unwrap();
            assert!(
                text.contains(&format!("\"op\":\"{}\"", op.name())),
                "{text}"
            );
            assert_eq!(decode_request(&frame).unwrap().op, op);
        }
    }

    /// Every op's name on the wire, in the order of [`Op`]'s variants.
    const WIRE_NAMES: [&str; 32] = [
        "auth",
        "dm.open",
        "group.create",
        "group.get",
        "conv.list",
        "user.lookup",
        "users.get",
        "send",
        "sync",
        "history",
        "read",
        "typing",
        "conv.mute",
        "presence.query",
        "presence.watch",
        "lock.acquire",
        "lock.renew",
        "lock.release",
        "lock.watch",
        "group.update",
        "group.members.add",
        "group.members.remove",
        "group.members.set_role",
        "group.members.mute",
        "group.transfer",
        "group.leave",
        "group.invitations",
        "group.join",
        "group.decline",
        "settings.get",
        "settings.update",
        "ping",
    ];

    /// The variant's place in [`WIRE_NAMES`]. No wildcard arm: a new op
    /// does not compile until it is listed here, and then fails
    /// [`every_op_wire_name_round_trips`] until it has a name and an
    /// example.
    fn ordinal(op: &Op) -> usize {
        match op {
            Op::Auth { .. } => 0,
            Op::DmOpen { .. } => 1,
            Op::GroupCreate { .. } => 2,
            Op::GroupGet { .. } => 3,
            Op::ConvList {} => 4,
            Op::UserLookup { .. } => 5,
            Op::UsersGet { .. } => 6,
            Op::Send { .. } => 7,
            Op::Sync { .. } => 8,
            Op::History { .. } => 9,
            Op::Read { .. } => 10,
            Op::Typing { .. } => 11,
            Op::ConvMute { .. } => 12,
            Op::PresenceQuery { .. } => 13,
            Op::PresenceWatch { .. } => 14,
            Op::LockAcquire { .. } => 15,
            Op::LockRenew { .. } => 16,
            Op::LockRelease { .. } => 17,
            Op::LockWatch { .. } => 18,
            Op::GroupUpdate { .. } => 19,
            Op::GroupMembersAdd { .. } => 20,
            Op::GroupMembersRemove { .. } => 21,
            Op::GroupMembersSetRole { .. } => 22,
            Op::GroupMembersMute { .. } => 23,
            Op::GroupTransfer { .. } => 24,
            Op::GroupLeave { .. } => 25,
            Op::GroupInvitations {} => 26,
            Op::GroupJoin { .. } => 27,
            Op::GroupDecline { .. } => 28,
            Op::SettingsGet {} => 29,
            Op::SettingsUpdate { .. } => 30,
            Op::Ping {} => 31,
        }
    }

    /// One op of each variant, in [`WIRE_NAMES`] order.
    fn one_of_each() -> Vec<Op> {
        let s = |v: &str| v.to_string();
        vec![
            Op::Auth { token: s("t") },
            Op::DmOpen { user_id: s("u") },
            Op::GroupCreate {
                name: s("n"),
                members: vec![s("u")],
            },
            Op::GroupGet {
                group_id: s("g"),
                members_after: None,
                members_limit: None,
            },
            Op::ConvList {},
            Op::UserLookup { username: s("a") },
            Op::UsersGet {
                user_ids: vec![s("u")],
            },
            Op::Send {
                conv: s("c"),
                client_msg_id: s("m"),
                body: s("b"),
            },
            Op::Sync {
                convs: [(s("c"), 1)].into(),
                limit: None,
            },
            Op::History {
                conv: s("c"),
                before_seq: None,
                limit: Some(5),
            },
            Op::Read {
                conv: s("c"),
                seq: 1,
            },
            Op::Typing { conv: s("c") },
            Op::ConvMute {
                conv: s("c"),
                muted: false,
            },
            Op::PresenceQuery {
                user_ids: vec![s("u")],
            },
            Op::PresenceWatch {
                user_ids: vec![s("u")],
            },
            Op::LockAcquire {
                resource: s("group:g"),
            },
            Op::LockRenew {
                resource: s("group:g"),
                token: s("t"),
            },
            Op::LockRelease {
                resource: s("group:g"),
                token: s("t"),
            },
            Op::LockWatch {
                resource: s("group:g"),
            },
            Op::GroupUpdate {
                group_id: s("g"),
                lock_token: s("t"),
                patch: GroupPatch::default(),
                expected_version: None,
            },
            Op::GroupMembersAdd {
                group_id: s("g"),
                lock_token: s("t"),
                user_ids: vec![s("u")],
            },
            Op::GroupMembersRemove {
                group_id: s("g"),
                lock_token: s("t"),
                user_ids: vec![s("u")],
            },
            Op::GroupMembersSetRole {
                group_id: s("g"),
                lock_token: s("t"),
                user_id: s("u"),
                role: Role::Member,
            },
            Op::GroupMembersMute {
                group_id: s("g"),
                lock_token: s("t"),
                user_id: s("u"),
                muted: false,
            },
            Op::GroupTransfer {
                group_id: s("g"),
                lock_token: s("t"),
                user_id: s("u"),
            },
            Op::GroupLeave { group_id: s("g") },
            Op::GroupInvitations {},
            Op::GroupJoin { group_id: s("g") },
            Op::GroupDecline { group_id: s("g") },
            Op::SettingsGet {},
            Op::SettingsUpdate { groups_from: None },
            Op::Ping {},
        ]
    }

    #[test]
    fn every_op_wire_name_round_trips() {
        let ops = one_of_each();
        let places: Vec<usize> = ops.iter().map(ordinal).collect();
        assert_eq!(
            places,
            (0..WIRE_NAMES.len()).collect::<Vec<_>>(),
            "one example of every op, in order"
        );
        let distinct: std::collections::BTreeSet<&str> = WIRE_NAMES.into_iter().collect();
        assert_eq!(distinct.len(), WIRE_NAMES.len(), "wire names are distinct");
        for (op, name) in ops.iter().zip(WIRE_NAMES) {
            assert_eq!(op.name(), name, "Op::name of {op:?}");
            // Serialized, the frame names the op as documented...
            let frame = encode_request(3, op);
            let json: serde_json::Value = serde_json::from_slice(&frame).unwrap();
            assert_eq!(json["op"], name, "{json}");
            // ...and that name parses back to the same op.
            assert_eq!(
                decode_request(&frame).unwrap(),
                Request {
                    id: 3,
                    op: op.clone()
                }
            );
        }
    }

    #[test]
    fn every_documented_op_exists_and_every_op_is_documented() {
        // The first column of every `| op | args | result |` table.
        let doc = include_str!("../../docs/protocol.md");
        let mut documented = std::collections::BTreeSet::new();
        let mut in_op_table = false;
        for line in doc.lines() {
            if line.starts_with("| op |") {
                in_op_table = true;
            } else if !line.starts_with('|') {
                in_op_table = false;
            } else if in_op_table {
                if let Some(name) = line
                    .strip_prefix("| `")
                    .and_then(|rest| rest.split_once('`'))
                    .map(|(name, _)| name)
                {
                    documented.insert(name);
                }
            }
        }
        let known: std::collections::BTreeSet<&str> = WIRE_NAMES.into_iter().collect();
        assert_eq!(
            documented, known,
            "docs/protocol.md's op tables and Op differ"
        );
        // Unknown names are refused with the request's id.
        let err = decode_request(br#"{"id":8,"op":"lock.steal","resource":"r"}"#).unwrap_err();
        assert_eq!(err.id, Some(8));
    }

    #[test]
    fn wire_names_of_roles_and_events() {
        let set_role = br#"{"id":1,"op":"group.members.set_role","group_id":"g","lock_token":"t","user_id":"u","role":"admin"}"#;
        assert!(matches!(
            decode_request(set_role).unwrap().op,
            Op::GroupMembersSetRole {
                role: Role::Admin,
                ..
            }
        ));
        let ev = Event::Lock {
            resource: "group:g".into(),
            holder: None,
        };
        assert_eq!(
            encode_event(&ev),
            br#"{"ev":"lock","resource":"group:g","holder":null}"#
        );
        let ev = Event::Presence(Presence {
            user_id: "u".into(),
            online: true,
            last_seen: 5,
        });
        assert_eq!(
            encode_event(&ev),
            br#"{"ev":"presence","user_id":"u","online":true,"last_seen":5}"#
        );
    }

    #[test]
    fn request_round_trip() {
        let op = Op::Sync {
            convs: [("dm:a:b".to_string(), 3)].into(),
            limit: Some(10),
        };
        let frame = encode_request(5, &op);
        assert_eq!(decode_request(&frame).unwrap(), Request { id: 5, op });
    }

    #[test]
    fn events_are_tagged() {
        let ev = Event::Msg(Message {
            conv: "g:1".into(),
            seq: 1,
            msg_id: "m".into(),
            from: "u".into(),
            ts: 2,
            body: "b".into(),
            client_msg_id: "c".into(),
        });
        let json = encode_event(&ev);
        assert!(json.starts_with(br#"{"ev":"msg","conv":"g:1""#));
        assert_eq!(serde_json::from_slice::<Event>(&json).unwrap(), ev);
    }
}
