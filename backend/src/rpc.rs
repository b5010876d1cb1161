//! The request service behind the gateways: `oc.rpc` in the queue group
//! `oc-backend`, one [`RpcRequest`] per NATS request.
//!
//! Each request runs in its own task, at most [`MAX_IN_FLIGHT`] at a time;
//! beyond that the subscription is read no faster than requests finish.
//! The reply is the client reply body without its id. New messages are
//! delivered by the conv's writer in seq order as soon as they are stored
//! (see [`crate::messages`]), so the `msg` event of a send may reach the
//! sending connection before or after the send's reply.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use tracing::Instrument as _;

use oceanchat_protocol::client::{
    reply_error, reply_ok, Empty, ErrorBody, ErrorCode, LockWatchResult, Op,
};
use oceanchat_protocol::internal::{headers as oc_headers, topics, RpcRequest, SessionInfo};

use crate::auth::sessions;
use crate::bounded::{self, InFlight, Stopped};
use crate::error::ServiceError;
use crate::presence;
use crate::state::AppState;
use crate::{convs, delivery, groups, invitations, locks, messages, users};

/// Requests handled at the same time by one instance.
pub const MAX_IN_FLIGHT: usize = 4096;

/// After shutdown starts, how long requests already received may take.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves requests from `subscriber` until `shutdown` completes, then
/// unsubscribes, finishes the requests already received and returns.
pub async fn serve(
    state: AppState,
    mut subscriber: async_nats::Subscriber,
    shutdown: impl Future<Output = ()>,
) {
    let in_flight = InFlight::new(MAX_IN_FLIGHT);
    let handler = |message| Some(handle(state.clone(), message));
    if bounded::serve(&mut subscriber, &in_flight, shutdown, handler).await == Stopped::Ended {
        tracing::warn!("request subscription ended");
        return;
    }

    // Drain: stop new requests, answer the ones already delivered to us.
    tracing::info!("request service draining");
    if let Err(e) = subscriber.drain().await {
        tracing::warn!(error = %e, "could not drain the request subscription");
    }
    let finish = async {
        while let Some(message) = subscriber.next().await {
            in_flight.spawn(handle(state.clone(), message)).await;
        }
        in_flight.finished().await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, finish).await.is_err() {
        tracing::warn!("requests still running at shutdown");
    }
    if let Err(e) = state.nats.flush().await {
        tracing::warn!(error = %e, "could not flush replies at shutdown");
    }
}

/// Answers one request.
async fn handle(state: AppState, message: async_nats::Message) {
    let Some(reply_to) = message.reply else {
        tracing::debug!("request without a reply subject ignored");
        return;
    };
    let request: RpcRequest = match serde_json::from_slice(&message.payload) {
        Ok(request) => request,
        Err(e) => {
            let error = ServiceError::bad_request(format!("undecodable request: {e}"));
            error.log("rpc");
            publish(&state, reply_to, reply_error(&error.body())).await;
            return;
        }
    };
    let span = tracing::debug_span!(
        "rpc",
        op = request.op.name(),
        gateway = %request.ctx.gateway_id,
        conn_id = request.ctx.conn_id,
        user_id = request.ctx.user_id.as_deref().unwrap_or(""),
    );
    async move {
        let op = request.op.name();
        let done = match dispatch(&state, request).await {
            Ok(done) => done,
            Err(error) => {
                error.log(op);
                Done::body(reply_error(&error.body()))
            }
        };
        reply(&state, reply_to, done).await;
    }
    .instrument(span)
    .await
}

async fn publish(state: &AppState, subject: async_nats::Subject, body: Vec<u8>) {
    send_reply(state, subject, None, body).await
}

/// Sends a reply, with the topic changes for the asking connection as
/// headers (docs/internals.md, "Topics").
async fn reply(state: &AppState, subject: async_nats::Subject, done: Done) {
    if done.subscribe.is_empty() && done.unsubscribe.is_empty() {
        return publish(state, subject, done.body).await;
    }
    let mut headers = async_nats::HeaderMap::new();
    for (name, topics) in [
        (oc_headers::SUBSCRIBE, &done.subscribe),
        (oc_headers::UNSUBSCRIBE, &done.unsubscribe),
    ] {
        if !topics.is_empty() {
            headers.insert(name, topics.join(" ").as_str());
        }
    }
    send_reply(state, subject, Some(headers), done.body).await
}

/// Publishes a reply. One too large for NATS is answered `internal`
/// instead, so the client learns of it now rather than by its timeout.
async fn send_reply(
    state: &AppState,
    subject: async_nats::Subject,
    headers: Option<async_nats::HeaderMap>,
    body: Vec<u8>,
) {
    let bytes = body.len();
    let (headers, body) = if bytes > state.nats.server_info().max_payload {
        tracing::error!(bytes, "reply too large for NATS");
        let error = reply_error(&ErrorBody::new(ErrorCode::Internal, "reply too large"));
        (None, error)
    } else {
        (headers, body)
    };
    let sent = delivery::publish(state, subject.to_string(), headers, Bytes::from(body)).await;
    if let Err(error) = sent {
        tracing::error!(%error, bytes, "could not publish a reply");
    }
}

/// A reply body, and the topics the asking connection joins or leaves.
#[derive(Default)]
struct Done {
    body: Vec<u8>,
    subscribe: Vec<String>,
    unsubscribe: Vec<String>,
}

impl Done {
    fn reply<T: serde::Serialize>(result: &T) -> Done {
        Done::body(reply_ok(result))
    }

    fn body(body: Vec<u8>) -> Done {
        Done {
            body,
            ..Done::default()
        }
    }
}

async fn dispatch(state: &AppState, request: RpcRequest) -> Result<Done, ServiceError> {
    // Every op but `auth` needs an authenticated connection.
    let user = request.ctx.user_id.as_deref();
    let user = || user.ok_or_else(ServiceError::unauthenticated);
    match &request.op {
        Op::Auth { token } => {
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
            let topics = convs::group_topics(state, &session.user_id).await?;
            Ok(Done::reply(&SessionInfo {
                user_id: session.user_id,
                session_id: session.session_id,
                topics,
                expires_at: session.expires_at,
            }))
        }
        Op::Ping {} => {
            user()?;
            Ok(Done::reply(&Empty {}))
        }
        Op::DmOpen { user_id } => Ok(Done::reply(&convs::dm_open(state, user()?, user_id).await?)),
        Op::GroupCreate { name, members } => {
            let created = convs::group_create(state, user()?, name, members).await?;
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
            let sent = messages::send(state, user()?, conv, client_msg_id, body).await?;
            Ok(Done::reply(&sent.result()))
        }
        Op::Sync { convs, limit } => Ok(Done::reply(
            &messages::sync(state, user()?, convs, *limit).await?,
        )),
        Op::LockAcquire { resource } => {
            user()?;
            match locks::acquire(state, &request.ctx, resource).await? {
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
            &locks::renew(state, &request.ctx, resource, token).await?,
        )),
        Op::LockRelease { resource, token } => {
            locks::release(state, &request.ctx, resource, token).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::LockWatch { resource } => {
            let holder = locks::watch(state, &request.ctx, resource).await?;
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
                &request.ctx,
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
            &groups::members_add(state, &request.ctx, group_id, lock_token, user_ids).await?,
        )),
        Op::GroupMembersRemove {
            group_id,
            lock_token,
            user_ids,
        } => Ok(Done::reply(
            &groups::members_remove(state, &request.ctx, group_id, lock_token, user_ids).await?,
        )),
        Op::GroupMembersSetRole {
            group_id,
            lock_token,
            user_id,
            role,
        } => Ok(Done::reply(
            &groups::members_set_role(state, &request.ctx, group_id, lock_token, user_id, *role)
                .await?,
        )),
        Op::GroupMembersMute {
            group_id,
            lock_token,
            user_id,
            muted,
        } => Ok(Done::reply(
            &groups::members_mute(state, &request.ctx, group_id, lock_token, user_id, *muted)
                .await?,
        )),
        Op::UserLookup { username } => {
            user()?;
            Ok(Done::reply(&users::lookup(state, username).await?))
        }
        Op::UsersGet { user_ids } => {
            user()?;
            Ok(Done::reply(&users::get(state, user_ids).await?))
        }
        Op::GroupLeave { group_id } => {
            Ok(Done::reply(&groups::leave(state, user()?, group_id).await?))
        }
        Op::GroupInvitations {} => Ok(Done::reply(&invitations::list(state, user()?).await?)),
        Op::GroupJoin { group_id } => {
            let joined = invitations::join(state, user()?, group_id).await?;
            Ok(Done {
                subscribe: vec![topics::group(group_id)],
                ..Done::reply(&joined)
            })
        }
        Op::GroupDecline { group_id } => {
            invitations::decline(state, user()?, group_id).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::SettingsGet {} => Ok(Done::reply(&invitations::settings(state, user()?).await?)),
        Op::SettingsUpdate { groups_from } => Ok(Done::reply(
            &invitations::update_settings(state, user()?, *groups_from).await?,
        )),
        Op::GroupTransfer {
            group_id,
            lock_token,
            user_id,
        } => Ok(Done::reply(
            &groups::transfer(state, &request.ctx, group_id, lock_token, user_id).await?,
        )),
        Op::GroupGet {
            group_id,
            members_after,
            members_limit,
        } => Ok(Done::reply(
            &convs::group_get(
                state,
                user()?,
                group_id,
                members_after.as_deref(),
                *members_limit,
            )
            .await?,
        )),
        Op::ConvList {} => Ok(Done::reply(&convs::conv_list(state, user()?).await?)),
        Op::History {
            conv,
            before_seq,
            limit,
        } => Ok(Done::reply(
            &messages::history(state, user()?, conv, *before_seq, *limit).await?,
        )),
        Op::Read { conv, seq } => {
            convs::read(state, &request.ctx, user()?, conv, *seq).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::Typing { conv } => {
            convs::typing(state, &request.ctx, user()?, conv).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::ConvMute { conv, muted } => {
            convs::mute_push(state, user()?, conv, *muted).await?;
            Ok(Done::reply(&Empty {}))
        }
        Op::PresenceQuery { user_ids } => {
            user()?;
            Ok(Done::reply(&presence::query(state, user_ids).await?))
        }
        Op::PresenceWatch { user_ids } => {
            user()?;
            Ok(Done {
                subscribe: presence::watch_topics(user_ids)?,
                ..Done::reply(&Empty {})
            })
        }
    }
}
