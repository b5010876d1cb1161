//! Conversations: opening a direct one, listing a user's convs, `read`,
//! `typing` and `conv.mute`, and the membership checks every conv
//! operation starts with ([`membership`]), answered from a member cache
//! that [`member_changes`] keeps right across backends. Groups, which are convs too,
//! have their own feature (`crate::groups`).
//!
//! Membership is one small document per member (docs/internals.md), so a
//! join or leave of a 100,000-member group is one write.

pub mod member_changes;
mod membership;

use futures::{StreamExt as _, TryStreamExt as _};

use oceanchat_protocol::client::{ConvListResult, ConvSummary, DmOpenResult, Event};
use oceanchat_protocol::conv::{conv_kind, dm_conv, dm_users_of, group_id_of};
use oceanchat_protocol::ErrorCode;

pub use membership::{require_member, require_member_of_all, require_speaker, require_users_exist};

use crate::delivery;
use crate::error::ServiceError;
use crate::rpc::Caller;
use crate::state::AppState;
use crate::store::MemberFlag;

/// How many convs of one `conv.list` have their last seq read at once.
const CONV_LIST_PARALLELISM: usize = 16;

/// The direct conv between `user_id` and `other`; both become members.
pub async fn dm_open(
    state: &AppState,
    user_id: &str,
    other: &str,
) -> Result<DmOpenResult, ServiceError> {
    if other == user_id {
        return Err(ServiceError::bad_request("cannot open a dm with yourself"));
    }
    if !state.store.user_exists(other).await? {
        return Err(ServiceError::refused(
            ErrorCode::NotFound,
            format!("user {other} not found"),
        ));
    }
    let conv = dm_conv(user_id, other);
    for member in [user_id, other] {
        state.store.add_member_if_absent(&conv, member).await?;
    }
    member_changes::announce(state, &conv).await;
    Ok(DmOpenResult { conv })
}

/// `conv.list`: every conv of `user_id` with its last seq and the user's
/// read seq.
pub async fn conv_list(state: &AppState, user_id: &str) -> Result<ConvListResult, ServiceError> {
    let memberships = state.store.memberships_of(user_id).await?;
    let convs = futures::stream::iter(memberships.into_iter().map(|m| async move {
        let last_seq = state.store.max_seq(&m.conv).await?;
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

/// `read`: raises the caller's read seq in `conv` to `seq` (never lowers
/// it) and, if it rose, tells the members' other connections.
pub async fn read(
    state: &AppState,
    caller: &Caller,
    conv: &str,
    seq: u64,
) -> Result<(), ServiceError> {
    let user_id = caller.user_id.as_str();
    require_member(state, user_id, conv).await?;
    let last = state.store.max_seq(conv).await?;
    if seq > last {
        return Err(ServiceError::bad_request(format!(
            "seq {seq} is beyond the last message ({last}) of {conv}"
        )));
    }
    if state.store.raise_read_seq(conv, user_id, seq).await? {
        let event = Event::Read {
            conv: conv.to_string(),
            user_id: user_id.to_string(),
            seq,
        };
        delivery::deliver_conv_event(state, conv, Some(caller.conn()), &event).await?;
    }
    Ok(())
}

/// `typing`: tells the members' other connections; nothing is stored.
pub async fn typing(state: &AppState, caller: &Caller, conv: &str) -> Result<(), ServiceError> {
    // A muted member may not speak, so its typing would only be noise
    // fanned out to everyone.
    require_speaker(state, &caller.user_id, conv).await?;
    let event = Event::Typing {
        conv: conv.to_string(),
        user_id: caller.user_id.clone(),
    };
    delivery::deliver_conv_event(state, conv, Some(caller.conn()), &event).await
}

/// `conv.mute`: the caller's offline pushes of `conv` stop (`muted`) or
/// start again. Live delivery is not affected; the push worker reads it.
pub async fn mute_push(
    state: &AppState,
    user_id: &str,
    conv: &str,
    muted: bool,
) -> Result<(), ServiceError> {
    let found = state
        .store
        .set_member_flag(conv, user_id, MemberFlag::PushMuted, muted)
        .await?;
    if !found {
        return Err(membership::not_member(conv));
    }
    Ok(())
}
