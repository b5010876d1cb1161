//! Dispatch by op: each request goes to its feature's handler, and its
//! result becomes a reply body plus the topics the asking connection joins.

use oceanchat_protocol::client::{
    reply_error, reply_ok, Empty, ErrorBody, ErrorCode, LockWatchResult, Op,
};
use oceanchat_protocol::internal::{topics, RpcRequest, SessionInfo};

use super::Caller;
use crate::auth::sessions;
use crate::error::ServiceError;
use crate::messages::Sends;
use crate::state::AppState;
use crate::{convs, delivery, groups, locks, messages, presence, users};

/// A reply body, and the topics the asking connection joins or leaves.
#[derive(Default)]
pub struct Done {
    pub body: Vec<u8>,
    pub subscribe: Vec<String>,
    pub unsubscribe: Vec<String>,
}

impl Done {
    pub fn reply<T: serde::Serialize>(result: &T) -> Done {
        Done::body(reply_ok(result))
    }

    pub fn body(body: Vec<u8>) -> Done {
        Done {
            body,
            ..Done::default()
        }
    }
}

/// Answers one request: `auth` here, every other op by its feature, for
/// an authenticated [`Caller`] only.
pub async fn dispatch(
    state: &AppState,
    sends: &Sends,
    request: RpcRequest,
) -> Result<Done, ServiceError> {
    if let Op::Auth { token } = &request.op {
        return auth(state, token).await;
    }
    let caller = &Caller::of(&request.ctx).ok_or_else(ServiceError::unauthenticated)?;
    let me = caller.user_id.as_str();
    match &request.op {
        Op::Auth { .. } => unreachable!("answered above"),
        Op::Ping {} => Ok(Done::reply(&Empty {})),
        Op::DmOpen { user_id } => Ok(Done::reply(&convs::dm_open(state, me, user_id).await?)),
        Op::GroupCreate { name, members } => {
            let created = groups::group_create(state, me, name, members).await?;
            Ok(Done {
                subscribe: vec![oceanchat_protocol::internal::topics::group(
                    &created.group_id,
                )],
                ..Done::reply(&created)
            })
        }
        Op::Send {
            conv,
            client_msg_id,
            body,
        } => {
            // Stored, then delivered in seq order by the conv's writer.
            let sent = messages::send(state, sends, me, conv, client_msg_id, body).await?;
            Ok(Done::reply(&sent.result()))
        }
        Op::Sync { convs, limit } => Ok(Done::reply(
            &messages::sync(state, me, convs, *limit).await?,
        )),
        Op::LockAcquire { resource } => {
            match locks::acquire(state, caller, resource).await? {
                locks::Acquire::Granted(acquired) => Ok(Done::reply(&acquired)),
                // `locked` names the holder: PROTOCOL.md's `error.holder`.
                locks::Acquire::Locked(holder) => {
                    let mut error =
                        ErrorBody::new(ErrorCode::Locked, format!("{resource} is locked"));
                    error
                        .details
                        .insert("holder".into(), serde_json::json!(holder));
                    Ok(Done::body(reply_error(&error)))
                }
            }
        }
        Op::LockRenew { resource, token } => Ok(Done::reply(
            &locks::renew(state, caller, resource, token).await?,
        )),
        Op::LockRelease { resource, token } => {
            locks::release(state, caller, resource, token).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::LockWatch { resource } => {
            let holder = locks::watch(state, caller, resource).await?;
            Ok(Done {
                subscribe: vec![topics::lock(resource)],
                ..Done::reply(&LockWatchResult { holder })
            })
        }
        Op::GroupUpdate {
            group_id,
            lock_token,
            patch,
            expected_version,
        } => Ok(Done::reply(
            &groups::update(
                state,
                caller,
                group_id,
                lock_token,
                patch,
                *expected_version,
            )
            .await?,
        )),
        Op::GroupMembersAdd {
            group_id,
            lock_token,
            user_ids,
        } => Ok(Done::reply(
            &groups::members_add(state, caller, group_id, lock_token, user_ids).await?,
        )),
        Op::GroupMembersRemove {
            group_id,
            lock_token,
            user_ids,
        } => Ok(Done::reply(
            &groups::members_remove(state, caller, group_id, lock_token, user_ids).await?,
        )),
        Op::GroupMembersSetRole {
            group_id,
            lock_token,
            user_id,
            role,
        } => Ok(Done::reply(
            &groups::members_set_role(state, caller, group_id, lock_token, user_id, *role).await?,
        )),
        Op::GroupMembersMute {
            group_id,
            lock_token,
            user_id,
            muted,
        } => Ok(Done::reply(
            &groups::members_mute(state, caller, group_id, lock_token, user_id, *muted).await?,
        )),
        Op::UserLookup { username } => Ok(Done::reply(&users::lookup(state, username).await?)),
        Op::UsersGet { user_ids } => Ok(Done::reply(&users::get(state, user_ids).await?)),
        Op::GroupLeave { group_id } => Ok(Done::reply(&groups::leave(state, me, group_id).await?)),
        Op::GroupInvitations {} => Ok(Done::reply(&groups::invitations::list(state, me).await?)),
        Op::GroupJoin { group_id } => {
            let joined = groups::invitations::join(state, me, group_id).await?;
            Ok(Done {
                subscribe: vec![topics::group(group_id)],
                ..Done::reply(&joined)
            })
        }
        Op::GroupDecline { group_id } => {
            groups::invitations::decline(state, me, group_id).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::SettingsGet {} => Ok(Done::reply(
            &groups::invitations::settings(state, me).await?,
        )),
        Op::SettingsUpdate { groups_from } => Ok(Done::reply(
            &groups::invitations::update_settings(state, me, *groups_from).await?,
        )),
        Op::GroupTransfer {
            group_id,
            lock_token,
            user_id,
        } => Ok(Done::reply(
            &groups::transfer(state, caller, group_id, lock_token, user_id).await?,
        )),
        Op::GroupGet {
            group_id,
            members_after,
            members_limit,
        } => Ok(Done::reply(
            &groups::group_get(
                state,
                me,
                group_id,
                members_after.as_deref(),
                *members_limit,
            )
            .await?,
        )),
        Op::ConvList {} => Ok(Done::reply(&convs::conv_list(state, me).await?)),
        Op::History {
            conv,
            before_seq,
            limit,
        } => Ok(Done::reply(
            &messages::history(state, me, conv, *before_seq, *limit).await?,
        )),
        Op::Read { conv, seq } => {
            convs::read(state, caller, conv, *seq).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::Typing { conv } => {
            convs::typing(state, caller, conv).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::ConvMute { conv, muted } => {
            convs::mute_push(state, me, conv, *muted).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::PresenceQuery { user_ids } => Ok(Done::reply(&presence::query(state, user_ids).await?)),
        Op::PresenceWatch { user_ids } => Ok(Done {
            subscribe: presence::watch_topics(user_ids)?,
            ..Done::reply(&Empty {})
        }),
    }
}

/// `auth`: the session behind `token`, and the group topics its
/// connection follows.
async fn auth(state: &AppState, token: &str) -> Result<Done, ServiceError> {
    let mut redis = state.redis.clone();
    let session = sessions::lookup(&mut redis, token)
        .await?
        .ok_or_else(ServiceError::unauthenticated)?;
    // Routes are written by the gateway after this reply, so auths
    // at the same moment may pass the cap by their number.
    let cap = state.config.max_connections_per_user;
    if cap > 0 && delivery::live_connections(state, &session.user_id, cap).await? >= cap {
        return Err(ServiceError::refused(
            ErrorCode::RateLimited,
            format!("at most {cap} connections per user"),
        ));
    }
    // The connection follows its user's groups before the reply
    // reaches the client, so no group message after it is missed.
    let topics = groups::group_topics(state, &session.user_id).await?;
    Ok(Done::reply(&SessionInfo {
        user_id: session.user_id,
        session_id: session.session_id,
        topics,
        expires_at: session.expires_at,
    }))
}
